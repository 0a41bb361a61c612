"""Decoding ring bytes: exact fields, canonical addresses, defensive skips and counts."""

from __future__ import annotations

import ctypes
import datetime
import ipaddress
import socket

import msgspec

from netlogger.kernel import abi
from netlogger.pipeline.decode import Decoder, Rfc3339
from netlogger.pipeline.enrich import AttributionEnricher


def event(**fields) -> bytes:
    e = abi.Event()
    e.hdr.op, e.hdr.version, e.hdr.size = abi.Op.CONNECT, abi.ABI_VERSION, ctypes.sizeof(e)
    e.ts_ns, e.seq, e.cgroup_id, e.task_cgroup_id, e.sock_cookie = 5_000_000_123, 7, 42, 43, 99
    e.pid, e.tid, e.uid, e.gid, e.rule_id, e.policy_id = 100, 101, 1000, 1001, 5, 9
    e.family, e.sock_type, e.protocol, e.dport = socket.AF_INET, 1, 6, 443
    e.daddr[:4] = [10, 1, 2, 3]
    e.action, e.mode, e.reason = abi.Action.DENIED, abi.Mode.ENFORCE, abi.Reason.DEFAULT_DENY
    e.comm = b"curl"
    for name, value in fields.items():
        if name in ("op", "version", "size"):
            setattr(e.hdr, name, value)
        else:
            setattr(e, name, value)
    return bytes(e)


def decoder() -> Decoder:
    return Decoder(lambda r: {5: "web"}.get(r), lambda p: {9: "default"}.get(p, "?"), "host-1")


def test_decodes_every_field() -> None:
    d = decoder()
    rec = d.decode(event())
    assert rec is not None
    as_dict = msgspec.to_builtins(rec)
    ts = as_dict.pop("ts")
    assert ts.endswith("Z") and len(ts) == len("2026-11-29T14:05:15.123456789Z")
    assert as_dict == {
        "event.name": "ebpf.egress.connect",
        "action": "denied",
        "mode": "enforce",
        "reason": "default_deny",
        "would_deny": False,
        "cgroup_id": "42",
        "task_cgroup_id": "43",
        "bpf_ts_ns": 5_000_000_123,
        "seq": 7,
        "l4_proto": "stream",
        "l4_proto_code": 1,
        "ipv6": False,
        "ipv4_mapped": False,
        "nat64": False,
        "no_dst": False,
        "identity": "5",
        "policy": "default",
        "pid": 100,
        "tid": 101,
        "comm": "curl",
        "uid": 1000,
        "gid": 1001,
        "sock_cookie": 99,
        "host.name": "host-1",
        "container_id": "",
        "agent": "",
        "project": "",
        "rule": "web",
        "dst_ip": "10.1.2.3",
        "dst_port": "443",
    }


def test_addresses_are_canonical() -> None:
    d = decoder()
    mapped = ipaddress.IPv6Address("::ffff:10.1.2.3").packed
    rec = d.decode(
        event(
            family=socket.AF_INET6,
            daddr=(abi.u8 * 16)(*mapped),
            flags=abi.Flag.IPV6 | abi.Flag.IPV4_MAPPED,
        )
    )
    assert rec is not None and (rec.dst_ip, rec.ipv6, rec.ipv4_mapped) == ("10.1.2.3", True, True)
    native = ipaddress.IPv6Address("2001:db8::1").packed
    rec = d.decode(event(family=socket.AF_INET6, daddr=(abi.u8 * 16)(*native), flags=abi.Flag.IPV6))
    assert rec is not None and rec.dst_ip == "2001:db8::1"


def test_no_dst_omits_destination_keys() -> None:
    rec = decoder().decode(
        event(op=abi.Op.SOCK_CREATE, sock_type=3, flags=abi.Flag.NO_DST, rule_id=0)
    )
    assert rec is not None
    encoded = msgspec.json.decode(msgspec.json.encode(rec))
    assert encoded["event.name"] == "ebpf.egress.sock_create" and encoded["no_dst"] is True
    assert "dst_ip" not in encoded and "dst_port" not in encoded and "rule" not in encoded
    assert encoded["identity"] == "0" and encoded["l4_proto"] == "raw"


def test_unknown_values_decode_as_unknown_and_are_counted() -> None:
    d = decoder()
    rec = d.decode(event(action=9, reason=77, sock_type=10))
    assert rec is not None
    assert (rec.action, rec.reason, rec.l4_proto) == ("unknown(9)", "unknown(77)", "unknown(10)")
    assert d.unknown == {"action": 1, "reason": 1, "sock_type": 1}


def test_bad_records_are_skipped_and_counted() -> None:
    d = decoder()
    assert d.decode(b"\x01") is None
    assert d.decode(event(version=99)) is None
    assert d.decode(event(op=42)) is None
    assert d.decode(event(size=12)) is None
    assert d.decode(event()[:60]) is None
    assert d.skipped == {"short": 2, "version": 1, "unknown_op": 1, "size": 1}
    assert len(d.decode_all([event(), b"", event()])) == 2


def test_rfc3339_formats_nanoseconds() -> None:
    fmt = Rfc3339()
    second = datetime.datetime.fromtimestamp(1_795_000_000, datetime.UTC)
    assert fmt(1_795_000_000_123_456_789) == f"{second:%Y-%m-%dT%H:%M:%S}.123456789Z"
    assert fmt(1_795_000_000_000_000_001) == f"{second:%Y-%m-%dT%H:%M:%S}.000000001Z"
    assert fmt(1_795_000_001_000_000_000).endswith(f"{second.second + 1:02d}.000000000Z")


def test_enrich_sets_attribution_or_says_why_not() -> None:
    labels = {42: abi.Labels(agent=b"a1", project=b"p1", container_id=b"c" * 64)}
    enricher = AttributionEnricher(labels.get)
    rec, stray = decoder().decode_all([event(), event(cgroup_id=77)])
    enricher.enrich([rec, stray])
    assert (rec.agent, rec.project, rec.container_id, rec.attribution) == (
        "a1",
        "p1",
        "c" * 64,
        None,
    )
    assert (stray.agent, stray.attribution) == ("", "cgroup_not_enrolled")
