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
    "dns": "ebpf.egress.dns",
    "control": "ebpf.egress.control",
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
    container_id: str  # "" when unknown, and then `attribution` says why not
    agent: str
    project: str
    rule: str | None = None
    dst_ip: str | None = None
    dst_port: str | None = None
    # connect() of a UDP socket: it sends nothing by itself, and glibc's getaddrinfo
    # does it to every candidate address to sort them (RFC 3484), so not an alert.
    udp_connect: bool | None = None
    family: str | None = None  # socket creation and frames: inet / inet6 / packet / xdp
    ethertype: str | None = None  # frames of neither IP family: "0x88b5"
    attribution: str | None = None  # engine / static / cgroup_path, or why it is empty
    dst_host: str | None = None  # the name the workload asked for (the question, not a CNAME)
    # DNS evidence for dst_host (enrich/dns.py): what the agent saw the workload resolve.
    dns_qname: str | None = msgspec.field(name="dns.qname", default=None)
    dns_cname_chain: list[str] | None = msgspec.field(name="dns.cname_chain", default=None)
    dns_answer_age_ms: int | None = msgspec.field(name="dns.answer_age_ms", default=None)
    dns_ttl_left_s: int | None = msgspec.field(name="dns.ttl_left_s", default=None)
    # Every other name this cgroup resolved to the same address (shared CDN addresses).
    dns_names_sharing_ip: list[str] | None = msgspec.field(
        name="dns.names_sharing_ip", default=None
    )
    container_name: str | None = None  # the engine's name for container_id, when known
    exe: str | None = None  # the deciding process's executable, when it was still there
    ppid: int | None = None
    escape: str | None = None  # how the container can get around enforcement (see escape.py)
    policy_reason: str | None = None  # unknown_policy / malformed_policy: why it allows nothing
    # A record that stands for repeat.count identical decisions folded in the kernel
    # (itself the last): the first at repeat.first_ns with sequence number
    # repeat.seq_first, every one of its seqs in [repeat.seq_first, seq]. Absent: one.
    repeat_count: int | None = msgspec.field(name="repeat.count", default=None)
    repeat_first_ns: int | None = msgspec.field(name="repeat.first_ns", default=None)
    repeat_last_ns: int | None = msgspec.field(name="repeat.last_ns", default=None)
    repeat_seq_first: int | None = msgspec.field(name="repeat.seq_first", default=None)

    @property
    def stands_for(self) -> int:
        """How many decisions this record accounts for."""
        return self.repeat_count or 1

    @property
    def first_seq(self) -> int:
        """The first sequence number this record accounts for: a folded one's first repeat."""
        return self.seq if self.repeat_seq_first is None else self.repeat_seq_first


class DnsRecord(msgspec.Struct, omit_defaults=True, gc=False, kw_only=True):
    """One DNS answer the kernel saw delivered to an enrolled cgroup (`ebpf.egress.dns`).

    `seq` counts in the cgroup's own DNS sequence, apart from decision records.
    """

    event_name: str = msgspec.field(name="event.name")  # always EVENT_NAMES["dns"]
    ts: str
    bpf_ts_ns: int
    seq: int
    action: str  # "allowed": the kernel observes answers, it never drops them
    cgroup_id: str
    sock_cookie: int
    policy: str
    identity: str  # the domain rule's id, "0" when none matched
    verdict: str = msgspec.field(name="dns.verdict")  # admitted / not_matched / unsolicited / ...
    admitted: int = msgspec.field(name="dns.admitted")  # addresses the kernel admitted
    server: str = msgspec.field(name="dns.server")
    server_port: str = msgspec.field(name="dns.server_port")
    transport: str = msgspec.field(name="dns.transport")  # udp / tcp
    msg_len: int = msgspec.field(name="dns.msg_len")
    host_name: str = msgspec.field(name="host.name")
    container_id: str  # "" when unknown, as on Record
    agent: str
    project: str
    attribution: str | None = None
    rule: str | None = None
    qname: str | None = msgspec.field(name="dns.qname", default=None)
    qtype: str | None = msgspec.field(name="dns.qtype", default=None)
    rcode: str | None = msgspec.field(name="dns.rcode", default=None)
    answers: list[str] | None = msgspec.field(name="dns.answers", default=None)  # addresses
    cname_chain: list[str] | None = msgspec.field(name="dns.cname_chain", default=None)
    ttl: int | None = msgspec.field(name="dns.ttl", default=None)  # least TTL of the addresses
    truncated: bool | None = msgspec.field(name="dns.truncated", default=None)  # TC bit
    cut: bool | None = msgspec.field(name="dns.cut", default=None)  # the record holds a prefix
    parse_error: str | None = msgspec.field(name="dns.parse_error", default=None)
    container_name: str | None = None  # as on Record


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


class Control(msgspec.Struct, omit_defaults=True, gc=False, kw_only=True):
    """One control action on enforcement, asked for or automatic: the audit trail.

    `control.by` is `peer` (then `control.uid`/`control.pid` are the socket peer's
    credentials, from SO_PEERCRED) or `agent` (then `control.trigger` says why). Before
    and after describe the target's enrollment; a side is absent when not enrolled. A
    refused action carries `control.error`, and its after is its unchanged before.
    """

    event_name: str = msgspec.field(name="event.name")  # always EVENT_NAMES["control"]
    ts: str
    command: str = msgspec.field(name="control.command")  # see CONTROL_COMMANDS
    result: str = msgspec.field(name="control.result")  # done / refused
    by: str = msgspec.field(name="control.by")  # peer / agent
    target: str = msgspec.field(name="control.target")  # as asked: "cgroup PATH", "container REF"
    error: str | None = msgspec.field(name="control.error", default=None)  # why refused
    uid: int | None = msgspec.field(name="control.uid", default=None)
    pid: int | None = msgspec.field(name="control.pid", default=None)
    trigger: str | None = msgspec.field(name="control.trigger", default=None)  # CONTROL_TRIGGERS
    mode_before: str | None = msgspec.field(name="control.mode_before", default=None)
    mode_after: str | None = msgspec.field(name="control.mode_after", default=None)
    policy_before: str | None = msgspec.field(name="control.policy_before", default=None)
    policy_after: str | None = msgspec.field(name="control.policy_after", default=None)
    bypass_s: float | None = msgspec.field(name="control.bypass_s", default=None)  # asked for
    bypass_until: str | None = msgspec.field(name="control.bypass_until", default=None)
    cgroup_id: str | None = None
    cgroup_path: str | None = None
    host_name: str = msgspec.field(name="host.name", default="")
    container_id: str = ""
    container_name: str | None = None
    agent: str = ""
    project: str = ""


CONTROL_COMMANDS = ("enroll", "unenroll", "bypass", "enforce", "reload")
CONTROL_TRIGGERS = {
    "config": "a static enrollment from the config, at start",
    "container_running": "a container the config selects was running when the watcher listed them",
    "container_start": "the engine started a container the config selects",
    "container_stop": "the engine stopped an enrolled container",
    "container_gone": "an enrolled container was no longer running when the watcher listed them",
    "cgroup_gone": "the enrolled cgroup directory was removed",
    "reload": "SIGHUP reloaded the config (a `reload` asked over the socket names its peer)",
}


# How people see a folded record: this sign and the N decisions it stands for.
TIMES = "\N{MULTIPLICATION SIGN}"

GAP_KINDS = {
    "throttled": "allowed records dropped by the kernel's per-cgroup token bucket",
    "ringbuf_full": "records the kernel could not reserve because the ring was full",
    "queue_full": "records a sink's queue in the agent had no room for",
    "sink_failed": "records a sink raised an error on and did not take",
    "spool_evicted": "records evicted from a sink's on-disk spool to respect its size cap",
    "undecodable": "ring records the agent could not decode",
    "no_state": "decisions the kernel found no per-cgroup state for (its state map was full)",
    "dns_throttled": "DNS records dropped by the kernel's per-cgroup token bucket",
    "dns_ringbuf_full": "DNS records the kernel could not reserve because the DNS ring was full",
    "dns_queue_full": "DNS records a sink's queue in the agent had no room for",
    "dns_sink_failed": "DNS records a sink raised an error on and did not take",
    "dns_spool_evicted": "DNS records evicted from a sink's on-disk spool to respect its size cap",
}

# The record union is open: a new kind is a Struct here, added to RingItem when
# the decoder makes it from ring records (an entry in Decoder.kinds), else to Item
# (agent-made kinds: Gap and Control reach sinks through the fan-out's never-dropped path).
# Every ring kind carries `event_name`, `cgroup_id`, `seq` and `action`: the pump
# counts by event and action, and a lost ring item's seq goes into a gap's range.
RingItem = Record | DnsRecord  # what the decoder makes of ring records
Item = RingItem | Gap | Control  # what sinks receive

FIELDS = tuple(f.encode_name for f in msgspec.structs.fields(Record))
GAP_FIELDS = tuple(f.encode_name for f in msgspec.structs.fields(Gap))
DNS_FIELDS = tuple(f.encode_name for f in msgspec.structs.fields(DnsRecord))
CONTROL_FIELDS = tuple(f.encode_name for f in msgspec.structs.fields(Control))
