"""Repeats fold in the kernel: a flood of one decision costs a few records, not a full ring.

A record stands for `repeat.count` identical decisions (itself the last); with
the ring's losses those account for every sequence number, exactly. The odd
decision inside a flood is always its own record. `NL_FOLD_FLOOD` sizes the
floods (the kernel matrix runs them smaller under TCG).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import msgspec
import pytest

from netlogger.kernel import loader
from netlogger.kernel.plane import Plane
from netlogger.kernel.ringbuf import span
from netlogger.pipeline.decode import EVENT_SIZE
from netlogger.pipeline.enrich import attribution_of
from netlogger.pipeline.losses import LossLedger
from netlogger.pipeline.record import Record
from tests.completeness import problems

FLOOD = int(os.environ.get("NL_FOLD_FLOOD", "200000"))
DENIED, ODD = 6000, 6001
# A small ring: without folding a flood overflows it, with folding it never fills.
SMALL_RING = 16 << 10
WINDOW_NS = 10_000_000
FOLDING = loader.Settings(ring_bytes=SMALL_RING, allowed_per_sec=0, fold_window_ns=WINDOW_NS)
NOT_FOLDING = loader.Settings(ring_bytes=SMALL_RING, allowed_per_sec=0, fold_window_ns=0)


def flood_with_odd_one(w: Any) -> None:
    """FLOOD identical denies with one deny to another port in the middle."""
    assert w("flood", family=4, addr="198.18.0.2", port=DENIED, count=FLOOD // 2) == {
        "1": FLOOD // 2
    }
    assert w("connect", family=4, type="udp", addr="198.18.0.2", port=ODD) == 1  # EPERM
    rest = FLOOD - FLOOD // 2
    assert w("flood", family=4, addr="198.18.0.2", port=DENIED, count=rest) == {"1": rest}


def drained(
    read: Any, plane: Plane, busy: list[threading.Thread], meanwhile: bool = True
) -> list[Record]:
    """Read while the floods run (`meanwhile`), as the agent does; then flush the folds
    (the agent's twice-a-second and on-stop step) and read the rest."""
    records: list[Record] = []
    while meanwhile and any(t.is_alive() for t in busy):
        records += read()
    for t in busy:
        t.join()
    records += read()
    plane.flush_folds()
    return records + read()


def lines(plane: Plane, records: list[Record]) -> list[dict[str, Any]]:
    """The records and the loss ledger's gaps, as the JSONL file would hold them."""
    ledger = LossLedger(plane, lambda: "t", "h", lambda cg: attribution_of(plane.labels.lookup(cg)))
    items = [*records, *ledger.collect().gaps]
    return [msgspec.json.decode(msgspec.json.encode(i)) for i in items]


def run(w: Any) -> threading.Thread:
    t = threading.Thread(target=flood_with_odd_one, args=(w,))
    t.start()
    return t


@pytest.mark.parametrize("settings", [FOLDING])
def test_a_folded_flood_records_the_odd_deny_and_accounts_for_every_one(
    enrolled, spawn, read, plane, settings
) -> None:
    cg = enrolled("a")
    records = drained(read, plane, [run(spawn(cg))])
    state = plane.cgroup_state.lookup(cg.id)

    assert state.seq == FLOOD + 1
    odd = [r for r in records if r.dst_port == str(ODD)]
    assert [(r.action, r.reason, r.stands_for) for r in odd] == [("denied", "default_deny", 1)]
    assert sum(r.stands_for for r in records) + state.ringbuf_lost == FLOOD + 1
    assert state.ringbuf_lost == 0  # the flood no longer fills the ring
    # At most one record per fold window (how many windows a flood spans depends on how
    # fast this machine makes decisions), plus the odd one, the flood's first and the flush.
    span_ns = max(r.bpf_ts_ns for r in records) - min(r.bpf_ts_ns for r in records)
    assert len(records) <= span_ns // WINDOW_NS + 3
    assert len(records) < FLOOD // 10
    folded = [r for r in records if r.repeat_count]
    assert folded and all(
        r.repeat_first_ns <= r.repeat_last_ns == r.bpf_ts_ns and r.repeat_seq_first < r.seq
        for r in folded
    )
    assert problems(lines(plane, records), cg.id, range(FLOOD + 1)) == []


# A window short enough that even a fast flood spans more windows than the ring holds records.
SHORT_WINDOW = loader.Settings(ring_bytes=SMALL_RING, allowed_per_sec=0, fold_window_ns=20_000)


@pytest.mark.parametrize("settings", [SHORT_WINDOW])
def test_a_full_ring_costs_a_folded_decision_nothing(
    enrolled, spawn, read, plane, settings
) -> None:
    """Nobody reads while the flood runs: its records soon find the ring full, and
    each goes back into its slot, which the flush writes, instead of being lost. The
    odd deny comes when the ring is full: a decision's first record has no copy in a
    slot to go back to, so that one is lost, and counted."""
    cg = enrolled("a")
    records = drained(read, plane, [run(spawn(cg))], meanwhile=False)
    state = plane.cgroup_state.lookup(cg.id)

    assert state.seq == FLOOD + 1
    assert len(records) >= SMALL_RING // span(EVENT_SIZE)  # the ring was full
    assert (state.ringbuf_lost, state.throttled) == (1, 0)
    assert [r for r in records if r.dst_port == str(ODD)] == []
    assert sum(r.stands_for for r in records) == FLOOD
    assert records[-1].stands_for > FLOOD // 2  # the flush carried what the ring refused
    assert problems(lines(plane, records), cg.id, range(FLOOD + 1)) == []


@pytest.mark.parametrize("settings", [NOT_FOLDING])
def test_with_folding_off_every_decision_is_a_record_and_the_ring_losses_return(
    enrolled, spawn, read, plane, settings
) -> None:
    cg = enrolled("a")
    # Read only afterwards, so the ring surely overflows, however fast this machine is.
    records = drained(read, plane, [run(spawn(cg))], meanwhile=False)
    state = plane.cgroup_state.lookup(cg.id)

    assert all(r.repeat_count is None for r in records)
    assert state.ringbuf_lost > 0  # the old behaviour: a flood outruns the ring
    assert len(records) + state.ringbuf_lost == FLOOD + 1
    assert problems(lines(plane, records), cg.id, range(FLOOD + 1)) == []


@pytest.mark.parametrize("settings", [FOLDING])
def test_one_cgroups_flood_never_costs_another_a_record(
    enrolled, spawn, read, plane, settings
) -> None:
    a, b = enrolled("a"), enrolled("b")
    records = drained(read, plane, [run(spawn(a)), run(spawn(b))])

    for cg in (a, b):
        state = plane.cgroup_state.lookup(cg.id)
        mine = [r for r in records if r.cgroup_id == str(cg.id)]
        assert state.seq == FLOOD + 1
        assert (state.ringbuf_lost, state.throttled) == (0, 0)
        assert [r.dst_port for r in mine].count(str(ODD)) == 1
        assert sum(r.stands_for for r in mine) == FLOOD + 1
        assert problems(lines(plane, records), cg.id, range(FLOOD + 1)) == []


@pytest.mark.parametrize("settings", [FOLDING])
def test_decisions_slower_than_the_window_are_each_their_own_record(
    enrolled, spawn, read, plane, settings
) -> None:
    cg = enrolled("a")
    w = spawn(cg)
    assert w("paced", family=4, addr="198.18.0.2", port=DENIED, count=20, interval=0.02) == 20
    plane.flush_folds()
    records = read()
    assert [(r.seq, r.repeat_count) for r in records] == [(n, None) for n in range(20)]


@pytest.mark.parametrize("settings", [FOLDING])
def test_a_flush_with_nothing_folded_writes_nothing(enrolled, spawn, read, plane, settings) -> None:
    cg = enrolled("a")
    assert spawn(cg)("connect", family=4, type="udp", addr="198.18.0.2", port=DENIED) == 1
    plane.flush_folds()
    plane.flush_folds()
    assert [(r.seq, r.repeat_count) for r in read()] == [(0, None)]
