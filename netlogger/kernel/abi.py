"""The Python statement of bpf/netlogger.h: every shared struct and enum, once.

Field names match the C names so tests/unit/test_abi.py can compare them with
the BTF of the compiled object, offset by offset. Decoders derive their
`struct` formats from these classes (`unpacker`); nothing restates a layout.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import struct
from typing import Any

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64

ABI_VERSION = 3
COMM_LEN = 16
MAX_LEVELS = 32
MAX_PORT_RULES = 16
DNS_PAYLOAD_MAX = 1024
DNS_NAME_MAX = 248
DNS_SLOTS = 4
DNS_ADDRS_MAX = 4096
DNS_QUERIES_MAX = 1024
DNS_SCRATCH_BYTES = 4608
CGROUP_NAME_LEN = 128
FOLD_SLOTS = 8


class Family(enum.IntEnum):
    """Every `family` field holds these (socket.AF_*), never 4 or 6; PACKET and XDP only
    in records of created sockets and frames."""

    INET = 2
    INET6 = 10
    PACKET = 17
    XDP = 44


class Port(enum.IntEnum):
    DNS = 53
    DNS_TLS = 853


class CidrPrefix(enum.IntEnum):
    BITS = 40  # policy_id + family: an nl_cidr_key's prefixlen is this + the address prefix


class Flush(enum.IntEnum):
    CTX_OFF = 14  # nl_flush_folds reads its nl_flush_ctx past an Ethernet header


class Writer(enum.IntEnum):
    """Who wrote an nl_cidrs entry; each writer deletes only its own."""

    POLICY = 0


class Op(enum.IntEnum):
    CONNECT = 1
    SENDMSG = 2
    SOCK_CREATE = 3
    DNS = 4
    PACKET = 5


class Action(enum.IntEnum):
    ALLOWED = 0
    DENIED = 1
    BYPASSED = 2


class Mode(enum.IntEnum):
    ENFORCE = 0
    AUDIT = 1
    BYPASS = 2


class Reason(enum.IntEnum):
    RULE = 1
    DEFAULT_DENY = 2
    RAW_SOCKET = 3
    RESOLVER = 4
    RESOLVER_NOT_ALLOWED = 5
    ICMP = 6
    LOOPBACK = 7
    BYPASS = 8
    UNRESOLVED_IP = 9
    DNS_OVER_TLS = 10
    DNS_OVER_TCP = 11
    PACKET_SOCKET = 12
    ETHERTYPE = 13


class Flag(enum.IntFlag):
    IPV6 = 1 << 0
    IPV4_MAPPED = 1 << 1
    NAT64 = 1 << 2
    NO_DST = 1 << 3
    WOULD_DENY = 1 << 4
    UDP_CONNECT = 1 << 5


class Proto(enum.IntFlag):
    TCP = 1 << 0
    UDP = 1 << 1


class PolicyFlag(enum.IntFlag):
    LOG_LOOPBACK = 1 << 0
    ICMP_ALLOW = 1 << 1
    HAS_DOMAINS = 1 << 2


class DnsVerdict(enum.IntEnum):
    ADMITTED = 1
    NOT_MATCHED = 2
    UNSOLICITED = 3
    FOREIGN = 4
    MALFORMED = 5


class DnsFlag(enum.IntFlag):
    CUT = 1 << 0
    TCP = 1 << 1
    TRUNCATED = 1 << 2


class Source(enum.IntEnum):
    STATIC = 0
    ENGINE = 1


# The C enum each Python enum mirrors, and the prefix its member names carry.
ENUMS: dict[str, tuple[type[enum.IntEnum] | type[enum.IntFlag], str]] = {
    "nl_family": (Family, "NL_FAMILY_"),
    "nl_port": (Port, "NL_PORT_"),
    "nl_cidr_prefix": (CidrPrefix, "NL_CIDR_PREFIX_"),
    "nl_flush": (Flush, "NL_FLUSH_"),
    "nl_writer": (Writer, "NL_WRITER_"),
    "nl_op": (Op, "NL_OP_"),
    "nl_action": (Action, "NL_ACTION_"),
    "nl_mode": (Mode, "NL_MODE_"),
    "nl_reason": (Reason, "NL_REASON_"),
    "nl_flag": (Flag, "NL_FLAG_"),
    "nl_proto": (Proto, "NL_PROTO_"),
    "nl_policy_flag": (PolicyFlag, "NL_POLICY_"),
    "nl_dns_verdict": (DnsVerdict, "NL_DNS_"),
    "nl_dns_flag": (DnsFlag, "NL_DNS_FLAG_"),
    "nl_source": (Source, "NL_SOURCE_"),
}


class Hdr(ctypes.Structure):
    _fields_ = [("op", u8), ("version", u8), ("size", u16), ("cpu", u32)]


class Event(ctypes.Structure):
    _fields_ = [
        ("hdr", Hdr),
        ("ts_ns", u64),
        ("seq", u64),
        ("cgroup_id", u64),
        ("task_cgroup_id", u64),
        ("sock_cookie", u64),
        ("repeat_first_ns", u64),
        ("repeat_seq_first", u64),
        ("pid", u32),
        ("tid", u32),
        ("uid", u32),
        ("gid", u32),
        ("repeat_count", u32),
        ("rule_id", u32),
        ("policy_id", u32),
        ("daddr", u8 * 16),
        ("dport", u16),
        ("family", u16),
        ("sock_type", u16),
        ("protocol", u16),
        ("action", u8),
        ("mode", u8),
        ("reason", u8),
        ("flags", u8),
        ("comm", ctypes.c_char * COMM_LEN),
    ]


class FoldKey(ctypes.Structure):
    _fields_ = [
        ("daddr", u8 * 16),
        ("tgid", u32),
        ("rule_id", u32),
        ("dport", u16),
        ("verdict", u8),  # action | mode << 2 | op << 4
        ("reason", u8),
        ("flags", u8),
        ("sock_type", u8),
        ("protocol", u16),
    ]


class FoldSlot(ctypes.Structure):
    _fields_ = [
        ("key", FoldKey),
        ("last_record_ns", u64),
        ("first_ns", u64),
        ("last_ns", u64),
        ("seq_first", u64),
        ("seq_last", u64),
        ("count", u32),
        ("ready", u32),
        ("last", Event),
    ]


class SpinLock(ctypes.Structure):
    """struct bpf_spin_lock (linux/bpf.h): the kernel's, only sized here."""

    _fields_ = [("val", u32)]


class Folds(ctypes.Structure):
    _fields_ = [("lock", SpinLock), ("pad", u32), ("slots", FoldSlot * FOLD_SLOTS)]


class Enrollment(ctypes.Structure):
    _fields_ = [("bypass_until_ns", u64), ("policy_id", u32), ("mode", u8), ("pad", u8 * 3)]


class CgroupState(ctypes.Structure):
    _fields_ = [
        ("seq", u64),
        ("tat_ns", u64),
        ("throttled", u64),
        ("ringbuf_lost", u64),
        ("dns_seq", u64),
        ("dns_tat_ns", u64),
        ("dns_throttled", u64),
        ("dns_ringbuf_lost", u64),
    ]


class CpuLoss(ctypes.Structure):
    _fields_ = [("ringbuf_lost", u64), ("no_state", u64)]


class Veth(ctypes.Structure):
    _fields_ = [("cgroup_id", u64)]


class Policy(ctypes.Structure):
    _fields_ = [("flags", u32), ("pad", u32)]


class CidrKey(ctypes.Structure):
    _fields_ = [
        ("prefixlen", u32),
        ("policy_id", u32),
        ("family", u8),
        ("addr", u8 * 16),
        ("pad", u8 * 3),
    ]


class PortRule(ctypes.Structure):
    _fields_ = [
        ("port_lo", u16),
        ("port_hi", u16),
        ("protos", u8),
        ("pad", u8 * 3),
        ("rule_id", u32),
    ]


class CidrRules(ctypes.Structure):
    _fields_ = [("count", u32), ("writer", u32), ("rules", PortRule * MAX_PORT_RULES)]


class ResolverKey(ctypes.Structure):
    _fields_ = [("policy_id", u32), ("family", u8), ("pad", u8 * 3), ("addr", u8 * 16)]


class Levels(ctypes.Structure):
    _fields_ = [("mask", u32), ("pad", u32)]


class Labels(ctypes.Structure):
    _fields_ = [
        ("level", u32),
        ("source", u8),
        ("pad", u8 * 3),
        ("policy", ctypes.c_char * 32),
        ("agent", ctypes.c_char * 64),
        ("project", ctypes.c_char * 64),
        ("container_id", ctypes.c_char * 72),
        ("path", ctypes.c_char * 256),
    ]


class PendingKey(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * CGROUP_NAME_LEN)]


class Pending(ctypes.Structure):
    _fields_ = [
        ("scope_id", u64),
        ("cgroup_id", u64),
        ("enrolled", u64),
        ("enrollment", Enrollment),
        ("labels", Labels),
    ]


class Reported(ctypes.Structure):
    _fields_ = [
        ("throttled", u64),
        ("ringbuf_lost", u64),
        ("throttled_seq", u64),
        ("ringbuf_lost_seq", u64),
        ("no_state", u64),
        ("dns_throttled", u64),
        ("dns_ringbuf_lost", u64),
        ("dns_throttled_seq", u64),
        ("dns_ringbuf_lost_seq", u64),
    ]


class Meta(ctypes.Structure):
    _fields_ = [("abi_version", u32), ("len", u32), ("layout", ctypes.c_char * 4088)]


class DnsEvent(ctypes.Structure):
    """The fixed part of struct nl_dns_event; `payload_len` DNS message bytes follow."""

    _fields_ = [
        ("hdr", Hdr),
        ("ts_ns", u64),
        ("seq", u64),
        ("cgroup_id", u64),
        ("sock_cookie", u64),
        ("policy_id", u32),
        ("rule_id", u32),
        ("server", u8 * 16),
        ("server_port", u16),
        ("family", u16),
        ("msg_len", u16),
        ("payload_len", u16),
        ("admitted", u16),
        ("verdict", u8),
        ("flags", u8),
        ("pad", u8 * 4),
        ("payload", u8 * 0),
    ]


class DomainKey(ctypes.Structure):
    _fields_ = [("prefixlen", u32), ("policy_id", u32), ("name", u8 * DNS_NAME_MAX)]


class Domain(ctypes.Structure):
    _fields_ = [
        ("match_id", u32),
        ("apex_match_id", u32),
        ("name_len", u16),
        ("wildcard", u8),
        ("pad", u8),
    ]


class DomainPortsKey(ctypes.Structure):
    _fields_ = [("policy_id", u32), ("match_id", u32)]


class DnsAddrKey(ctypes.Structure):
    _fields_ = [("family", u8), ("pad", u8 * 3), ("addr", u8 * 16)]


class DnsSlot(ctypes.Structure):
    _fields_ = [("expires_ns", u64), ("match_id", u32), ("pad", u32)]


class DnsSlots(ctypes.Structure):
    _fields_ = [("slot", DnsSlot * DNS_SLOTS)]


class DnsQueryKey(ctypes.Structure):
    _fields_ = [("sock_cookie", u64), ("txid", u16), ("qtype", u16), ("pad", u32)]


class DnsQuery(ctypes.Structure):
    _fields_ = [("qhash", u64), ("ts_ns", u64)]


class FlushCtx(ctypes.Structure):
    _fields_ = [("cgroup_id", u64)]


class Config(ctypes.Structure):
    _fields_ = [
        ("allow_interval_ns", u64),
        ("allow_tolerance_ns", u64),
        ("wakeup_bytes", u64),
        ("dns_ttl_floor_ns", u64),
        ("dns_ttl_cap_ns", u64),
        ("fold_window_ns", u64),
    ]


# C struct name -> mirror, for the ABI check.
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "nl_hdr": Hdr,
    "nl_event": Event,
    "nl_fold_key": FoldKey,
    "nl_fold_slot": FoldSlot,
    "nl_folds": Folds,
    "nl_flush_ctx": FlushCtx,
    "nl_enrollment": Enrollment,
    "nl_cgroup_state": CgroupState,
    "nl_cpu_loss": CpuLoss,
    "nl_veth": Veth,
    "nl_policy": Policy,
    "nl_cidr_key": CidrKey,
    "nl_port_rule": PortRule,
    "nl_cidr_rules": CidrRules,
    "nl_resolver_key": ResolverKey,
    "nl_levels": Levels,
    "nl_labels": Labels,
    "nl_pending_key": PendingKey,
    "nl_pending": Pending,
    "nl_reported": Reported,
    "nl_meta": Meta,
    "nl_config": Config,
    "nl_dns_event": DnsEvent,
    "nl_domain_key": DomainKey,
    "nl_domain": Domain,
    "nl_domain_ports_key": DomainPortsKey,
    "nl_dns_addr_key": DnsAddrKey,
    "nl_dns_slot": DnsSlot,
    "nl_dns_slots": DnsSlots,
    "nl_dns_query_key": DnsQueryKey,
    "nl_dns_query": DnsQuery,
}

_CODES = {u8: "B", u16: "H", u32: "I", u64: "Q"}


def _format_of(ctype: Any) -> str:
    if ctype in _CODES:
        return _CODES[ctype]
    if issubclass(ctype, ctypes.Array):
        return f"{ctypes.sizeof(ctype)}s"  # byte arrays stay bytes
    if issubclass(ctype, ctypes.Structure):
        return "".join(_format_of(t) for _, t in ctype._fields_)
    raise TypeError(f"no struct code for {ctype}")


def flat_names(cls: type[ctypes.Structure]) -> list[str]:
    """Field names in unpack order; nested structs contribute their own fields."""
    names: list[str] = []
    for name, ctype, *_ in cls._fields_:
        if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure):
            names.extend(flat_names(ctype))
        else:
            names.append(name)
    return names


def unpacker(cls: type[ctypes.Structure]) -> struct.Struct:
    """A struct.Struct that reads `cls` as a flat tuple in `flat_names` order."""
    fmt = "=" + _format_of(cls)
    unpack = struct.Struct(fmt)
    assert unpack.size == ctypes.sizeof(cls), f"{cls.__name__} has implicit padding"
    return unpack


def fields_format(cls: type[ctypes.Structure], names: list[str]) -> str:
    """struct codes for the named fields of `cls`, which must lie back to back."""
    fields = [getattr(cls, n) for n in names]
    for before, after in itertools.pairwise(fields):
        assert before.offset + before.size == after.offset, f"{names} are not contiguous"
    types = {field[0]: field[1] for field in cls._fields_}
    return "".join(_format_of(types[n]) for n in names)


def span_of(cls: type[ctypes.Structure], first: str, end: str | None = None) -> slice:
    """The byte range from field `first` up to field `end` (or the end of `cls`)."""
    stop = getattr(cls, end).offset if end else ctypes.sizeof(cls)
    return slice(getattr(cls, first).offset, stop)


def layout(cls: type[ctypes.Structure]) -> list[tuple[str, int, int]]:
    """(name, offset, size) of each top-level field: what pinned-state metadata records."""
    return [(name, getattr(cls, name).offset, getattr(cls, name).size) for name, *_ in cls._fields_]
