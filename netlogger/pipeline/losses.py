"""Kernel loss counters -> Gap records for what is new since the last report.

The kernel counts, per enrolled cgroup, allowed records its token bucket
dropped and records a full ring refused. What the agent has already reported
is pinned beside those counters (nl_reported), so an agent that restarts
reports each lost record exactly once.
"""

from __future__ import annotations

from collections.abc import Callable

from netlogger.kernel import abi
from netlogger.kernel.plane import Plane
from netlogger.pipeline.enrich import Attribution
from netlogger.pipeline.record import EVENT_NAMES, Gap

_KINDS = (("throttled", "throttled"), ("ringbuf_full", "ringbuf_lost"))


class KernelLosses:
    def __init__(
        self,
        plane: Plane,
        clock: Callable[[], str],
        host_name: str,
        attribution: Callable[[int], Attribution],
    ) -> None:
        self._plane = plane
        self._clock = clock
        self._host = host_name
        self._attribution = attribution
        self.totals = {kind: 0 for kind, _ in _KINDS}  # what this agent has reported

    def _gap(self, cgroup_id: int, kind: str, count: int, first: int, last: int) -> Gap:
        who = self._attribution(cgroup_id)
        return Gap(
            event_name=EVENT_NAMES["gap"],
            ts=self._clock(),
            gap_kind=kind,
            gap_count=count,
            gap_seq_first=first,
            gap_seq_last=last,
            cgroup_id=str(cgroup_id),
            host_name=self._host,
            container_id=who.container_id,
            agent=who.agent,
            project=who.project,
        )

    def collect(self, only: int | None = None) -> list[Gap]:
        """Gaps for losses not reported yet (of every cgroup, or just `only`)."""
        gaps: list[Gap] = []
        plane = self._plane
        for cgroup_id, state in plane.cgroup_state.items():
            if only is not None and cgroup_id != only:
                continue
            seen = plane.reported.lookup(cgroup_id) or abi.Reported()
            if state.seq == seen.seq:
                continue
            for kind, counter in _KINDS:
                new = getattr(state, counter) - getattr(seen, counter)
                if new > 0:
                    gaps.append(self._gap(cgroup_id, kind, new, seen.seq, state.seq - 1))
                    self.totals[kind] += new
            plane.reported.update(
                cgroup_id, abi.Reported(state.throttled, state.ringbuf_lost, state.seq)
            )
        return gaps

    def per_cpu_ring_losses(self) -> int:
        return sum(c.ringbuf_lost for c in self._plane.cpu_loss.values())
