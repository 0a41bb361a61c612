"""Fuzzing the agent's DNS reading: hostile, truncated and pointer-loop messages, and
ring records around them, never raise and never hang (hypothesis, with a deadline)."""

from __future__ import annotations

import datetime
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlogger.enrich.dns import DnsEnricher
from netlogger.kernel import abi
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.dnsdecode import Answer, DnsDecoder, parse_answer
from tests.dnswire import dns_event, response
from tests.unit.test_decode import event

FUZZ = settings(
    max_examples=400,
    deadline=datetime.timedelta(milliseconds=500),  # a hang or a blow-up fails, not stalls
    suppress_health_check=[HealthCheck.too_slow],
)
VALID = response(
    "www.example.com",
    ("www.example.com.", 300, "CNAME", ["edge.example.net."]),
    ("edge.example.net.", 60, "A", ["198.18.1.1", "198.18.1.2"]),
)


def _decoder() -> Decoder:
    d = Decoder(lambda r: None, lambda p: "default")
    DnsDecoder(d)
    return d


def _check(wire: bytes) -> None:
    """The agent's whole DNS path: the ring record, dnspython, the cache, a labelled connect."""
    decoder, cache = _decoder(), DnsEnricher(cap_per_cgroup=8)
    for cut in (False, True):
        assert isinstance(parse_answer(wire, cut), Answer | str)
        rec = decoder.decode(dns_event(wire, msg_len=len(wire) + cut))
        assert rec is not None  # the fixed part is sound: the record is kept, whatever the message
        connect = Decoder(lambda r: None, lambda p: "p").decode(event(cgroup_id=42))
        assert connect is not None
        connect.dst_ip = (rec.answers or ["198.18.1.1"])[0]
        cache.enrich([rec, connect])


@FUZZ
@given(st.binary(max_size=abi.DNS_PAYLOAD_MAX))
def test_random_bytes(wire: bytes) -> None:
    _check(wire)


@FUZZ
@given(st.integers(0, len(VALID)))
def test_every_prefix_of_a_real_answer(n: int) -> None:
    _check(VALID[:n])


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8))
def test_bit_flips_of_a_real_answer(flips: list[tuple[int, int]]) -> None:
    wire = bytearray(VALID)
    for at, value in flips:
        wire[at] = value
    _check(bytes(wire))


@FUZZ
@given(
    st.integers(0, 0x3FFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=64),
)
def test_compression_pointers_anywhere(target: int, qd: int, an: int, tail: bytes) -> None:
    """A question name that is a pointer (to itself, forward, past the end) and hostile counts."""
    head = struct.pack("!HHHHHH", 1, 0x8180, qd, an, 0, 0)
    _check(head + struct.pack("!H", 0xC000 | target) + tail)


def test_pointer_loops_are_refused() -> None:
    head = struct.pack("!HHHHHH", 1, 0x8180, 1, 1, 0, 0)
    self_loop = head + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    pair = head + b"\x01a\xc0\x0e" + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    assert parse_answer(self_loop) == "BadPointer"
    assert parse_answer(pair) == "BadPointer"
    assert parse_answer(self_loop, cut=True) == "BadPointer"


@FUZZ
@given(
    st.binary(max_size=96),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 255),
    st.integers(0, 255),
    st.sampled_from([2, 10, 0, 77]),
)
def test_ring_records_with_hostile_fixed_parts(
    payload: bytes, size: int, payload_len: int, verdict: int, flags: int, family: int
) -> None:
    raw = dns_event(payload, size=size, payload_len=payload_len, verdict=verdict, flags=flags)
    raw = (
        raw[: abi.DnsEvent.family.offset]
        + struct.pack("=H", family)
        + raw[abi.DnsEvent.family.offset + 2 :]
    )
    decoder = _decoder()
    out = decoder.decode_all([raw, raw[: len(raw) // 2]])
    assert len(out) + sum(decoder.skipped.values()) == 2
