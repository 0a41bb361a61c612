"""The loss ledger: every record lost anywhere, counted once, in one place.

The kernel counts, per enrolled cgroup, allowed records its token bucket
dropped and records a full ring refused (for decisions, and for DNS records
in a sequence of their own), and per CPU the decisions it found no state
for. What has been reported is pinned beside those counters
(nl_reported), and it moves only once every durable sink has written the gap
(`Report.commit`): a crash at any instant either re-reports a loss or had
already written it. Losses in the agent (a full sink queue, a failed write,
an undecodable record, a spool eviction) are counted here as their gap
records are made.

`status`, the metrics and the gap records all read `totals`, under one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from netlogger.kernel import abi
from netlogger.kernel.plane import Plane
from netlogger.pipeline.enrich import Attribution
from netlogger.pipeline.record import EVENT_NAMES, GAP_KINDS, Gap

NO_CGROUP = 0  # the nl_reported key of losses not tied to a cgroup

# (gap kind, counter in nl_cgroup_state and nl_reported, its seq mark in nl_reported,
# the nl_cgroup_state sequence its records are numbered in)
_KINDS = (
    ("throttled", "throttled", "throttled_seq", "seq"),
    ("ringbuf_full", "ringbuf_lost", "ringbuf_lost_seq", "seq"),
    ("dns_throttled", "dns_throttled", "dns_throttled_seq", "dns_seq"),
    ("dns_ringbuf_full", "dns_ringbuf_lost", "dns_ringbuf_lost_seq", "dns_seq"),
)


@dataclass
class Report:
    """Gap records for new losses, and what to pin once they are written."""

    gaps: list[Gap] = field(default_factory=list)
    commit: Callable[[], None] = lambda: None  # once every durable sink has written `gaps`


class LossLedger:
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
        self._lock = threading.Lock()
        self._totals = dict.fromkeys(GAP_KINDS, 0)  # reported by this agent, by gap kind
        # Reported in gaps not yet written everywhere: the baseline of the next collect.
        self._pending: dict[int, abi.Reported] = {}
        self._undecodable = 0  # decoder skips already reported
        self._sources: dict[str, Callable[[], int]] = {}

    # -- reading ----------------------------------------------------------

    def totals(self) -> dict[str, int]:
        """Records lost, by gap kind: what the gap records report."""
        with self._lock:
            out = dict(self._totals)
        for kind, source in self._sources.items():
            out[kind] += source()
        return out

    def add_source(self, kind: str, count: Callable[[], int]) -> None:
        """A loss kind that a component counts itself (and reports in its own gaps)."""
        self._sources[kind] = count

    def kernel_no_state(self) -> int:
        return sum(c.no_state for c in self._plane.cpu_loss.values())

    def per_cpu_ring_losses(self) -> int:
        return sum(c.ringbuf_lost for c in self._plane.cpu_loss.values())

    # -- agent-side losses ------------------------------------------------

    def count(self, gaps: Iterable[Gap]) -> None:
        """Gaps the pipeline made for records it lost itself."""
        with self._lock:
            for gap in gaps:
                self._totals[gap.gap_kind] += gap.gap_count

    # -- kernel losses ----------------------------------------------------

    def _baseline(self, key: int) -> abi.Reported:
        pending = self._pending.get(key)
        if pending is not None:
            return pending
        return self._plane.reported.lookup(key) or abi.Reported()

    def _gap(self, kind: str, count: int, cgroup_id: int | None = None, **seqs: int) -> Gap:
        gap = Gap(
            event_name=EVENT_NAMES["gap"],
            ts=self._clock(),
            gap_kind=kind,
            gap_count=count,
            host_name=self._host,
        )
        if cgroup_id is not None:
            who = self._attribution(cgroup_id)
            gap.cgroup_id = str(cgroup_id)
            gap.container_id, gap.agent, gap.project = who.container_id, who.agent, who.project
            gap.gap_seq_first, gap.gap_seq_last = seqs["first"], seqs["last"]
        return gap

    def _cgroup(self, cgroup_id: int, counters: abi.CgroupState, gaps: list[Gap]) -> abi.Reported:
        """Gaps for one cgroup's new losses; returns the marks to pin once they are written."""
        base = self._baseline(cgroup_id)
        mark = abi.Reported.from_buffer_copy(base)
        now: abi.CgroupState | None = None
        for kind, counter, seq_field, sequence in _KINDS:
            new = getattr(counters, counter) - getattr(base, counter)
            if new <= 0:
                continue
            if now is None:
                # Read after the counters: the kernel takes a seq before it counts its
                # loss, so every loss counted above has a seq below this one.
                now = self._plane.cgroup_state.lookup(cgroup_id) or counters
            seq = getattr(now, sequence)
            first = getattr(base, seq_field)
            gaps.append(self._gap(kind, new, cgroup_id, first=first, last=seq - 1))
            self._totals[kind] += new
            setattr(mark, counter, getattr(counters, counter))
            setattr(mark, seq_field, seq)
        return mark

    def collect(self, only: int | None = None, undecodable: int = 0) -> Report:
        """Gaps for losses not reported yet (of every cgroup, or just `only`).

        `undecodable` is the decoder's running count of records it skipped.
        """
        gaps: list[Gap] = []
        marks: dict[int, abi.Reported] = {}
        with self._lock:
            for cgroup_id, counters in self._plane.cgroup_state.items():
                if only is not None and cgroup_id != only:
                    continue
                before = len(gaps)
                mark = self._cgroup(cgroup_id, counters, gaps)
                if len(gaps) > before:
                    marks[cgroup_id] = self._pending[cgroup_id] = mark
            if only is None:
                no_state = self.kernel_no_state()
                base = self._baseline(NO_CGROUP)
                if no_state > base.no_state:
                    gaps.append(self._gap("no_state", no_state - base.no_state))
                    self._totals["no_state"] += no_state - base.no_state
                    mark = abi.Reported.from_buffer_copy(base)
                    mark.no_state = no_state
                    marks[NO_CGROUP] = self._pending[NO_CGROUP] = mark
            if undecodable > self._undecodable:
                gaps.append(self._gap("undecodable", undecodable - self._undecodable))
                self._totals["undecodable"] += undecodable - self._undecodable
                self._undecodable = undecodable
        return Report(gaps, lambda: self._commit(marks))

    def recover(self, written: Iterable[Gap]) -> None:
        """After a crash: pin the marks of kernel-loss gaps the file holds but whose commit
        the crash prevented, so they are not reported twice.

        A durable lane commits right after it writes, so such gaps are among the
        file's last lines; a written gap ends where its commit would have put the mark.
        """
        seq_fields = {kind: (counter, seq) for kind, counter, seq, _ in _KINDS}
        with self._lock:
            for gap in written:
                fields = seq_fields.get(gap.gap_kind)
                if fields is None or gap.cgroup_id is None or gap.gap_seq_last is None:
                    continue
                counter, seq_field = fields
                key = int(gap.cgroup_id)
                pinned = self._plane.reported.lookup(key) or abi.Reported()
                mark = getattr(pinned, seq_field)
                if gap.gap_seq_first is None or not gap.gap_seq_first >= mark:
                    continue  # committed already
                setattr(pinned, seq_field, gap.gap_seq_last + 1)
                setattr(pinned, counter, getattr(pinned, counter) + gap.gap_count)
                self._plane.reported.update(key, pinned)

    def _commit(self, marks: dict[int, abi.Reported]) -> None:
        """The gaps of `marks` are written: pin them, never moving a mark back."""
        plane = self._plane
        with self._lock:
            for key, mark in marks.items():
                if key != NO_CGROUP and plane.cgroup_state.lookup(key) is None:
                    continue  # forgotten meanwhile: its cgroup is gone
                pinned = plane.reported.lookup(key) or abi.Reported()
                for name, *_ in abi.Reported._fields_:
                    setattr(mark, name, max(getattr(mark, name), getattr(pinned, name)))
                plane.reported.update(key, mark)
                if self._pending.get(key) is mark:
                    del self._pending[key]

    def forget(self, cgroup_id: int) -> None:
        with self._lock:
            self._pending.pop(cgroup_id, None)
