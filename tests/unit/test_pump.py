"""The pump without the kernel: ring bytes -> real decoder -> enrichers in order -> sinks.

`RingStandIn` (tests/unit/ring_bytes.py) stands in for the ring: it serves real
record bytes, framed as the kernel frames them, through the real ring scan.
`NoLosses` stands in for the kernel's loss counters, which these tests never read.
"""

from __future__ import annotations

from collections.abc import Sequence

from netlogger.kernel import abi
from netlogger.kernel.ringbuf import span
from netlogger.pipeline.decisions import to_enrich
from netlogger.pipeline.decode import EVENT_SIZE
from netlogger.pipeline.enrich import AttributionEnricher, Enricher
from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.losses import Report
from netlogger.pipeline.pump import BATCH_BYTES, Pump
from netlogger.pipeline.record import Gap, Record, RingItem
from netlogger.sinks.memory import MemorySink
from tests.unit.ring_bytes import TEST_OP, RingStandIn, add_test_kind, decoder, event
from tests.unit.test_fanout import GatedSink, until

LABELS = {42: abi.Labels(agent=b"a1", project=b"p1", container_id=b"c" * 64)}


class NoLosses:
    """Stand-in for the loss ledger: the kernel lost nothing."""

    def collect(self, only: int | None = None, undecodable: int = 0) -> Report:
        return Report()

    def count(self, gaps: Sequence[Gap]) -> None:
        pass

    def totals(self) -> dict[str, int]:
        return {}

    def forget(self, cgroup_id: int) -> None:
        pass

    def per_cpu_ring_losses(self) -> int:
        return 0

    def kernel_no_state(self) -> int:
        return 0


class Naming:
    """A second enricher: names the destination after the attribution the first one set."""

    def __init__(self) -> None:
        self.forgotten: list[int] = []

    def enrich(self, items: Sequence[RingItem]) -> None:
        for item in to_enrich(items):
            item.dst_host = f"{item.agent or 'nobody'}.example"

    def forget(self, cgroup_id: int) -> None:
        self.forgotten.append(cgroup_id)


def pump(
    ring: RingStandIn,
    *sinks: MemorySink,
    written: set[tuple[str, int]] | None = None,
    capacity: int = 1000,
) -> tuple[Pump, dict[int, abi.Labels]]:
    labels = dict(LABELS)
    enrichers: list[Enricher] = [AttributionEnricher(labels.get), Naming()]
    d = decoder()
    return Pump(ring, d, enrichers, Fanout(sinks, capacity, d.now), NoLosses(), written), labels


def test_ring_bytes_reach_the_sinks_decoded_and_enriched_in_order() -> None:
    ring, sink = RingStandIn(), MemorySink()
    p, _ = pump(ring, sink)
    ring.push(
        event(seq=1), event(op=42, seq=2), event(seq=3, cgroup_id=77, action=abi.Action.ALLOWED)
    )
    assert p.step() == 2
    p.fanout.close()
    got = [
        (
            r.seq,
            r.cgroup_id,
            r.action,
            r.agent,
            r.project,
            r.container_id,
            r.attribution,
            r.dst_host,
        )
        for r in sink.items()
        if isinstance(r, Record)
    ]
    assert got == [
        (1, "42", "denied", "a1", "p1", "c" * 64, "static", "a1.example"),
        (3, "77", "allowed", "", "", "", "cgroup_not_enrolled", "nobody.example"),
    ]
    assert p.decoder.skipped == {"unknown_op": 1}
    assert (p.read, dict(p.counts)) == (
        2,
        {("ebpf.egress.connect", "denied"): 1, ("ebpf.egress.connect", "allowed"): 1},
    )
    assert ring.position == ring.released == 3 * span(EVENT_SIZE)  # no durable sink


def test_forget_reaches_every_enricher() -> None:
    ring, sink = RingStandIn(), MemorySink()
    p, labels = pump(ring, sink)
    ring.push(event(seq=1))
    p.step()
    labels[42] = abi.Labels(agent=b"a2")
    p.forget(42)
    ring.push(event(seq=2))
    p.step()
    p.fanout.close()
    assert [r.agent for r in sink.items() if isinstance(r, Record)] == ["a1", "a2"]
    naming = p.enrichers[1]
    assert isinstance(naming, Naming) and naming.forgotten == [42]


def test_the_ring_is_released_only_after_the_durable_sink_took_the_records() -> None:
    ring, file, console = RingStandIn(), GatedSink("file", durable=True), MemorySink("console")
    p, _ = pump(ring, file, console)
    ring.push(*(event(seq=s) for s in range(1, 4)))
    p.step()
    read = 3 * span(EVENT_SIZE)
    until(lambda: len(console.items()) == 3)
    assert (ring.position, ring.released) == (read, 0)
    file.gate.set()
    until(lambda: p.fanout.released_position(read) == read)
    ring.push(event(seq=4))
    p.step()  # releases what the file has, not the record just read
    assert (ring.position, ring.released) == (read + span(EVENT_SIZE), read)
    p.fanout.close()
    p.release_all()
    assert ring.released == ring.position


def test_records_already_written_before_a_crash_are_not_sent_again() -> None:
    ring, sink = RingStandIn(), MemorySink()
    p, _ = pump(ring, sink, written={("42", 2), ("42", 3)})
    ring.push(*(event(seq=s) for s in range(1, 5)))
    p.step()
    ring.push(event(seq=2))  # a later record with the same key is new: the set is spent
    p.step()
    p.fanout.close()
    assert [r.seq for r in sink.items() if isinstance(r, Record)] == [1, 4, 2]


def test_a_new_kind_passes_through_pump_and_fan_out_unchanged() -> None:
    ring, file, console = RingStandIn(), MemorySink("file", durable=True), MemorySink("console")
    p, _ = pump(ring, file, console)
    add_test_kind(p.decoder)
    ring.push(event(seq=1), event(op=TEST_OP, seq=2) + bytes(8), event(op=TEST_OP + 1, seq=3))
    assert p.step() == 2
    p.fanout.close()
    for sink in (file, console):
        got = [
            (r.event_name, r.seq, r.agent, r.dst_host)
            for r in sink.items()
            if isinstance(r, Record)
        ]
        assert len(got) == len(sink.items())
        assert got == [
            ("ebpf.egress.connect", 1, "a1", "a1.example"),
            ("test.kind", 2, "a1", "a1.example"),
        ]
    assert dict(p.counts) == {("ebpf.egress.connect", "denied"): 1, ("test.kind", "denied"): 1}
    assert p.decoder.skipped == {"unknown_op": 1}


def test_steps_read_the_ring_a_bounded_batch_at_a_time_and_catch_up_reads_it_all() -> None:
    ring, sink = RingStandIn(), MemorySink()
    per_step = BATCH_BYTES // span(EVENT_SIZE)
    p, _ = pump(ring, sink, capacity=2 * per_step)
    ring.push(*(event(seq=s) for s in range(per_step + 5)))
    assert p.step() == per_step
    p.catch_up()
    p.fanout.close()
    assert [r.seq for r in sink.items() if isinstance(r, Record)] == list(range(per_step + 5))
