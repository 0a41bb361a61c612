"""A bounded, ordered, crash-safe on-disk queue of encoded records (one sink's outbox).

Layout of the spool directory:

    .lock                               flock()ed while an agent owns the spool
    0000000000000007.seg                a segment: encoded entries, appended in order
    0000000000000005-0000000000000006.gap
                                        gap entries standing in for evicted segments 5..6

A segment is the unit of sending and of eviction: the sender takes the oldest one (sealing the
tail if that is the oldest), and deletes it once the peer acknowledged it. Appends go to the
tail segment only, so sending never blocks writing for longer than a lock hand-off.

When the size cap is exceeded the oldest data segments that are not being sent are replaced,
in place, by a small gap file whose entries (made by the caller's `gap_entries`) say how many
records per cgroup were lost and their sequence range; consecutive evictions merge into one gap
file while it waits to be sent. The segment being sent is never evicted: its records are
already on the wire.

Crash safety (kill -9, not power loss: nothing is fsynced): a torn last entry is cut off at
open; a gap file is written under a temporary name and renamed into place before the segments
it replaces are unlinked, and at open any segment inside a gap file's range is removed.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from netlogger.errors import StateError
from netlogger.pipeline.decisions import Decisions, Group
from netlogger.pipeline.record import Control, DnsRecord, Gap, Item, Record

_NAME = re.compile(r"(\d{16})(?:-(\d{16}))?\.(seg|gap)")


@dataclass(slots=True)
class Span:
    """What one cgroup lost (or would lose) in a run of records: count, seq range, first ts."""

    count: int
    seq_first: int | None
    seq_last: int | None
    ts: str

    def extend(self, other: Span) -> None:
        self.count += other.count
        if self.seq_first is None:
            self.seq_first = other.seq_first
        if other.seq_last is not None:
            self.seq_last = other.seq_last


Spans = dict[str | None, Span]  # by cgroup id; None for losses not tied to one cgroup
# DNS records count in their own sequence per cgroup: their spans are keyed apart.
DNS_SPAN_PREFIX = "dns:"


def _decision_spans(items: Decisions) -> Spans:
    """spans_of a Decisions batch, in C-speed passes over its references: per distinct
    reference (a group, or a Record of its own) its count and first and last position;
    then the repeats of the few folded records."""
    refs = items.refs
    ids = list(map(id, refs))
    by_id = dict(zip(ids, refs, strict=True))
    last = dict(zip(ids, range(len(ids)), strict=True))
    first = dict(zip(reversed(ids), reversed(range(len(ids))), strict=True))
    per_cgroup: dict[str, tuple[int, int, int]] = {}  # count, first position, last position
    for key, count in Counter(ids).items():
        ref = by_id[key]
        cgroup = ref.template.cgroup_id if isinstance(ref, Group) else ref.cgroup_id
        n, at, to = per_cgroup.get(cgroup, (0, len(ids), -1))
        per_cgroup[cgroup] = (n + count, min(at, first[key]), max(to, last[key]))
    spans: Spans = {}
    for cgroup, (count, at, to) in per_cgroup.items():
        head = items[at]
        spans[cgroup] = Span(count, head.first_seq, items[to].seq, head.ts)
    for at in items.folded():
        span = spans[items[at].cgroup_id]
        span.count += items[at].stands_for - 1
    return spans


def _all_records(items: Sequence[Item]) -> TypeGuard[Sequence[Record]]:
    return {type(item) for item in items} == {Record}


def spans_of(items: Sequence[Item]) -> Spans:
    """Per cgroup, the records `items` stand for; a gap item stands for the records it counts."""
    if isinstance(items, Decisions):
        return _decision_spans(items)
    if _all_records(items):
        # The common batch, in comprehensions: this runs for every record the agent sees.
        firsts = {r.cgroup_id: r for r in reversed(items)}
        lasts = {r.cgroup_id: r for r in items}
        counts: Counter[str] = Counter()
        for r in items:
            counts[r.cgroup_id] += r.stands_for
        return {
            cgroup: Span(counts[cgroup], firsts[cgroup].first_seq, last.seq, firsts[cgroup].ts)
            for cgroup, last in lasts.items()
        }
    spans: Spans = {}
    for item in items:
        key = item.cgroup_id
        if type(item) is Record:
            span = Span(item.stands_for, item.first_seq, item.seq, item.ts)
        elif type(item) is DnsRecord:
            span = Span(1, item.seq, item.seq, item.ts)
            key = DNS_SPAN_PREFIX + item.cgroup_id
        elif isinstance(item, Control):  # no seq: an evicted one is a loss of no cgroup's
            span, key = Span(1, None, None, item.ts), None
        else:
            assert isinstance(item, Gap)
            span = Span(item.gap_count, item.gap_seq_first, item.gap_seq_last, item.ts)
        known = spans.get(key)
        if known is None:
            spans[key] = span
        else:
            known.extend(span)
    return spans


def merge_spans(into: Spans, more: Spans) -> None:
    for key, span in more.items():
        if key in into:
            into[key].extend(span)
        else:
            into[key] = Span(span.count, span.seq_first, span.seq_last, span.ts)


@dataclass(eq=False)
class Segment:
    first: int  # ids of the data segments this file covers (one, unless it is a merged gap)
    last: int
    kind: str  # "seg" or "gap"
    directory: Path
    size: int = 0
    count: int = 0  # entries in the file
    # What the entries stand for, for eviction (data) or merging (gap); None after a restart
    # until someone needs it.
    spans: Spans | None = field(default_factory=dict)
    sending: bool = False

    @property
    def path(self) -> Path:
        if self.kind == "seg":
            return self.directory / f"{self.first:016d}.seg"
        return self.directory / f"{self.first:016d}-{self.last:016d}.gap"


GapEntries = Callable[[Spans], tuple[bytes, int]]  # spans lost -> (encoded gap entries, count)
Frames = Callable[[bytes], tuple[int, int]]  # data -> (complete entries, bytes they span)
SpansFromData = Callable[[bytes], Spans]  # for segments found on disk at open


class Spool:
    """Thread-safe: one writer (`append`), one sender (`take`/`ack`/`release`), any readers."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int,
        *,
        frames: Frames,
        gap_entries: GapEntries,
        spans_from_data: SpansFromData,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._frames = frames
        self._gap_entries = gap_entries
        self._spans_from_data = spans_from_data
        self._cond = threading.Condition()
        self._segments: list[Segment] = []
        self._tail: Segment | None = None
        self._tail_fd = -1
        self._next_id = 1
        self._lock_fd = -1
        self._bytes = self._records = 0  # totals over self._segments
        self.evicted_records = 0  # records (as gap counts say) evicted since open
        self.evicted_now = 0  # evictions not yet reported by the owner
        self._open()

    # -- lifecycle ---------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot use spool {self.directory}: {exc.strerror}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StateError(
                f"spool {self.directory} is in use by another netlogger agent "
                "(stop it, or give this one its own spool_dir)"
            ) from None
        self._segments = self._recover()
        self._bytes = sum(s.size for s in self._segments)
        self._records = sum(s.count for s in self._segments)
        self._next_id = max((s.last for s in self._segments), default=0) + 1

    def close(self) -> None:
        """Close files and release the lock; whatever is unsent stays for the next open."""
        with self._cond:
            self._seal()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def _recover(self) -> list[Segment]:
        found: list[Segment] = []
        for path in self.directory.iterdir():
            match = _NAME.fullmatch(path.name)
            if path.name.endswith(".tmp"):
                path.unlink()
            elif match:
                first = int(match.group(1))
                last = int(match.group(2) or first)
                found.append(Segment(first, last, match.group(3), self.directory, spans=None))
        gaps = [s for s in found if s.kind == "gap"]

        def covered(seg: Segment) -> bool:
            # A segment an eviction already replaced, or a gap file a wider merge replaced.
            return any(g is not seg and g.first <= seg.first and seg.last <= g.last for g in gaps)

        kept = []
        for seg in sorted(found, key=lambda s: (s.first, -s.last)):
            if covered(seg):
                seg.path.unlink()
            elif self._measure(seg):
                kept.append(seg)
        return kept

    def _measure(self, seg: Segment) -> bool:
        """Count entries; cut a torn tail (a write the kill interrupted); drop empty files."""
        data = seg.path.read_bytes()
        seg.count, end = self._frames(data)
        if end < len(data):
            os.truncate(seg.path, end)
        seg.size = end
        if seg.count == 0:
            seg.path.unlink()
            return False
        return True

    # -- writer ------------------------------------------------------------------------------

    def append(self, entries: bytes, count: int, spans: Spans) -> None:
        """Add encoded entries at the tail; evict the oldest if that breaks the cap."""
        if not count:
            return
        with self._cond:
            tail = self._tail or self._new_tail()
            os.write(self._tail_fd, entries)
            tail.size += len(entries)
            tail.count += count
            self._bytes += len(entries)
            self._records += count
            assert tail.spans is not None
            merge_spans(tail.spans, spans)
            if tail.size >= self.segment_bytes:
                self._seal()
            self._evict()
            self._cond.notify_all()

    def _new_tail(self) -> Segment:
        tail = Segment(self._next_id, self._next_id, "seg", self.directory)
        self._next_id += 1
        self._tail_fd = os.open(tail.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segments.append(tail)
        self._tail = tail
        return tail

    def _seal(self) -> None:
        if self._tail_fd >= 0:
            os.close(self._tail_fd)
        self._tail, self._tail_fd = None, -1

    def _evict(self) -> None:
        while self._bytes > self.max_bytes:
            victim = next((s for s in self._segments if s.kind == "seg" and not s.sending), None)
            if victim is None or victim is self._tail:
                return  # only the tail or the segment on the wire is left: nothing to do
            self._replace_with_gap(victim)

    def _replace_with_gap(self, victim: Segment) -> None:
        index = self._segments.index(victim)
        spans = victim.spans
        if spans is None:
            spans = self._spans_from_data(victim.path.read_bytes())
        before = self._segments[index - 1] if index else None
        if before and before.kind == "gap" and not before.sending and before.spans is not None:
            merged: Spans = {}
            merge_spans(merged, before.spans)
            merge_spans(merged, spans)
            gap = Segment(before.first, victim.last, "gap", self.directory, spans=merged)
            replaced = [before, victim]
        else:
            merged = {}
            merge_spans(merged, spans)
            gap = Segment(victim.first, victim.last, "gap", self.directory, spans=merged)
            replaced = [victim]
        entries, gap.count = self._gap_entries(merged)
        gap.size = len(entries)
        tmp = gap.path.with_suffix(".tmp")
        tmp.write_bytes(entries)
        tmp.rename(gap.path)  # from here on, the gap file stands for what it replaces
        for old in replaced:
            old.path.unlink()
        start = self._segments.index(replaced[0])
        self._segments[start : start + len(replaced)] = [gap]
        self._bytes += gap.size - sum(s.size for s in replaced)
        self._records += gap.count - sum(s.count for s in replaced)
        lost = sum(span.count for span in spans.values())
        self.evicted_records += lost
        self.evicted_now += lost

    # -- sender ------------------------------------------------------------------------------

    def take(self, timeout: float) -> tuple[Segment, bytes] | None:
        """The oldest segment and its bytes, marked as being sent; None if none came in time."""
        with self._cond:
            if not self._segments:
                self._cond.wait(timeout)
            if not self._segments:
                return None
            head = self._segments[0]
            if head is self._tail:
                self._seal()
            head.sending = True
        return head, head.path.read_bytes()

    def ack(self, seg: Segment) -> None:
        """The peer has the segment: forget it."""
        with self._cond:
            seg.path.unlink()
            self._segments.remove(seg)
            self._bytes -= seg.size
            self._records -= seg.count
            self._cond.notify_all()

    def release(self, seg: Segment) -> None:
        """Sending failed: the segment stays first in line."""
        with self._cond:
            seg.sending = False
            self._evict()

    def take_evicted(self) -> int:
        """Records evicted since the last call (for the owner's log line)."""
        with self._cond:
            lost, self.evicted_now = self.evicted_now, 0
            return lost

    def wait_empty(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._segments, timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- figures -----------------------------------------------------------------------------

    @property
    def segments(self) -> Sequence[Segment]:
        return tuple(self._segments)

    def figures(self) -> tuple[int, int, int]:
        """(records, bytes, segments) now, consistently."""
        with self._cond:
            return self._records, self._bytes, len(self._segments)
