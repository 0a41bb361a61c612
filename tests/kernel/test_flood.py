"""Flood control: repeats fold, allowed records are throttled per cgroup, every one is counted.

With folding off (fold_window_ns=0) the kernel writes a record per decision,
as before folding existed: the tests of throttling and ring loss run so.
"""

from __future__ import annotations

import threading

import pytest

from netlogger.kernel import loader

FLOOD = 100_000
DENIES = 20_000


@pytest.fixture
def settings() -> loader.Settings:
    return loader.Settings(
        ring_bytes=8 << 20, allowed_per_sec=1000, allowed_burst=2000, fold_window_ns=0
    )


def test_flood_is_throttled_and_fully_accounted(enrolled, spawn, read, plane) -> None:
    noisy_cg, quiet_cg = enrolled("noisy"), enrolled("quiet")
    noisy, quiet = spawn(noisy_cg), spawn(quiet_cg)
    results: dict[str, dict[str, int]] = {}

    def run(name: str, w, port: int, count: int) -> None:
        results[name] = w("flood", family=4, addr="198.18.0.2", port=port, count=count)

    threads = [
        threading.Thread(target=run, args=("noisy", noisy, 5000, FLOOD)),
        threading.Thread(target=run, args=("quiet", quiet, 6000, DENIES)),
    ]
    for t in threads:
        t.start()
    records = []
    while any(t.is_alive() for t in threads):
        records += read()
    for t in threads:
        t.join()
    records += read()

    assert results == {"noisy": {"0": FLOOD}, "quiet": {"1": DENIES}}  # 1 == EPERM
    noisy_recs = [r for r in records if r.cgroup_id == str(noisy_cg.id)]
    quiet_recs = [r for r in records if r.cgroup_id == str(quiet_cg.id)]
    noisy_state = plane.cgroup_state.lookup(noisy_cg.id)
    quiet_state = plane.cgroup_state.lookup(quiet_cg.id)

    assert {r.action for r in noisy_recs} == {"allowed"}
    assert 2000 <= len(noisy_recs) < FLOOD
    assert noisy_state.ringbuf_lost == 0
    assert len(noisy_recs) + noisy_state.throttled == FLOOD
    assert noisy_state.seq == FLOOD
    # Delivered sequence numbers are distinct and the missing ones are the throttled ones.
    assert len({r.seq for r in noisy_recs}) == len(noisy_recs)

    assert len(quiet_recs) == DENIES
    assert {r.action for r in quiet_recs} == {"denied"}
    assert (quiet_state.throttled, quiet_state.ringbuf_lost) == (0, 0)
    assert sorted(r.seq for r in quiet_recs) == list(range(DENIES))


@pytest.mark.parametrize(
    "settings", [loader.Settings(ring_bytes=4096, allowed_per_sec=0, fold_window_ns=0)]
)
def test_full_ring_losses_are_counted(enrolled, spawn, read, plane, settings) -> None:
    cg = enrolled("a")
    w = spawn(cg)
    assert w("flood", family=4, addr="198.18.0.2", port=6000, count=1000) == {"1": 1000}
    delivered = read()
    state = plane.cgroup_state.lookup(cg.id)
    per_cpu = sum(v.ringbuf_lost for v in plane.cpu_loss.values())
    assert 0 < len(delivered) < 1000
    assert len(delivered) + state.ringbuf_lost == 1000
    assert per_cpu == state.ringbuf_lost


@pytest.mark.parametrize(
    "settings",
    [loader.Settings(ring_bytes=4 << 20, allowed_per_sec=0, wakeup_bytes=4096, fold_window_ns=0)],
)
def test_concurrent_drain_of_a_wrapping_ring_loses_nothing(
    enrolled, spawn, ring, decoder, plane, settings
) -> None:
    """The ring wraps many times while the reader drains it: every record arrives, in order.

    Guards the consumer-position store: a reader that ever publishes a torn or zeroed
    position makes the kernel think the ring is full and drop records.
    """
    cg = enrolled("a")
    w = spawn(cg)
    count = 120_000  # about 16 MB through a 4 MB ring
    done = threading.Event()
    raw: list[bytes] = []  # decoded afterwards: this reader must outrun the producer

    def produce() -> None:
        w("flood", family=4, addr="198.18.0.2", port=5000, count=count)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    while not done.is_set():
        raw += ring.drain()
    producer.join()
    raw += ring.drain()
    records = decoder.decode_all(raw)
    state = plane.cgroup_state.lookup(cg.id)
    assert (state.ringbuf_lost, state.throttled) == (0, 0)
    assert [r.seq for r in records] == list(range(count))
