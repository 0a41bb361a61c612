"""Records -> every sink and every `tail` subscriber, none able to stall the others.

Each sink gets a lane: a bounded queue (counted in records) and a worker thread
that calls `export`. A lane that is full drops the incoming batch and counts
it; the loss becomes a Gap record that every lane receives. Gap records never
wait behind the bound: a lane keeps them aside, coalesced, and exports them
before its next batch, so loss reports cannot themselves be lost. Control
records (the audit trail) join the queue past its bound, in order with the
decisions around them: they are few, and an audit trail that drops entries
under load is no audit trail (a sink that fails on them reports the loss).

Ring positions ride along with batches. A lane whose sink is `durable` (see
sinks/base.py) reports how far it has written; the reader releases ring space
only up to there, so a crash leaves unwritten records in the ring. While a
durable lane holds gaps it could not write yet, it reports no further: records
a failed write lost are released only once the gap that counts them is in the
file, and a crash before that delivers them again instead. A gap whose write
fails is kept and tried again, never dropped.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from netlogger.pipeline.decisions import Decisions
from netlogger.pipeline.record import (
    EVENT_NAMES,
    Control,
    DnsRecord,
    Gap,
    Item,
    Record,
    RingItem,
)
from netlogger.sinks.base import PartialExport, Sink

log = logging.getLogger("netlogger.fanout")

Clock = Callable[[], str]  # RFC 3339 "now", for gap records made here
RETRY_SECONDS = 0.5  # between tries of gap records a sink failed to take


class _Commit:
    """Runs `done` once every durable lane has written the gaps it came with."""

    def __init__(self, lanes: int, done: Callable[[], None]) -> None:
        self._left = lanes
        self._done = done
        self._lock = threading.Lock()

    def written(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._done()


@dataclass
class _Batch:
    items: Sequence[Item]
    position: int | None  # ring position after these records, when they came from the ring


def _loss_gaps(items: Sequence[Item], kind: str, sink: str, now: str) -> list[Gap]:
    """One Gap per cgroup and sequence for ring items that `sink` lost, with their seq range.

    A folded record stands for its repeats too: they count, and its range starts at
    its first repeat. DNS records count in a sequence of their own, so their losses
    are gaps of their own kind (`dns_` + kind). Lost control records have no seq: they
    are one Gap not tied to a cgroup.
    """
    if isinstance(items, Decisions):
        return [
            _gap(kind, sink, now, cg, n, low, high, rec)
            for cg, (n, low, high, rec) in items.losses().items()
        ]
    by_cgroup: dict[tuple[str, bool], list[RingItem]] = collections.defaultdict(list)
    controls = [item for item in items if isinstance(item, Control)]
    for item in items:
        if not isinstance(item, Gap | Control):
            by_cgroup[item.cgroup_id, item.__class__ is DnsRecord].append(item)
    unseq = (
        [Gap(event_name=EVENT_NAMES["gap"], ts=now, gap_kind=kind, gap_count=len(controls),
             gap_sink=sink, host_name=controls[0].host_name)]
        if controls
        else []
    )  # fmt: skip
    return unseq + [
        _gap(
            "dns_" + kind if dns else kind,
            sink,
            now,
            cg,
            sum(r.stands_for if isinstance(r, Record) else 1 for r in recs),
            min(r.first_seq if isinstance(r, Record) else r.seq for r in recs),
            max(r.seq for r in recs),
            recs[0],
        )
        for (cg, dns), recs in by_cgroup.items()
    ]


def _gap(
    kind: str, sink: str, now: str, cgroup: str, count: int, first: int, last: int, of: RingItem
) -> Gap:
    return Gap(
        event_name=EVENT_NAMES["gap"],
        ts=now,
        gap_kind=kind,
        gap_count=count,
        gap_seq_first=first,
        gap_seq_last=last,
        gap_sink=sink,
        cgroup_id=cgroup,
        host_name=of.host_name,
        container_id=of.container_id,
        agent=of.agent,
        project=of.project,
    )


def _copy(gap: Gap) -> Gap:
    """Each lane coalesces its own copy: Gap objects are mutated when merged."""
    return msgspec.structs.replace(gap)


class _Gaps:
    """Gap records waiting to be exported, coalesced per (kind, sink, cgroup)."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str | None, str | None], Gap] = {}

    def add(self, gap: Gap) -> None:
        key = (gap.gap_kind, gap.gap_sink, gap.cgroup_id)
        old = self._pending.get(key)
        if old is not None:
            gap.gap_count += old.gap_count
            firsts = [s for s in (old.gap_seq_first, gap.gap_seq_first) if s is not None]
            lasts = [s for s in (old.gap_seq_last, gap.gap_seq_last) if s is not None]
            gap.gap_seq_first = min(firsts) if firsts else None
            gap.gap_seq_last = max(lasts) if lasts else None
        self._pending[key] = gap

    def take(self) -> list[Gap]:
        gaps = list(self._pending.values())
        self._pending.clear()
        return gaps

    def __bool__(self) -> bool:
        return bool(self._pending)


@dataclass
class LaneStats:
    name: str
    depth: int
    capacity: int
    exported: int
    dropped: int
    errors: int
    healthy: bool
    last_error: str


@dataclass
class _Lane:
    sink: Sink
    capacity: int
    cond: threading.Condition = field(default_factory=threading.Condition)
    queue: collections.deque[_Batch] = field(default_factory=collections.deque)
    gaps: _Gaps = field(default_factory=_Gaps)
    commits: list[_Commit] = field(default_factory=list)  # run once `gaps` are written
    retry_at: float = 0.0  # monotonic time before which failed gaps wait
    depth: int = 0
    read_position: int | None = None  # after the last batch this lane handled
    done_position: int | None = None  # what the ring may release: handled, and no gap owed
    exported: int = 0
    dropped: int = 0
    errors: int = 0
    last_error: str = ""
    closing: bool = False
    busy: bool = False  # the worker holds items outside the queue
    thread: threading.Thread | None = None

    def stats(self) -> LaneStats:
        return LaneStats(
            self.sink.name,
            self.depth,
            self.capacity,
            self.exported,
            self.dropped,
            self.errors,
            not self.last_error,
            self.last_error,
        )


class Subscription:
    """A live feed for one `tail` client: bounded, lossy, with its losses reported to it."""

    def __init__(self, accept: Callable[[Item], bool], capacity: int, clock: Clock) -> None:
        self.accept = accept
        self.capacity = capacity
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: collections.deque[Item] = collections.deque()
        self._gaps = _Gaps()
        self._controls: list[Control] = []
        self.dropped = 0
        self.closed = False

    def offer(self, items: Sequence[Item]) -> None:
        wanted: Sequence[Item] = (
            items.where(self.accept)
            if isinstance(items, Decisions)
            else [i for i in items if self.accept(i)]
        )
        if not wanted:
            return
        with self._cond:
            room = self.capacity - len(self._queue)
            if room < len(wanted):
                lost = wanted[max(room, 0) :]
                wanted = wanted[: max(room, 0)]
                self.dropped += len(lost)
                for gap in _loss_gaps(lost, "queue_full", "tail", self._clock()):
                    self._gaps.add(gap)
            self._queue.extend(wanted)
            self._cond.notify()

    def add_gaps(self, gaps: Sequence[Gap]) -> None:
        with self._cond:
            for gap in gaps:
                self._gaps.add(_copy(gap))
            self._cond.notify()

    def add_controls(self, controls: Sequence[Control]) -> None:
        wanted = [c for c in controls if self.accept(c)]
        if wanted:
            with self._cond:
                self._controls.extend(wanted)
                self._cond.notify()

    def next_items(self, timeout: float) -> list[Item] | None:
        """Everything queued (gaps, then control records), waiting up to `timeout`; None once
        closed."""
        with self._cond:
            if not self._queue and not self._gaps and not self._controls and not self.closed:
                self._cond.wait(timeout)
            if self.closed and not self._queue and not self._controls:
                return None
            items: list[Item] = [*self._gaps.take(), *self._controls, *self._queue]
            self._queue.clear()
            self._controls.clear()
            return items

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify()


class Fanout:
    def __init__(
        self,
        sinks: Sequence[Sink],
        capacity: int,
        clock: Clock,
        on_loss: Callable[[Sequence[Gap]], None] = lambda gaps: None,
    ) -> None:
        self._clock = clock
        self._on_loss = on_loss  # the loss ledger counts what the lanes lose
        self._capacity = capacity
        self._lanes = [self._start(sink) for sink in sinks]
        self._subs: list[Subscription] = []
        self._subs_lock = threading.Lock()

    def _start(self, sink: Sink) -> _Lane:
        lane = _Lane(sink, self._capacity)
        lane.thread = threading.Thread(
            target=self._work, args=(lane,), name=f"sink-{sink.name}", daemon=True
        )
        lane.thread.start()
        return lane

    def update(self, added: Sequence[Sink], removed: Sequence[Sink], timeout: float = 30.0) -> None:
        """Start lanes for `added`; drain and stop the lanes of `removed` (a reload).

        Lanes are swapped as one new list, so a publish reaches the old set or the
        new one. The removed sinks are not shut down: their owner does that.
        """
        gone = [lane for lane in self._lanes if any(lane.sink is s for s in removed)]
        self._lanes = [lane for lane in self._lanes if lane not in gone] + [
            self._start(sink) for sink in added
        ]
        self._stop(gone, timeout)

    # -- producers --------------------------------------------------------

    def publish(self, items: Sequence[Item], position: int | None = None) -> None:
        """Queue `items` for every sink; a full lane drops them and reports the loss."""
        losses: list[Gap] = []
        for lane in self._lanes:
            with lane.cond:
                if items and lane.depth + len(items) > lane.capacity:
                    lane.dropped += len(items)
                    losses += _loss_gaps(items, "queue_full", lane.sink.name, self._clock())
                    items_for_lane: Sequence[Item] = ()
                else:
                    items_for_lane = items
                lane.queue.append(_Batch(items_for_lane, position))
                lane.depth += len(items_for_lane)
                lane.cond.notify()
        if losses:
            self._lost(losses)
        with self._subs_lock:
            subs = list(self._subs)
        for sub in subs:
            sub.offer(items)

    def _lost(self, gaps: Sequence[Gap]) -> None:
        self._on_loss(gaps)
        self.publish_gaps(gaps)

    def publish_gaps(self, gaps: Sequence[Gap], commit: Callable[[], None] | None = None) -> None:
        """Gap records reach every sink and subscriber; they are never dropped.

        `commit` runs once every durable sink has written them (at once without one).
        """
        durable = [lane for lane in self._lanes if lane.sink.durable]
        if not gaps or not durable:
            if commit is not None:
                commit()
            if not gaps:
                return
        done = _Commit(len(durable), commit) if commit is not None and durable else None
        for lane in self._lanes:
            with lane.cond:
                for gap in gaps:
                    lane.gaps.add(_copy(gap))
                if done is not None and lane.sink.durable:
                    lane.commits.append(done)
                lane.cond.notify()
        with self._subs_lock:
            subs = list(self._subs)
        for sub in subs:
            sub.add_gaps(gaps)

    def publish_controls(self, controls: Sequence[Control]) -> None:
        """Control records reach every sink and subscriber, in order; never dropped."""
        if not controls:
            return
        for lane in self._lanes:
            with lane.cond:  # in the queue, in order with decisions, past the bound
                lane.queue.append(_Batch(list(controls), None))
                lane.depth += len(controls)
                lane.cond.notify()
        with self._subs_lock:
            subs = list(self._subs)
        for sub in subs:
            sub.add_controls(controls)

    # -- subscribers ------------------------------------------------------

    def subscribe(self, accept: Callable[[Item], bool], capacity: int = 10_000) -> Subscription:
        """A live feed of what `accept` takes. `accept` looks only at what the records
        of a group share (tail's Filter does): a Decisions batch asks it once per group."""
        sub = Subscription(accept, capacity, self._clock)
        with self._subs_lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._subs_lock:
            if sub in self._subs:
                self._subs.remove(sub)
        sub.close()

    # -- state ------------------------------------------------------------

    def released_position(self, read_position: int) -> int:
        """How far the ring may be freed: what every durable sink has written."""
        done = [lane.done_position for lane in self._lanes if lane.sink.durable]
        if not done:
            return read_position
        if any(d is None for d in done):
            return -1
        return min(d for d in done if d is not None)

    def stats(self) -> list[LaneStats]:
        return [lane.stats() for lane in self._lanes]

    def subscribers(self) -> int:
        with self._subs_lock:
            return len(self._subs)

    def sinks(self) -> list[Sink]:
        return [lane.sink for lane in self._lanes]

    # -- workers ----------------------------------------------------------

    def settled(self, timeout: float) -> bool:
        """Wait until every durable lane has handled all it was given and owes no gap."""
        deadline = time.monotonic() + timeout
        for lane in self._lanes:
            if not lane.sink.durable:
                continue
            with lane.cond:
                while lane.queue or lane.gaps or lane.busy:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    lane.cond.wait(min(left, 0.05))
        return True

    def _export(self, lane: _Lane, items: Sequence[Item]) -> int:
        """Hand `items` to the lane's sink; returns how many of the first ones it took."""
        try:
            lane.sink.export(items)
        except Exception as exc:  # the caller owns sink failures: count, report, go on
            taken = exc.taken if isinstance(exc, PartialExport) else 0
            lane.errors += 1
            lane.exported += taken
            lane.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("sink %s failed: %s", lane.sink.name, lane.last_error)
            return taken
        lane.last_error = ""
        lane.exported += len(items)
        return len(items)

    def _export_gaps(self, lane: _Lane, gaps: list[Gap], commits: list[_Commit]) -> None:
        taken = self._export(lane, gaps)
        if taken == len(gaps):
            for commit in commits:
                commit.written()
            return
        with lane.cond:  # kept, and tried again before anything newer
            for gap in gaps[taken:]:
                lane.gaps.add(gap)
            lane.commits[:0] = commits
            lane.retry_at = time.monotonic() + RETRY_SECONDS

    def _work(self, lane: _Lane) -> None:
        while True:
            with lane.cond:
                lane.busy = False
                lane.cond.notify_all()
                while not lane.closing:
                    due = lane.gaps and time.monotonic() >= lane.retry_at
                    if lane.queue or due:
                        break
                    lane.cond.wait(RETRY_SECONDS if lane.gaps else None)
                if lane.closing and not lane.queue and (not lane.gaps or lane.retry_at):
                    return  # closing, and everything is out (or a fault keeps it out)
                lane.busy = True
                due = time.monotonic() >= lane.retry_at
                gaps = lane.gaps.take() if due else []
                commits, lane.commits = (lane.commits, []) if gaps else ([], lane.commits)
                batch = lane.queue.popleft() if lane.queue else None
            if gaps:
                self._export_gaps(lane, gaps, commits)
            if batch is not None:
                self._handle(lane, batch)
            with lane.cond:
                if not lane.gaps:
                    lane.retry_at = 0.0
                    lane.done_position = lane.read_position

    def _handle(self, lane: _Lane, batch: _Batch) -> None:
        items = batch.items
        taken = self._export(lane, items) if items else 0
        if taken < len(items):
            self._lost(_loss_gaps(items[taken:], "sink_failed", lane.sink.name, self._clock()))
        with lane.cond:
            lane.depth -= len(items)
            if batch.position is not None:
                lane.read_position = batch.position

    def close(self, timeout: float = 30.0) -> None:
        """Export everything queued, then stop the workers (sinks are not shut down)."""
        self._stop(self._lanes, timeout)
        # A lane's last failure reports gaps to every lane, also to those already done.
        for lane in self._lanes:
            if lane.thread is not None and not lane.thread.is_alive():
                with lane.cond:
                    late = lane.gaps.take()
                if late:
                    self._export(lane, late)
        with self._subs_lock:
            subs, self._subs = self._subs, []
        for sub in subs:
            sub.close()

    def _stop(self, lanes: Sequence[_Lane], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for lane in lanes:
            with lane.cond:
                lane.closing = True
                lane.cond.notify()
        for lane in lanes:
            if lane.thread is not None:
                lane.thread.join(max(0.0, deadline - time.monotonic()))
