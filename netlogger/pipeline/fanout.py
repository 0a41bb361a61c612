"""Records -> every sink and every `tail` subscriber, none able to stall the others.

Each sink gets a lane: a bounded queue (counted in records) and a worker thread
that calls `export`. A lane that is full drops the incoming batch and counts
it; the loss becomes a Gap record that every lane receives. Gap records never
wait behind the bound: a lane keeps them aside, coalesced, and exports them
before its next batch, so loss reports cannot themselves be lost.

Ring positions ride along with batches. A lane whose sink is `durable` (see
sinks/base.py) reports how far it has written; the reader releases ring space
only up to there, so a crash leaves unwritten records in the ring.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from netlogger.pipeline.record import EVENT_NAMES, Gap, Item, RingItem
from netlogger.sinks.base import Sink

log = logging.getLogger("netlogger.fanout")

Clock = Callable[[], str]  # RFC 3339 "now", for gap records made here


@dataclass
class _Batch:
    items: Sequence[Item]
    position: int | None  # ring position after these records, when they came from the ring


def _loss_gaps(items: Sequence[Item], kind: str, sink: str, now: str) -> list[Gap]:
    """One Gap per cgroup for ring items that `sink` lost, with their seq range."""
    by_cgroup: dict[str, list[RingItem]] = collections.defaultdict(list)
    for item in items:
        if not isinstance(item, Gap):
            by_cgroup[item.cgroup_id].append(item)
    return [
        Gap(
            event_name=EVENT_NAMES["gap"],
            ts=now,
            gap_kind=kind,
            gap_count=len(recs),
            gap_seq_first=min(r.seq for r in recs),
            gap_seq_last=max(r.seq for r in recs),
            gap_sink=sink,
            cgroup_id=cg,
            host_name=recs[0].host_name,
            container_id=recs[0].container_id,
            agent=recs[0].agent,
            project=recs[0].project,
        )
        for cg, recs in by_cgroup.items()
    ]


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
    depth: int = 0
    done_position: int | None = None
    exported: int = 0
    dropped: int = 0
    errors: int = 0
    last_error: str = ""
    closing: bool = False
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
        self.dropped = 0
        self.closed = False

    def offer(self, items: Sequence[Item]) -> None:
        wanted = [i for i in items if self.accept(i)]
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

    def next_items(self, timeout: float) -> list[Item] | None:
        """Everything queued (gaps first), waiting up to `timeout`; None once closed."""
        with self._cond:
            if not self._queue and not self._gaps and not self.closed:
                self._cond.wait(timeout)
            if self.closed and not self._queue:
                return None
            items: list[Item] = [*self._gaps.take(), *self._queue]
            self._queue.clear()
            return items

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify()


class Fanout:
    def __init__(self, sinks: Sequence[Sink], capacity: int, clock: Clock) -> None:
        self._clock = clock
        self._lanes = [_Lane(sink, capacity) for sink in sinks]
        self._subs: list[Subscription] = []
        self._subs_lock = threading.Lock()
        for lane in self._lanes:
            lane.thread = threading.Thread(
                target=self._work, args=(lane,), name=f"sink-{lane.sink.name}", daemon=True
            )
            lane.thread.start()

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
            self.publish_gaps(losses)
        with self._subs_lock:
            subs = list(self._subs)
        for sub in subs:
            sub.offer(items)

    def publish_gaps(self, gaps: Sequence[Gap]) -> None:
        """Gap records reach every sink and subscriber; they are never dropped."""
        if not gaps:
            return
        for lane in self._lanes:
            with lane.cond:
                for gap in gaps:
                    lane.gaps.add(_copy(gap))
                lane.cond.notify()
        with self._subs_lock:
            subs = list(self._subs)
        for sub in subs:
            sub.add_gaps(gaps)

    # -- subscribers ------------------------------------------------------

    def subscribe(self, accept: Callable[[Item], bool], capacity: int = 10_000) -> Subscription:
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

    def _export(self, lane: _Lane, items: Sequence[Item]) -> bool:
        try:
            lane.sink.export(items)
        except Exception as exc:  # the caller owns sink failures: count, report, go on
            lane.errors += 1
            lane.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("sink %s failed: %s", lane.sink.name, lane.last_error)
            return False
        lane.last_error = ""
        lane.exported += len(items)
        return True

    def _work(self, lane: _Lane) -> None:
        while True:
            with lane.cond:
                while not lane.queue and not lane.gaps and not lane.closing:
                    lane.cond.wait()
                if not lane.queue and not lane.gaps:
                    return  # closing, and everything is out
                gaps = lane.gaps.take()
                batch = lane.queue.popleft() if lane.queue else None
            if gaps:
                self._export(lane, gaps)
            if batch is None:
                continue
            if batch.items and not self._export(lane, batch.items):
                self.publish_gaps(
                    _loss_gaps(batch.items, "sink_failed", lane.sink.name, self._clock())
                )
            with lane.cond:
                lane.depth -= len(batch.items)
                if batch.position is not None:
                    lane.done_position = batch.position

    def close(self, timeout: float = 30.0) -> None:
        """Export everything queued, then stop the workers (sinks are not shut down)."""
        deadline = time.monotonic() + timeout
        for lane in self._lanes:
            with lane.cond:
                lane.closing = True
                lane.cond.notify()
        for lane in self._lanes:
            if lane.thread is not None:
                lane.thread.join(max(0.0, deadline - time.monotonic()))
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
