"""Records for the OTLP tests, shaped like the decoder's output (DESIGN.md section 3)."""

from __future__ import annotations

from typing import Any

from netlogger.pipeline.clock import timestamp
from netlogger.pipeline.record import EVENT_NAMES, Control, Gap, Record

HOST = "host-a"
BOOT_WALL_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z: wall clock at boot
_ts = timestamp


def decision(seq: int, cgroup_id: str = "4242", **fields: Any) -> Record:
    """An allowed IPv4 connect; `fields` override any of it."""
    bpf_ts_ns = 90_000_000_000_000 + seq * 1_000
    values: dict[str, Any] = {
        "event_name": EVENT_NAMES["connect"],
        "ts": _ts(BOOT_WALL_NS + bpf_ts_ns),
        "action": "allowed",
        "mode": "enforce",
        "reason": "rule",
        "would_deny": False,
        "cgroup_id": cgroup_id,
        "task_cgroup_id": str(int(cgroup_id) + 1),
        "bpf_ts_ns": bpf_ts_ns,
        "seq": seq,
        "l4_proto": "stream",
        "l4_proto_code": 1,
        "ipv6": False,
        "ipv4_mapped": False,
        "nat64": False,
        "no_dst": False,
        "identity": "7",
        "policy": "default",
        "pid": 3100,
        "tid": 3101,
        "comm": "python3",
        "uid": 1000,
        "gid": 1000,
        "sock_cookie": 77_000 + seq,
        "host_name": HOST,
        "container_id": "c0ffee",
        "agent": "agent-1",
        "project": "proj-1",
        "rule": "github",
        "dst_ip": "10.1.2.3",
        "dst_port": "443",
        "dst_host": "api.github.com",
    }
    values.update(fields)
    return Record(**values)


def control(**fields: Any) -> Control:
    """A bypass of container web-1 asked for by uid 0 pid 42; `fields` override any of it."""
    values: dict[str, Any] = {
        "event_name": EVENT_NAMES["control"],
        "ts": "2026-01-01T00:00:00.500000000Z",
        "command": "bypass",
        "result": "done",
        "by": "peer",
        "target": "container web-1",
        "uid": 0,
        "pid": 42,
        "mode_before": "enforce",
        "mode_after": "bypass",
        "policy_before": "default",
        "policy_after": "default",
        "bypass_s": 600.0,
        "bypass_until": "2026-01-01T00:10:00.500000000Z",
        "cgroup_id": "4242",
        "cgroup_path": "/sys/fs/cgroup/web-1",
        "host_name": HOST,
        "container_id": "c0ffee",
        "container_name": "web-1",
        "agent": "agent-1",
    }
    values.update(fields)
    return Control(**values)


def every_kind() -> list[Record | Gap]:
    """One of each event, with each address shape and each optional field both ways."""
    return [
        decision(0),
        decision(
            1,
            event_name=EVENT_NAMES["sendmsg"],
            action="denied",
            reason="resolver_not_allowed",
            l4_proto="dgram",
            l4_proto_code=2,
            ipv6=True,
            dst_ip="2001:db8::53",
            dst_port="53",
            dst_host=None,
            rule=None,
            identity="0",
        ),
        decision(
            2,
            event_name=EVENT_NAMES["sock_create"],
            action="bypassed",
            mode="bypass",
            reason="raw_socket",
            would_deny=True,
            l4_proto="raw",
            l4_proto_code=3,
            no_dst=True,
            dst_ip=None,
            dst_port=None,
            dst_host=None,
            rule=None,
            container_id="",
            agent="",
            project="",
            attribution="not_a_container",
        ),
        decision(
            3,
            action="denied",
            reason="default_deny",
            ipv6=True,
            ipv4_mapped=True,
            dst_ip="192.0.2.9",
            dst_port="8080",
            dst_host=None,
            rule=None,
            identity="0",
        ),
        Gap(
            event_name=EVENT_NAMES["gap"],
            ts=_ts(BOOT_WALL_NS + 90_000_000_004_000),
            gap_kind="throttled",
            gap_count=12,
            gap_seq_first=4,
            gap_seq_last=15,
            cgroup_id="4242",
            host_name=HOST,
            container_id="c0ffee",
            agent="agent-1",
            project="proj-1",
        ),
        Gap(
            event_name=EVENT_NAMES["gap"],
            ts=_ts(BOOT_WALL_NS + 90_000_000_005_000),
            gap_kind="ringbuf_full",
            gap_count=3,
            host_name=HOST,
        ),
    ]
