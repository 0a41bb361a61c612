"""The fan-out without the kernel: order per sink, release position, isolation, loss gaps.

Sinks are real MemorySinks; two stand-ins cause what a memory sink never does
by itself: `GatedSink` holds its export until the test opens the gate (a slow
sink), `FailingSink` raises on every batch of decision records (a broken one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.record import Gap, Item, Record
from netlogger.sinks.memory import MemorySink
from tests.unit.ring_bytes import decoder, event, ring_batch

NOW = "2026-12-01T00:00:00.000000000Z"


class GatedSink(MemorySink):
    """Stand-in for a slow sink: each export waits for the gate."""

    def __init__(self, name: str, durable: bool = False) -> None:
        super().__init__(name, durable)
        self.gate = threading.Event()
        self.waiting = threading.Event()  # an export is held at the gate

    def export(self, batch: Sequence[Item]) -> None:
        self.waiting.set()
        self.gate.wait(10)
        super().export(batch)


class FailingSink(MemorySink):
    """Stand-in for a broken sink: refuses decision records, takes gap records."""

    def export(self, batch: Sequence[Item]) -> None:
        if any(isinstance(i, Record) for i in batch):
            raise OSError("disk on fire")
        super().export(batch)


def records(cgroup: int, seqs: range) -> list[Record]:
    out = decoder().decode_all([event(cgroup_id=cgroup, seq=s) for s in seqs])
    assert all(isinstance(r, Record) for r in out)
    return out


def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def fanouts() -> list[Fanout]:
    made: list[Fanout] = []
    yield made
    for f in made:
        f.close(5)


def fanout(made: list[Fanout], *sinks: MemorySink, capacity: int = 1000) -> Fanout:
    f = Fanout(sinks, capacity, lambda: NOW)
    made.append(f)
    return f


def seqs(sink: MemorySink) -> list[int]:
    return [i.seq for i in sink.items() if isinstance(i, Record)]


def gaps(sink: MemorySink) -> list[tuple[str, str | None, str | None, int, int | None, int | None]]:
    return sorted(
        (g.gap_kind, g.gap_sink, g.cgroup_id, g.gap_count, g.gap_seq_first, g.gap_seq_last)
        for g in sink.items()
        if isinstance(g, Gap)
    )


def test_every_sink_gets_every_batch_in_order(fanouts: list[Fanout]) -> None:
    a, b = MemorySink("a"), MemorySink("b")
    f = fanout(fanouts, a, b)
    for start in range(0, 50, 5):
        f.publish(records(42, range(start, start + 5)))
    f.close()
    assert seqs(a) == seqs(b) == list(range(50))
    assert [(s.name, s.exported, s.dropped, s.errors) for s in f.stats()] == [
        ("a", 50, 0, 0),
        ("b", 50, 0, 0),
    ]


def test_ring_is_released_only_as_far_as_durable_sinks_took(fanouts: list[Fanout]) -> None:
    durable, fast = GatedSink("file", durable=True), MemorySink("console")
    f = fanout(fanouts, durable, fast)
    f.publish(records(42, range(1, 4)), position=96)
    f.publish(records(42, range(4, 6)), position=160)
    until(lambda: len(fast.items()) == 5)
    assert f.released_position(160) == -1  # the durable sink has taken nothing yet
    durable.gate.set()
    until(lambda: f.released_position(160) == 160)
    assert seqs(durable) == [1, 2, 3, 4, 5]


def test_without_a_durable_sink_the_ring_is_released_as_read(fanouts: list[Fanout]) -> None:
    slow = GatedSink("console")
    f = fanout(fanouts, slow)
    f.publish(records(42, range(1, 4)), position=96)
    assert f.released_position(96) == 96
    slow.gate.set()


def test_a_slow_sink_does_not_stall_another(fanouts: list[Fanout]) -> None:
    slow, fast = GatedSink("slow"), MemorySink("fast")
    f = fanout(fanouts, slow, fast)
    for start in range(0, 100, 10):
        f.publish(records(42, range(start, start + 10)))
    until(lambda: len(fast.items()) == 100 and slow.waiting.is_set())
    assert slow.items() == []  # still held at its first batch
    slow.gate.set()
    until(lambda: len(slow.items()) == 100)
    assert seqs(slow) == seqs(fast) == list(range(100))


def test_a_full_queue_drops_the_batch_and_every_sink_gets_its_gap(
    fanouts: list[Fanout],
) -> None:
    slow, fast = GatedSink("slow"), MemorySink("fast")
    f = fanout(fanouts, slow, fast, capacity=5)
    f.publish(records(42, range(1, 4)))
    until(lambda: slow.waiting.is_set() and len(fast.items()) == 3)  # slow holds 3 of 5
    f.publish(records(42, range(4, 6)) + records(77, range(10, 11)))  # 3 more do not fit
    f.publish(records(42, range(6, 8)))  # 2 more fit
    slow.gate.set()
    f.close()
    assert seqs(slow) == [1, 2, 3, 6, 7]
    assert seqs(fast) == [1, 2, 3, 4, 5, 10, 6, 7]
    expected = [("queue_full", "slow", "42", 2, 4, 5), ("queue_full", "slow", "77", 1, 10, 10)]
    assert gaps(slow) == gaps(fast) == expected
    assert [(s.name, s.dropped) for s in f.stats()] == [("slow", 3), ("fast", 0)]


def test_a_failing_sink_reports_what_it_did_not_take(fanouts: list[Fanout]) -> None:
    broken, good = FailingSink("broken"), MemorySink("good")
    f = fanout(fanouts, broken, good)
    f.publish(records(42, range(3, 7)) + records(77, range(1, 2)))
    f.close()
    expected = [("sink_failed", "broken", "42", 4, 3, 6), ("sink_failed", "broken", "77", 1, 1, 1)]
    assert gaps(good) == gaps(broken) == expected
    assert seqs(good) == [3, 4, 5, 6, 1] and seqs(broken) == []
    stats = {s.name: s for s in f.stats()}
    assert (stats["broken"].errors, stats["broken"].last_error) == (1, "")  # then its gaps went
    assert stats["good"].exported == 7


def test_a_reload_swaps_lanes_a_removed_one_drained_first(fanouts: list[Fanout]) -> None:
    kept, leaving, joining = MemorySink("kept"), GatedSink("leaving"), MemorySink("joining")
    f = fanout(fanouts, kept, leaving)
    f.publish(records(7, range(0, 5)))
    until(leaving.waiting.is_set)
    swap = threading.Thread(target=f.update, args=([joining], [leaving]))
    swap.start()
    time.sleep(0.05)
    assert swap.is_alive()  # it waits for what the leaving lane still holds
    leaving.gate.set()
    swap.join(5)
    f.publish(records(7, range(5, 10)))
    until(lambda: len(seqs(kept)) == 10 and len(seqs(joining)) == 5)
    assert seqs(kept) == list(range(10))
    assert seqs(leaving) == list(range(5))
    assert seqs(joining) == list(range(5, 10))
    assert [s.name for s in f.sinks()] == ["kept", "joining"]


@pytest.mark.parametrize("shape", ["records", "ring batch"])
def test_a_lost_folded_record_is_a_gap_for_every_decision_it_stands_for(
    fanouts: list[Fanout], shape: str
) -> None:
    """Dropped from a full lane: a record that carried 5 repeats (seqs 96-100) and two
    lone ones, for two cgroups; whatever shape the batch has, the gap says 5 + 1, 96-101."""
    payloads = [
        event(seq=100, repeat_count=5, repeat_first_ns=4_000_000_000, repeat_seq_first=96),
        event(seq=101),
        *(event(seq=s, cgroup_id=77) for s in range(10, 20)),
    ]
    batch = ring_batch(*payloads) if shape == "ring batch" else decoder().decode_all(payloads)
    slow, fast = GatedSink("slow"), MemorySink("fast")
    f = fanout(fanouts, slow, fast, capacity=15)
    f.publish(records(42, range(1, 5)))
    until(lambda: slow.waiting.is_set() and len(fast.items()) == 4)  # 12 more fit in fast only
    f.publish(batch)
    slow.gate.set()
    f.close()
    expected = [("queue_full", "slow", "42", 6, 96, 101), ("queue_full", "slow", "77", 10, 10, 19)]
    assert gaps(slow) == gaps(fast) == expected


def test_a_subscription_filters_a_ring_batch_once_per_group(fanouts: list[Fanout]) -> None:
    f = fanout(fanouts, MemorySink("file"))
    asked: list[str] = []

    def accept(item: Item) -> bool:
        asked.append(item.cgroup_id if isinstance(item, Record) else "-")
        return isinstance(item, Record) and item.cgroup_id == "77"

    sub = f.subscribe(accept, capacity=4)
    f.publish(ring_batch(*(event(seq=s, cgroup_id=42 + 35 * (s % 2)) for s in range(20))))
    got = sub.next_items(1)
    assert got is not None
    assert sorted(asked) == ["42", "77"]
    assert [(g.gap_kind, g.gap_count, g.gap_seq_first, g.gap_seq_last) for g in got[:1]] == [
        ("queue_full", 6, 9, 19)
    ]
    assert [(r.cgroup_id, r.seq) for r in got[1:] if isinstance(r, Record)] == [
        ("77", 1), ("77", 3), ("77", 5), ("77", 7)
    ]  # fmt: skip
