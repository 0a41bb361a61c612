"""What the agent reports about itself: the `status` reply and the metrics snapshot.

Both read the same live parts (enforcer, pump, fan-out, plane) at the moment
they are asked; nothing here changes them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from netlogger import __version__, coverage, privileges, resolvers
from netlogger.backstop import Backstop
from netlogger.container_watch import ContainerWatch
from netlogger.enforce import Enforcer, Enrolled
from netlogger.errors import KernelError
from netlogger.kernel import cgroup
from netlogger.kernel.plane import Plane
from netlogger.metrics import Snapshot
from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.pump import Pump
from netlogger.pipeline.record import EVENT_NAMES, GAP_KINDS
from netlogger.sinks.base import status_of

DNS_EVENT = EVENT_NAMES["dns"]


@dataclass(frozen=True)
class AgentInfo:
    """How this agent was started, as `status` names it."""

    host: str
    pin_root: Path
    control_socket: Path
    metrics: str | None
    started: float  # time.time() at start
    pid: int


def _has_net_raw(cg: Path) -> bool:
    """Does any task in `cg` or below hold CAP_NET_RAW (and so could open AF_PACKET)?"""
    for procs in cg.rglob("cgroup.procs"):
        for pid in procs.read_text().split():
            with contextlib.suppress(OSError):
                caps = privileges.effective(Path(f"/proc/{pid}/status"))
                if caps >> privileges.CAP_NET_RAW & 1:
                    return True
    return False


def entry_view(entry: Enrolled, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An enrolled cgroup as `status`, `enroll`, `bypass`, `enforce` and `unenroll` show it.

    The one place that decides `raw_capable`, so every command says the same about it.
    """
    view = asdict(entry)
    view["raw_capable"] = bool(entry.path) and _has_net_raw(Path(entry.path))
    if entry.path:  # lookups its tasks make where the kernel cannot see them
        view["resolver_paths"] = resolvers.of_cgroup(Path(entry.path))
    if names is not None and entry.container_id in names:
        view["container_name"] = names[entry.container_id]
    return view


def _by_action(counts: dict[tuple[str, str], int]) -> dict[str, int]:
    """Decisions by action (DNS answers are not decisions: `dns` counts them)."""
    out: dict[str, int] = {}
    for (event, action), n in counts.items():
        if event != EVENT_NAMES["dns"]:
            out[action] = out.get(action, 0) + n
    return out


class Reporter:
    def __init__(
        self,
        info: AgentInfo,
        plane: Plane,
        enforcer: Enforcer,
        pump: Pump,
        fanout: Fanout,
        backstop: Backstop,
        dns: Callable[[], dict[str, Any]] = dict,
        names: Mapping[str, str] | None = None,
        watch: ContainerWatch | None = None,
    ) -> None:
        self.info = info
        self.backstop = backstop
        self.names = names if names is not None else {}  # container id -> name
        self.watch = watch
        self.plane = plane
        self.enforcer = enforcer
        self.pump = pump
        self.fanout = fanout
        self.ready = False  # the metrics server answers before start-up is through
        self.dns = dns  # the DNS observation's own figures (cache, unreadable answers)

    def _sink_states(self) -> dict[str, dict[str, Any]]:
        return {s.name: status_of(s) for s in self.fanout.sinks()}

    def _losses(self) -> dict[str, int]:
        """The loss ledger's totals: what the gap records report, kind by kind."""
        return dict.fromkeys(GAP_KINDS, 0) | self.pump.losses.totals()

    def entry(self, entry: Enrolled) -> dict[str, Any]:
        """An enrolled cgroup as every command shows it, with the layers that cover it."""
        item = entry_view(entry, self.names)
        layers = self.plane.layers
        is_container = bool(entry.container_id)
        veths = [v.name for v in self.backstop.veths_of(entry.container_id)]
        item["veths"] = veths
        item["layers"] = coverage.covering(layers, is_container, veths)
        item["open"] = coverage.open_holes(layers, is_container, veths)
        flags = self.watch.flags(entry.container_id) if self.watch else None
        item["escape"] = flags.escape if flags else None
        item["policy_reason"] = flags.policy_reason if flags else None
        return item

    def status(self) -> dict[str, Any]:
        info = self.info
        layers = self.plane.layers
        enrolled = [self.entry(e) for e in self.enforcer.enrolled()]
        states = self._sink_states()
        containers = self.watch.status() if self.watch else None
        return {
            "agent": {
                "pid": info.pid,
                "version": __version__,
                "host": info.host,
                "uptime_s": round(time.time() - info.started, 1),
                "pin_root": str(info.pin_root),
                "scope": str(self.plane.scope.path),
                "control_socket": str(info.control_socket),
                "metrics": info.metrics,
            },
            "enrolled": enrolled,
            "records": {
                "read": self.pump.read,
                "by_action": _by_action(self.pump.counts),
                "unknown_enum": self.pump.unknown_enums(),
            },
            "dns": {
                "answers": sum(n for (e, _), n in self.pump.counts.items() if e == DNS_EVENT),
                **self.dns(),
            },
            "losses": self._losses(),
            "ring": {
                "size": self.plane.ring_bytes,
                "pending_bytes": self.pump.reader.pending_bytes(),
                "cpu_ringbuf_lost": self.pump.losses.per_cpu_ring_losses(),
                "no_state": self.pump.losses.kernel_no_state(),
            },
            "sinks": [
                {**asdict(lane), **states.get(lane.name, {})} for lane in self.fanout.stats()
            ],
            "tail_subscribers": self.fanout.subscribers(),
            "layers": layers,
            "containers": containers,
            "notes": [
                *coverage.notes(layers, self.plane.scope.path, cgroup.root().path),
                *(containers["notes"] if containers else []),
            ],
        }

    def snapshot(self) -> Snapshot:
        try:
            programs = self.plane.program_stats()
        except KernelError:
            programs = {}
        states = self._sink_states()
        return Snapshot(
            records=dict(self.pump.counts),
            unknown_enums=self.pump.unknown_enums(),
            losses=self._losses(),
            lanes=self.fanout.stats(),
            sink_states={n: str(s["state"]) for n, s in states.items() if s.get("state")},
            programs=programs,
            enrolled=len(self.enforcer.enrolled()),
            ring_pending_bytes=self.pump.reader.pending_bytes(),
            ring_size_bytes=self.plane.ring_bytes,
            subscribers=self.fanout.subscribers(),
            **self._container_metrics(),
        )

    def _container_metrics(self) -> dict[str, int]:
        if self.watch is None:
            return {}
        containers = self.watch.status()["containers"]
        return {
            "engine_up": int(self.watch.state == "connected"),
            "containers_flagged": sum(1 for c in containers if c["escapes"]),
        }
