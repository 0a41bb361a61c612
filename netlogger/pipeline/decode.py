"""Ring bytes -> ring items. Defensive: a short, foreign or unknown record is counted
by kind and skipped, never raised; an unknown enum value decodes as
`unknown(N)` and is counted.

Every ring record starts with the common header (abi.Hdr); its `op` picks the
decoding from a table (`Decoder.kinds`), Tetragon style. A new record kind is
one entry there and one Struct in record.py; the pump and the fan-out carry
whatever the table yields. A kind other than the decision event must differ
from it in length: only same-length runs take the batch fast path below, and
that path reads decision events only.

This is the agent's hot path. Most of a record repeats from one connect to the
next (who decided, where to, which rule, the verdict), and those fields sit in
three fixed byte ranges of the event. Their bytes are the cache key for
everything derived from them, computed once per distinct combination; per
record only the clock, sequence and process fields are unpacked. Records are
built positionally, in Record's field order, which is 6x cheaper than by
keyword; an import-time check holds the two orders together.
"""

from __future__ import annotations

import collections
import ctypes
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import msgspec

from netlogger.kernel import abi
from netlogger.kernel.ringbuf import HEADER, Batch, span
from netlogger.pipeline.clock import boot_to_wall_ns, timestamp
from netlogger.pipeline.decisions import Decisions, Group
from netlogger.pipeline.record import EVENT_NAMES, Record, RingItem

_EVENT = abi.unpacker(abi.Event)
EVENT_SIZE = _EVENT.size
HDR_SIZE = ctypes.sizeof(abi.Hdr)
_OP_AT = abi.Hdr.op.offset
_NAMES = abi.flat_names(abi.Event)
_CHECK_FIELDS = ["op", "version", "size"]
_CGROUP_FIELDS = ["cgroup_id", "task_cgroup_id"]
_DECISION_FIELDS = _NAMES[_NAMES.index("rule_id") :]  # destination, verdict, comm
assert _DECISION_FIELDS[-1] == "comm" and "ts_ns" not in _DECISION_FIELDS


def _bytes(first: str, end: str | None = None) -> str:
    part = abi.span_of(abi.Event, first, end)
    return f"{part.stop - part.start}s"


def _skip(first: str, end: str | None = None) -> str:
    part = abi.span_of(abi.Event, first, end)
    return f"{part.stop - part.start}x"


# Two readings of an event. The group key: the header's checks, both cgroup ids, the
# task (pid, tid, uid, gid) and everything from the rule on, as four byte strings
# joined into one key. The record's own fields: clock, sequence, socket, repeats.
_HDR_CHECKS = abi.span_of(abi.Hdr, "op", "cpu")
_KEY_FORMAT = (
    f"{_HDR_CHECKS.stop}s{abi.Hdr.cpu.size}x" + _skip("ts_ns", "cgroup_id")
    + _bytes("cgroup_id", "sock_cookie") + _skip("sock_cookie", "pid")
    + _bytes("pid", "repeat_count") + _skip("repeat_count", "rule_id") + _bytes("rule_id")
)  # fmt: skip
_ROW_FIELDS = ["ts_ns", "seq", "sock_cookie", "repeat_first_ns", "repeat_seq_first", "repeat_count"]
_ROW_FORMAT = (
    _skip("hdr", "ts_ns") + abi.fields_format(abi.Event, _ROW_FIELDS[:2])
    + _skip("cgroup_id", "sock_cookie") + abi.fields_format(abi.Event, _ROW_FIELDS[2:5])
    + _skip("pid", "repeat_count") + abi.fields_format(abi.Event, _ROW_FIELDS[5:])
    + _skip("rule_id")
)  # fmt: skip
_KEY_ROW, _ROW = struct.Struct("=" + _KEY_FORMAT), struct.Struct("=" + _ROW_FORMAT)
# A uniform batch is read in one pass over the region, ring headers skipped.
_FRAME_PAD = f"{span(EVENT_SIZE) - HEADER - EVENT_SIZE}x"
_KEY_FRAMED = struct.Struct(f"={HEADER}x{_KEY_FORMAT}{_FRAME_PAD}")
_ROW_FRAMED = struct.Struct(f"={HEADER}x{_ROW_FORMAT}{_FRAME_PAD}")
assert _KEY_ROW.size == _ROW.size == EVENT_SIZE
# Where the task sits in a joined key; the rest of the key reads as fields with _KEY.
_TASK_AT = _HDR_CHECKS.stop + abi.Event.cgroup_id.size + abi.Event.task_cgroup_id.size
_TASK = struct.Struct("=" + abi.fields_format(abi.Event, ["pid", "tid", "uid", "gid"]))
_KEY_FIELDS = _CHECK_FIELDS + _CGROUP_FIELDS + _DECISION_FIELDS
_KEY = struct.Struct(
    "=" + abi.fields_format(abi.Hdr, _CHECK_FIELDS) + abi.fields_format(abi.Event, _CGROUP_FIELDS)
    + abi.fields_format(abi.Event, _DECISION_FIELDS)
)  # fmt: skip
_K = {name: i for i, name in enumerate(_KEY_FIELDS)}

# Record's positional order, as _template lays it out.
assert [f.name for f in msgspec.structs.fields(Record)][:34] == [
    "event_name", "ts", "bpf_ts_ns", "seq", "action", "mode", "reason", "would_deny",
    "cgroup_id", "task_cgroup_id", "l4_proto", "l4_proto_code", "ipv6", "ipv4_mapped", "nat64",
    "no_dst", "identity", "policy", "comm", "pid", "tid", "uid", "gid", "sock_cookie",
    "host_name", "container_id", "agent", "project", "rule", "dst_ip", "dst_port",
    "udp_connect", "family", "ethertype"]  # fmt: skip

_OPS = {abi.Op.CONNECT.value: EVENT_NAMES["connect"], abi.Op.SENDMSG.value: EVENT_NAMES["sendmsg"],
        abi.Op.SOCK_CREATE.value: EVENT_NAMES["sock_create"],
        abi.Op.PACKET.value: EVENT_NAMES["packet"]}  # fmt: skip
# Ops whose records name the family: no destination says it for them.
_FAMILY_OPS = {abi.Op.SOCK_CREATE.value, abi.Op.PACKET.value}
_FAMILIES = {f.value: f.name.lower() for f in abi.Family}
_ACTIONS = {a.value: a.name.lower() for a in abi.Action}
_MODES = {m.value: m.name.lower() for m in abi.Mode}
_REASONS = {r.value: r.name.lower() for r in abi.Reason}
_SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw", 4: "rdm", 5: "seqpacket", 10: "packet"}
AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
_F = abi.Flag
_MAPPED = int(_F.IPV4_MAPPED)  # a plain int: IntFlag arithmetic costs microseconds
_CACHE_LIMIT = 65536


def dst_ip(family: int, flags: int, daddr: bytes) -> str:
    if family == AF_INET:
        return socket.inet_ntop(AF_INET, daddr[:4])
    if flags & _MAPPED:
        return socket.inet_ntop(AF_INET, daddr[12:])
    return socket.inet_ntop(AF_INET6, daddr)


class _Memo(dict[Any, Any]):
    """A dict that computes missing values and forgets everything when it grows too big."""

    def __init__(self, compute: Callable[[Any], Any]) -> None:
        super().__init__()
        self._compute = compute

    def __missing__(self, key: Any) -> Any:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        value = self[key] = self._compute(key)
        return value


# What a record's static part decodes to: the event name, the 15 fields after
# `seq` (Record's `action` to `comm`), the 6 optional fields (rule, address, port,
# udp_connect, family, ethertype), and which enums were unknown.
Head = tuple[str, str, str, bool, str, str, str, int, bool, bool, bool, bool, str, str, str]
Tail = tuple[str | None, str | None, str | None, bool | None, str | None, str | None]
Static = tuple[str, Head, Tail, tuple[str, ...]]


DecodeOne = Callable[[bytes], RingItem | None]


class Decoder:
    """Turns raw ring records into ring items; keeps counts of what it could not decode."""

    def __init__(
        self,
        rule_name: Callable[[int], str | None],
        policy_name: Callable[[int], str],
        host_name: str = "",
    ) -> None:
        self.host_name = host_name
        self.rule_name = rule_name
        self.policy_name = policy_name
        self.skipped: collections.Counter[str] = collections.Counter()
        self.unknown: collections.Counter[str] = collections.Counter()
        self._offset = boot_to_wall_ns()
        self._statics: dict[bytes, Static | str] = {}
        self.kinds: dict[int, DecodeOne] = dict.fromkeys(_OPS, self._event)

    def now(self) -> str:
        """The wall clock now, formatted as record timestamps are."""
        return timestamp(time.clock_gettime_ns(time.CLOCK_REALTIME))

    def timestamp(self, boot_ns: int) -> str:
        """A kernel (CLOCK_BOOTTIME) time, formatted as record timestamps are."""
        return timestamp(boot_ns + self._offset)

    def resync_clock(self) -> None:
        """Re-read the boot->wall offset (wall time may have been stepped)."""
        self._offset = boot_to_wall_ns()

    def _static(self, v: tuple[Any, ...]) -> Static | str:
        """Everything that follows from a record's static fields, or why it is skipped."""
        if v[_K["version"]] != abi.ABI_VERSION:
            return "version"
        if v[_K["op"]] not in _OPS:
            return "unknown_op"
        if v[_K["size"]] != EVENT_SIZE:
            return "size"
        unknown: list[str] = []

        def name(table: dict[int, str], field: str) -> str:
            value = v[_K[field]]
            if value in table:
                return table[value]
            unknown.append(field)
            return f"unknown({value})"

        flags, rule_id = v[_K["flags"]], v[_K["rule_id"]]
        no_dst = bool(flags & _F.NO_DST)
        head = (
            name(_ACTIONS, "action"), name(_MODES, "mode"), name(_REASONS, "reason"),
            bool(flags & _F.WOULD_DENY), str(v[_K["cgroup_id"]]), str(v[_K["task_cgroup_id"]]),
            name(_SOCK_TYPES, "sock_type"), v[_K["sock_type"]], bool(flags & _F.IPV6),
            bool(flags & _F.IPV4_MAPPED), bool(flags & _F.NAT64), no_dst, str(rule_id),
            self.policy_name(v[_K["policy_id"]]),
            v[_K["comm"]].split(b"\0", 1)[0].decode(errors="replace"),
        )  # fmt: skip
        op, family = v[_K["op"]], v[_K["family"]]
        frame = op == abi.Op.PACKET and family == abi.Family.PACKET
        tail = (
            self.rule_name(rule_id) if rule_id else None,
            None if no_dst else dst_ip(family, flags, v[_K["daddr"]]),
            None if no_dst else str(v[_K["dport"]]),
            True if flags & _F.UDP_CONNECT else None,
            name(_FAMILIES, "family") if op in _FAMILY_OPS else None,
            f"0x{v[_K['protocol']]:04x}" if frame else None,
        )
        return _OPS[v[_K["op"]]], head, tail, tuple(unknown)

    def _template(self, key: bytes) -> Group | str:
        """A new group for a joined key (see _KEY_FORMAT), or why its records are skipped."""
        pid, tid, uid, gid = _TASK.unpack_from(key, _TASK_AT)
        static_key = key[:_TASK_AT] + key[_TASK_AT + _TASK.size :]
        static = self._statics.get(static_key)
        if static is None:
            if len(self._statics) >= _CACHE_LIMIT:
                self._statics.clear()
            static = self._statics[static_key] = self._static(_KEY.unpack(static_key))
        if isinstance(static, str):
            return static
        event_name, head, tail, unknown = static
        template = Record(
            event_name, "", 0, 0, *head, pid, tid, uid, gid, 0, self.host_name, "", "", "", *tail
        )
        return Group(template, unknown=unknown)

    def _decisions(self, region: memoryview, keys: struct.Struct, rows: struct.Struct) -> Decisions:
        """The decision events that fill `region`, read with `keys` and `rows`."""
        groups = _Memo(self._template)
        keyed = map(b"".join, keys.iter_unpack(region))
        refs: list[Group | str] = list(map(groups.__getitem__, keyed))
        counts = collections.Counter(refs)
        index: Sequence[int] = range(len(refs))
        if any(isinstance(g, str) for g in groups.values()):
            index = [i for i, g in enumerate(refs) if type(g) is Group]
            refs = [refs[i] for i in index]
        for group, n in counts.items():
            if isinstance(group, str):
                self.skipped[group] += n
                continue
            group.count = n
            for kind in group.unknown:
                self.unknown[kind] += n
        kept = [g for g in groups.values() if type(g) is Group]
        return Decisions(region, rows, cast(list[Group | Record], refs), kept, self._offset, index)

    def _event(self, raw: bytes) -> RingItem | None:
        if len(raw) < EVENT_SIZE:
            self.skipped["short"] += 1
            return None
        decisions = self._decisions(memoryview(raw)[:EVENT_SIZE], _KEY_ROW, _ROW)
        return decisions[0] if decisions else None

    def decode(self, raw: bytes) -> RingItem | None:
        if len(raw) < HDR_SIZE:
            self.skipped["short"] += 1
            return None
        kind = self.kinds.get(raw[_OP_AT])
        if kind is None:
            self.skipped["unknown_op"] += 1
            return None
        return kind(raw)

    def decode_batch(self, raws: Iterable[bytes]) -> Sequence[RingItem]:
        """Every decodable record of `raws`, in order.

        A ring Batch of decision events only (`uniform`) becomes one Decisions,
        read in two passes over its bytes; anything else goes record by record
        through the op table.
        """
        if isinstance(raws, Batch) and raws.uniform == EVENT_SIZE:
            region = memoryview(raws.data)[: len(raws) * _KEY_FRAMED.size]
            return self._decisions(region, _KEY_FRAMED, _ROW_FRAMED)
        return [r for r in map(self.decode, raws) if r is not None]

    def decode_all(self, raws: Iterable[bytes]) -> list[RingItem]:
        """`decode_batch` with every record built: for callers that keep a few."""
        return list(self.decode_batch(raws))
