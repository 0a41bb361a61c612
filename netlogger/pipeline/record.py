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
    "packet": "ebpf.egress.packet",
    "gap": "ebpf.egress.gap",
}


class Record(msgspec.Struct, omit_defaults=True, gc=False):
    # Field order is the decoder's positional order (see decode.py); keys, not order,
    # are the contract.
    event_name: str = msgspec.field(name="event.name")
    ts: str  # RFC 3339 with nanoseconds, from the kernel's clock
    bpf_ts_ns: int
    seq: int
    action: str  # allowed / denied / bypassed
    mode: str  # enforce / audit / bypass
    reason: str
    would_deny: bool
    cgroup_id: str
    task_cgroup_id: str
    l4_proto: str  # stream / dgram / raw
    l4_proto_code: int
    ipv6: bool
    ipv4_mapped: bool
    nat64: bool
    no_dst: bool
    identity: str  # rule id, "0" when none
    policy: str
    comm: str
    pid: int
    tid: int
    uid: int
    gid: int
    sock_cookie: int
    host_name: str = msgspec.field(name="host.name")
    container_id: str  # "" when unknown, and then `attribution` says why
    agent: str
    project: str
    rule: str | None = None
    dst_ip: str | None = None
    dst_port: str | None = None
    family: str | None = None  # socket creation and frames: inet / inet6 / packet / xdp
    ethertype: str | None = None  # frames of neither IP family: "0x88b5"
    attribution: str | None = None
    dst_host: str | None = None


class Gap(msgspec.Struct, omit_defaults=True, gc=False, kw_only=True):
    """Records that were lost, counted: the in-band proof of completeness.

    A consumer that sees, per cgroup, every sequence number either in a decision
    record or inside a gap's range (and the counts agree) has seen everything.
    """

    event_name: str = msgspec.field(name="event.name")  # always EVENT_NAMES["gap"]
    ts: str
    gap_kind: str = msgspec.field(name="gap.kind")  # see GAP_KINDS
    gap_count: int = msgspec.field(name="gap.count")
    gap_seq_first: int | None = msgspec.field(name="gap.seq_first", default=None)
    gap_seq_last: int | None = msgspec.field(name="gap.seq_last", default=None)
    gap_sink: str | None = msgspec.field(name="gap.sink", default=None)  # which sink lost them
    cgroup_id: str | None = None  # absent when the loss is not tied to one cgroup
    host_name: str = msgspec.field(name="host.name", default="")
    container_id: str = ""
    agent: str = ""
    project: str = ""


GAP_KINDS = {
    "throttled": "allowed records dropped by the kernel's per-cgroup token bucket",
    "ringbuf_full": "records the kernel could not reserve because the ring was full",
    "queue_full": "records a sink's queue in the agent had no room for",
    "sink_failed": "records a sink raised an error on and did not take",
    "spool_evicted": "records evicted from a sink's on-disk spool to respect its size cap",
    "undecodable": "ring records the agent could not decode",
    "no_state": "decisions the kernel found no per-cgroup state for (its state map was full)",
}

# The record union is open: a new kind is a Struct here, added to RingItem when
# the decoder makes it from ring records (an entry in Decoder.kinds), else to Item.
# Every ring kind carries `event_name`, `cgroup_id`, `seq` and `action`: the pump
# counts by event and action, and a lost ring item's seq goes into a gap's range.
RingItem = Record  # what the decoder makes of ring records
Item = RingItem | Gap  # what sinks receive

FIELDS = tuple(f.encode_name for f in msgspec.structs.fields(Record))
GAP_FIELDS = tuple(f.encode_name for f in msgspec.structs.fields(Gap))
