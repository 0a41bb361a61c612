"""Ring bytes -> Records. Defensive: a short, foreign or unknown record is counted
by kind and skipped, never raised; an unknown enum value decodes as
`unknown(N)` and is counted.

This is the agent's hot path, so per-record work is table lookups: field
positions come from abi.py once, flag bytes index a precomputed table, and
strings that repeat (cgroup ids, rules, addresses) come from small caches.
"""

from __future__ import annotations

import collections
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

from netlogger.kernel import abi
from netlogger.kernel.ringbuf import HEADER, Batch, span
from netlogger.pipeline.record import EVENT_NAMES, Record

_EVENT = abi.unpacker(abi.Event)
EVENT_SIZE = _EVENT.size
# A uniform batch is unpacked in one pass: ring header skipped, then the event.
_FRAMED = struct.Struct(
    "=" + "x" * HEADER + _EVENT.format[1:] + "x" * (span(EVENT_SIZE) - HEADER - EVENT_SIZE)
)
_NAMES = abi.flat_names(abi.Event)
(OP, VERSION, SIZE, TS, SEQ, CGROUP, TASK_CGROUP, COOKIE, PID, TID, UID, GID, RULE, POLICY,
 DADDR, DPORT, FAMILY, SOCK_TYPE, ACTION, MODE, REASON, FLAGS, COMM) = (
    _NAMES.index(n) for n in (
        "op", "version", "size", "ts_ns", "seq", "cgroup_id", "task_cgroup_id", "sock_cookie",
        "pid", "tid", "uid", "gid", "rule_id", "policy_id", "daddr", "dport", "family",
        "sock_type", "action", "mode", "reason", "flags", "comm",
    )
)  # fmt: skip

_OPS = {abi.Op.CONNECT.value: EVENT_NAMES["connect"], abi.Op.SENDMSG.value: EVENT_NAMES["sendmsg"],
        abi.Op.SOCK_CREATE.value: EVENT_NAMES["sock_create"]}  # fmt: skip
_ACTIONS = {a.value: a.name.lower() for a in abi.Action}
_MODES = {m.value: m.name.lower() for m in abi.Mode}
_REASONS = {r.value: r.name.lower() for r in abi.Reason}
_SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw"}
AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
_F = abi.Flag
_MAPPED = int(_F.IPV4_MAPPED)  # a plain int: IntFlag arithmetic costs microseconds
# flags byte -> (ipv6, ipv4_mapped, nat64, no_dst, would_deny)
_FLAG_TABLE = [
    tuple(bool(b & f) for f in (_F.IPV6, _F.IPV4_MAPPED, _F.NAT64, _F.NO_DST, _F.WOULD_DENY))
    for b in range(256)
]
_CACHE_LIMIT = 65536


def boot_to_wall_ns() -> int:
    """Add to a CLOCK_BOOTTIME reading to get wall-clock nanoseconds."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class Rfc3339:
    """Formats wall-clock ns as RFC 3339 UTC; the seconds part is cached per second."""

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def __call__(self, wall_ns: int) -> str:
        sec, frac = divmod(wall_ns, 1_000_000_000)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{frac:09d}Z"


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


class Decoder:
    """Turns raw ring records into Records; keeps counts of what it could not decode."""

    def __init__(
        self,
        rule_name: Callable[[int], str | None],
        policy_name: Callable[[int], str],
        host_name: str = "",
    ) -> None:
        self.host_name = host_name
        self.skipped: collections.Counter[str] = collections.Counter()
        self.unknown: collections.Counter[str] = collections.Counter()
        self._offset = boot_to_wall_ns()
        self._ts = Rfc3339()
        self._ids = _Memo(str)
        self._rules = _Memo(lambda rid: (str(rid), rule_name(rid) if rid else None))
        self._policies = _Memo(policy_name)
        self._addrs = _Memo(lambda key: dst_ip(*key))
        self._comms = _Memo(lambda raw: raw.split(b"\0", 1)[0].decode(errors="replace"))

    def now(self) -> str:
        """The wall clock now, formatted as record timestamps are."""
        return self._ts(time.clock_gettime_ns(time.CLOCK_REALTIME))

    def resync_clock(self) -> None:
        """Re-read the boot->wall offset (wall time may have been stepped)."""
        self._offset = boot_to_wall_ns()

    def forget_names(self) -> None:
        """Drop cached rule and policy names (after a policy change)."""
        self._rules.clear()
        self._policies.clear()

    def _enum(self, table: dict[int, str], value: int, kind: str) -> str:
        name = table.get(value)
        if name is None:
            self.unknown[kind] += 1
            return f"unknown({value})"
        return name

    def _valid(self, v: tuple[Any, ...]) -> bool:
        if v[VERSION] != abi.ABI_VERSION:
            self.skipped["version"] += 1
        elif v[OP] not in _OPS:
            self.skipped["unknown_op"] += 1
        elif v[SIZE] != EVENT_SIZE:
            self.skipped["size"] += 1
        else:
            return True
        return False

    def _record(self, v: tuple[Any, ...]) -> Record:
        ipv6, mapped, nat64, no_dst, would_deny = _FLAG_TABLE[v[FLAGS]]
        identity, rule = self._rules[v[RULE]]
        ts_ns, sock_type = v[TS], v[SOCK_TYPE]
        action = _ACTIONS.get(v[ACTION]) or self._enum(_ACTIONS, v[ACTION], "action")
        return Record(
            event_name=_OPS[v[OP]],
            ts=self._ts(ts_ns + self._offset),
            action=action,
            mode=_MODES.get(v[MODE]) or self._enum(_MODES, v[MODE], "mode"),
            reason=_REASONS.get(v[REASON]) or self._enum(_REASONS, v[REASON], "reason"),
            would_deny=would_deny,
            cgroup_id=self._ids[v[CGROUP]],
            task_cgroup_id=self._ids[v[TASK_CGROUP]],
            bpf_ts_ns=ts_ns,
            seq=v[SEQ],
            l4_proto=_SOCK_TYPES.get(sock_type) or self._enum({}, sock_type, "sock_type"),
            l4_proto_code=sock_type,
            ipv6=ipv6,
            ipv4_mapped=mapped,
            nat64=nat64,
            no_dst=no_dst,
            identity=identity,
            policy=self._policies[v[POLICY]],
            pid=v[PID],
            tid=v[TID],
            comm=self._comms[v[COMM]],
            uid=v[UID],
            gid=v[GID],
            sock_cookie=v[COOKIE],
            host_name=self.host_name,
            rule=rule,
            dst_ip=None if no_dst else self._addrs[v[FAMILY], v[FLAGS] & _MAPPED, v[DADDR]],
            dst_port=None if no_dst else self._ids[v[DPORT]],
        )

    def decode(self, raw: bytes) -> Record | None:
        if len(raw) < EVENT_SIZE:
            self.skipped["short"] += 1
            return None
        v = _EVENT.unpack_from(raw)
        return self._record(v) if self._valid(v) else None

    def decode_all(self, raws: Iterable[bytes]) -> list[Record]:
        if isinstance(raws, Batch) and raws.uniform == EVENT_SIZE:
            region = memoryview(raws.data)[: len(raws) * _FRAMED.size]
            valid, record = self._valid, self._record
            return [record(v) for v in _FRAMED.iter_unpack(region) if valid(v)]
        return [r for r in map(self.decode, raws) if r is not None]
