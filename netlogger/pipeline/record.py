"""The decision record: one per egress decision (DESIGN.md §3).

The same keys and types go to `tail --json`, the JSONL file and the OTLP log
attributes. Keys the reference index maps keep their names and types
(`cgroup_id`, `dst_port` and `identity` are decimal strings). Optional keys
are absent, never empty, when unknown.
"""

from __future__ import annotations

import msgspec

EVENT_NAMES = {
    "connect": "ebpf.egress.connect",
    "sendmsg": "ebpf.egress.sendmsg",
    "sock_create": "ebpf.egress.sock_create",
    "gap": "ebpf.egress.gap",
}


class Record(msgspec.Struct, omit_defaults=True, gc=False):
    event_name: str = msgspec.field(name="event.name")
    ts: str  # RFC 3339 with nanoseconds, from the kernel's clock
    action: str  # allowed / denied / bypassed
    mode: str  # enforce / audit / bypass
    reason: str
    would_deny: bool
    cgroup_id: str
    task_cgroup_id: str
    bpf_ts_ns: int
    seq: int
    l4_proto: str  # stream / dgram / raw
    l4_proto_code: int
    ipv6: bool
    ipv4_mapped: bool
    nat64: bool
    no_dst: bool
    identity: str  # rule id, "0" when none
    policy: str
    pid: int
    tid: int
    comm: str
    uid: int
    gid: int
    sock_cookie: int
    host_name: str = msgspec.field(name="host.name", default="")
    container_id: str = ""
    agent: str = ""
    project: str = ""
    attribution: str | None = None  # why container/agent/project are empty
    rule: str | None = None
    dst_ip: str | None = None
    dst_port: str | None = None
    dst_host: str | None = None


FIELDS = tuple(f.encode_name for f in msgspec.structs.fields(Record))
