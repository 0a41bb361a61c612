"""Decoding ring bytes: exact fields, canonical addresses, defensive skips and counts."""

from __future__ import annotations

import datetime
import ipaddress
import socket

import msgspec

from netlogger.kernel import abi
from netlogger.pipeline.clock import timestamp
from netlogger.pipeline.decode import EVENT_SIZE
from tests.unit.ring_bytes import RingStandIn, add_test_kind, decoder, event


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


def test_packet_socket_record_names_family_and_type() -> None:
    raw = event(
        op=abi.Op.SOCK_CREATE, sock_type=2, family=17, flags=abi.Flag.NO_DST, rule_id=0,
        action=abi.Action.DENIED, reason=abi.Reason.PACKET_SOCKET,
    )  # fmt: skip
    rec = decoder().decode(raw)
    assert rec is not None
    assert (rec.event_name, rec.reason, rec.family, rec.l4_proto, rec.ethertype) == (
        "ebpf.egress.sock_create", "packet_socket", "packet", "dgram", None
    )  # fmt: skip


def test_frame_record_names_its_ethertype() -> None:
    raw = event(
        op=abi.Op.PACKET, sock_type=3, family=17, protocol=0x88B5, flags=abi.Flag.NO_DST,
        rule_id=0, action=abi.Action.DENIED, reason=abi.Reason.ETHERTYPE,
    )  # fmt: skip
    rec = decoder().decode(raw)
    assert rec is not None
    assert (rec.event_name, rec.reason, rec.family, rec.ethertype, rec.dst_ip) == (
        "ebpf.egress.packet", "ethertype", "packet", "0x88b5", None
    )  # fmt: skip


def test_connect_records_carry_no_family_key() -> None:
    rec = decoder().decode(event())
    assert rec is not None
    encoded = msgspec.json.decode(msgspec.json.encode(rec))
    assert "family" not in encoded and "ethertype" not in encoded


def test_unknown_values_decode_as_unknown_and_are_counted() -> None:
    d = decoder()
    rec = d.decode(event(action=9, reason=77, sock_type=99))
    assert rec is not None
    assert (rec.action, rec.reason, rec.l4_proto) == ("unknown(9)", "unknown(77)", "unknown(99)")
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
    fmt = timestamp
    second = datetime.datetime.fromtimestamp(1_795_000_000, datetime.UTC)
    assert fmt(1_795_000_000_123_456_789) == f"{second:%Y-%m-%dT%H:%M:%S}.123456789Z"
    assert fmt(1_795_000_000_000_000_001) == f"{second:%Y-%m-%dT%H:%M:%S}.000000001Z"
    assert fmt(1_795_000_001_000_000_000).endswith(f"{second.second + 1:02d}.000000000Z")


def test_a_ring_batch_takes_the_fast_path_with_exact_fields() -> None:
    ring = RingStandIn()
    ring.push(
        *(
            event(seq=s, ts_ns=5_000_000_000 + s, cgroup_id=42 + s % 2, pid=100 + s, dport=440 + s)
            for s in range(1, 5)
        )
    )
    ring.push(event(op=42, seq=5))  # an unknown op amid the run: counted, skipped
    batch = ring.drain()
    assert (batch.uniform, len(batch)) == (EVENT_SIZE, 5)  # what decode_all's fast path takes
    d = decoder()
    fast = d.decode_all(batch)
    fields = [(r.seq, r.bpf_ts_ns, r.cgroup_id, r.pid, r.dst_port, r.action) for r in fast]
    assert fields == [
        (1, 5_000_000_001, "43", 101, "441", "denied"),
        (2, 5_000_000_002, "42", 102, "442", "denied"),
        (3, 5_000_000_003, "43", 103, "443", "denied"),
        (4, 5_000_000_004, "42", 104, "444", "denied"),
    ]
    assert {(r.rule, r.policy, r.dst_ip, r.comm, r.host_name) for r in fast} == {
        ("web", "default", "10.1.2.3", "curl", "host-1")
    }
    assert [r.ts for r in fast] == [timestamp(r.bpf_ts_ns + d._offset) for r in fast]
    assert d.skipped == {"unknown_op": 1}
    slow = d.decode_all(list(batch))  # record by record, through the op table
    assert [msgspec.to_builtins(r) for r in slow] == [msgspec.to_builtins(r) for r in fast]
    assert d.skipped == {"unknown_op": 2}


def test_a_new_kind_is_one_entry_in_the_op_table() -> None:
    d = decoder()
    add_test_kind(d)
    out = d.decode_all([event(op=42, seq=3) + bytes(8), event(seq=4), event(op=43)])
    assert [(r.event_name, r.seq) for r in out] == [("test.kind", 3), ("ebpf.egress.connect", 4)]
    assert d.skipped == {"unknown_op": 1}
