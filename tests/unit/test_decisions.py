"""A ring batch decoded once per group: the same records and the same JSON lines as
building every Record, whatever the batch holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs

from netlogger.enrich.dns import DnsEnricher
from netlogger.kernel import abi
from netlogger.pipeline.decisions import TEMPLATE_MIN, tally
from netlogger.pipeline.enrich import AttributionEnricher, ProcessEnricher
from netlogger.pipeline.record import DnsRecord, Record
from netlogger.sinks.otlp.encode import LogEncoder, spans_from_data
from netlogger.sinks.otlp.spool import spans_of
from tests.otlp.receiver import attributes
from tests.unit.ring_bytes import event, ring_batch

ENCODER = msgspec.json.Encoder()
LABELS = abi.Labels(agent=b"a\xc3\xa9", project=b"p%s", container_id=b"c" * 64)


def flood(count: int, **fields: object) -> list[bytes]:
    return [
        event(seq=s, ts_ns=5_000_000_000 + 7 * s, sock_cookie=s, **fields) for s in range(count)
    ]


def mixed() -> list[bytes]:
    """Big groups and small ones, folded records, odd text, an unknown enum, a bad record."""
    return [
        *flood(TEMPLATE_MIN + 3),
        event(seq=100, repeat_count=5, repeat_first_ns=4_000_000_000, repeat_seq_first=96),
        *flood(TEMPLATE_MIN, comm="cür%l".encode(), pid=7),
        event(seq=200, version=99),  # skipped: another ABI
        event(seq=201, action=9),  # unknown(9)
        *flood(2, tid=555),  # a group too small for its own pieces
        event(seq=300, ts_ns=6_999_999_999),  # the second rolls over
        event(seq=301, ts_ns=7_000_000_000),
    ]


def test_records_and_lines_equal_building_every_record() -> None:
    d = ring_batch(*mixed())
    AttributionEnricher(lambda _id: LABELS).enrich(d)
    built = list(d)
    assert len(built) == len(mixed()) - 1
    assert [r.seq for r in built][-4:] == [0, 1, 300, 301]
    assert [d[i] for i in range(len(d))] == built == list(d[:])
    assert d.json_lines(ENCODER) == ENCODER.encode_lines(built)
    for part in (slice(2, 20), slice(15, None), slice(None, None, 3)):
        assert list(d[part]) == built[part]
        assert d[part].json_lines(ENCODER) == ENCODER.encode_lines(built[part])
        assert tally(d[part]) == tally(built[part])
    folded = next(r for r in built if r.seq == 100)
    assert (folded.repeat_count, folded.repeat_first_ns, folded.repeat_seq_first) == (
        5, 4_000_000_000, 96
    )  # fmt: skip
    assert {r.agent for r in built} == {"aé"} and {r.project for r in built} == {"p%s"}


def test_enrichers_fill_each_group_once_and_every_record_has_it() -> None:
    d = ring_batch(*flood(50), *flood(50, pid=200))
    assert [g.count for g in d.groups] == [50, 50]
    ProcessEnricher().enrich(d)  # pids 100 and 200 are not running here: read, found gone
    AttributionEnricher(lambda _id: LABELS).enrich(d)
    assert {(r.pid, r.container_id, r.exe) for r in d} == {
        (100, "c" * 64, None),
        (200, "c" * 64, None),
    }


def test_dns_labels_build_only_the_groups_whose_destination_was_resolved() -> None:
    d = ring_batch(*flood(20), *flood(20, daddr=(abi.u8 * 16)(10, 9, 9, 9)))
    dns = DnsEnricher()
    dns.observe(answer("10.1.2.3"))
    dns.enrich(d)
    assert len(d.groups) == 1  # 10.9.9.9: still one group, no name
    hosts = [(r.dst_ip, r.dst_host, r.dns_answer_age_ms) for r in d]
    assert hosts[:2] == [("10.1.2.3", "api.example", 1000), ("10.1.2.3", "api.example", 1000)]
    assert hosts[20:] == [("10.9.9.9", None, None)] * 20
    assert d.json_lines(ENCODER) == ENCODER.encode_lines(list(d))


def answer(address: str) -> DnsRecord:
    return DnsRecord(
        event_name="ebpf.egress.dns", ts="", bpf_ts_ns=4_000_000_000, seq=1, action="allowed",
        cgroup_id="42", sock_cookie=1, policy="default", identity="0", verdict="admitted",
        admitted=1, server="10.0.0.53", server_port="53", transport="udp", msg_len=60,
        host_name="host-1", container_id="", agent="", project="", qname="api.example",
        answers=[address], ttl=60,
    )  # fmt: skip


def test_tally_counts_every_record_by_event_and_action() -> None:
    d = ring_batch(
        *flood(10), *flood(3, action=abi.Action.ALLOWED), event(seq=9, op=abi.Op.SENDMSG)
    )
    d.materialise({d.groups[1]})
    assert tally(d) == {
        ("ebpf.egress.connect", "denied"): 10,
        ("ebpf.egress.connect", "allowed"): 3,
        ("ebpf.egress.sendmsg", "denied"): 1,
    }
    assert sum(isinstance(r, Record) for r in d) == 14


def test_otlp_entries_and_spans_equal_those_of_every_record() -> None:
    d = ring_batch(*mixed(), *flood(TEMPLATE_MIN, cgroup_id=77))
    AttributionEnricher(lambda _id: LABELS).enrich(d)
    built = list(d)
    for part in (slice(None), slice(5, 30), slice(None, None, 2)):
        assert log_records(d[part]) == log_records(built[part])
        assert spans_of(d[part]) == spans_of(built[part])
    spans = spans_of(d)
    assert set(spans) == {"42", "77"}
    # The folded record (seq 100, from 96) stands for its 4 earlier repeats too.
    assert spans["42"].count == sum(r.cgroup_id == "42" for r in built) + 4
    assert spans_from_data(LogEncoder("host-1").encode(built, 1)) == spans


def log_records(items: Sequence[Record]) -> list[tuple[Any, ...]]:
    """Each LogRecord's every field, attributes as a dict (encoders may order them apart)."""
    parsed = ScopeLogs.FromString(LogEncoder("host-1").encode(items, 123)).log_records
    return [
        (r.time_unix_nano, r.observed_time_unix_nano, r.severity_number, r.severity_text,
         r.body.string_value, r.event_name, attributes(r))
        for r in parsed
    ]  # fmt: skip
