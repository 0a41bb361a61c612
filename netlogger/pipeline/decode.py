"""Ring bytes -> Record. Defensive: a short, foreign or unknown record is
counted by kind and skipped, never raised; an unknown enum value decodes as
`unknown(N)` and is counted.
"""

from __future__ import annotations

import collections
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from netlogger.kernel import abi
from netlogger.pipeline.record import EVENT_NAMES, Record

_EVENT = abi.unpacker(abi.Event)
# Named access to the unpacked tuple, in the order abi.Event states.
RawEvent = collections.namedtuple("RawEvent", abi.flat_names(abi.Event))  # type: ignore[misc]
_HDR = abi.unpacker(abi.Hdr)
EVENT_SIZE = _EVENT.size

_OPS = {
    abi.Op.CONNECT: EVENT_NAMES["connect"],
    abi.Op.SENDMSG: EVENT_NAMES["sendmsg"],
    abi.Op.SOCK_CREATE: EVENT_NAMES["sock_create"],
}
_ACTIONS = {a.value: a.name.lower() for a in abi.Action}
_MODES = {m.value: m.name.lower() for m in abi.Mode}
_REASONS = {r.value: r.name.lower() for r in abi.Reason}
_SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw"}
AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
_F = abi.Flag


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
    if flags & _F.IPV4_MAPPED:
        return socket.inet_ntop(AF_INET, daddr[12:])
    return socket.inet_ntop(AF_INET6, daddr)


class Decoder:
    """Turns raw ring records into Records; keeps counts of what it could not decode."""

    def __init__(
        self,
        rule_name: Callable[[int], str | None],
        policy_name: Callable[[int], str],
        host_name: str = "",
    ) -> None:
        self.rule_name = rule_name
        self.policy_name = policy_name
        self.host_name = host_name
        self.skipped: collections.Counter[str] = collections.Counter()
        self.unknown: collections.Counter[str] = collections.Counter()
        self._offset = boot_to_wall_ns()
        self._ts = Rfc3339()

    def resync_clock(self) -> None:
        """Re-read the boot->wall offset (wall time may have been stepped)."""
        self._offset = boot_to_wall_ns()

    def _enum(self, table: dict[int, str], value: int, kind: str) -> str:
        name = table.get(value)
        if name is None:
            self.unknown[kind] += 1
            return f"unknown({value})"
        return name

    def _check(self, raw: bytes) -> bool:
        if len(raw) < _HDR.size:
            self.skipped["short"] += 1
            return False
        op, version, size, _cpu = _HDR.unpack_from(raw)
        if version != abi.ABI_VERSION:
            self.skipped["version"] += 1
        elif op not in _OPS:
            self.skipped["unknown_op"] += 1
        elif size != EVENT_SIZE or len(raw) < EVENT_SIZE:
            self.skipped["size"] += 1
        else:
            return True
        return False

    def decode(self, raw: bytes) -> Record | None:
        if not self._check(raw):
            return None
        v: Any = RawEvent._make(_EVENT.unpack_from(raw))
        flags, rule_id, ts_ns, sock_type = v.flags, v.rule_id, v.ts_ns, v.sock_type
        no_dst = bool(flags & _F.NO_DST)
        return Record(
            event_name=_OPS[v.op],
            ts=self._ts(ts_ns + self._offset),
            action=self._enum(_ACTIONS, v.action, "action"),
            mode=self._enum(_MODES, v.mode, "mode"),
            reason=self._enum(_REASONS, v.reason, "reason"),
            would_deny=bool(flags & _F.WOULD_DENY),
            cgroup_id=str(v.cgroup_id),
            task_cgroup_id=str(v.task_cgroup_id),
            bpf_ts_ns=ts_ns,
            seq=v.seq,
            l4_proto=_SOCK_TYPES.get(sock_type) or self._enum({}, sock_type, "sock_type"),
            l4_proto_code=sock_type,
            ipv6=bool(flags & _F.IPV6),
            ipv4_mapped=bool(flags & _F.IPV4_MAPPED),
            nat64=bool(flags & _F.NAT64),
            no_dst=no_dst,
            identity=str(rule_id),
            policy=self.policy_name(v.policy_id),
            pid=v.pid,
            tid=v.tid,
            comm=v.comm.split(b"\0", 1)[0].decode(errors="replace"),
            uid=v.uid,
            gid=v.gid,
            sock_cookie=v.sock_cookie,
            host_name=self.host_name,
            rule=self.rule_name(rule_id) if rule_id else None,
            dst_ip=None if no_dst else dst_ip(v.family, flags, v.daddr),
            dst_port=None if no_dst else str(v.dport),
        )

    def decode_all(self, raws: Iterable[bytes]) -> list[Record]:
        return [r for r in map(self.decode, raws) if r is not None]
