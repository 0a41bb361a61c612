"""The loss ledger against the real kernel's counters and a real JSONL file."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlogger.kernel import loader
from netlogger.pipeline.enrich import attribution_of
from netlogger.pipeline.losses import LossLedger
from netlogger.pipeline.record import Gap
from netlogger.sinks.jsonl import JsonlSink, last_lines, parse_item


def ledger(plane: loader.Plane) -> LossLedger:
    return LossLedger(
        plane,
        lambda: "2026-01-01T00:00:00.000000000Z",
        "h",
        lambda cg: attribution_of(plane.labels.lookup(cg)),
    )


@pytest.mark.parametrize(
    "settings", [loader.Settings(ring_bytes=4096, allowed_per_sec=0, fold_window_ns=0)]
)
def test_a_crash_between_writing_a_gap_and_marking_it_reports_it_once(
    enrolled, spawn, plane, settings, tmp_path: Path
) -> None:
    cg = enrolled("a")
    assert spawn(cg)("flood", family=4, addr="198.18.0.2", port=6000, count=1000) == {"1": 1000}
    lost = plane.cgroup_state.lookup(cg.id).ringbuf_lost
    report = ledger(plane).collect()
    assert [(g.gap_kind, g.gap_count, g.gap_seq_first) for g in report.gaps] == [
        ("ringbuf_full", lost, 0)
    ]
    sink = JsonlSink(tmp_path / "egress.jsonl", 1 << 20, 1)
    sink.export(report.gaps)
    sink.shutdown()  # ... and the agent dies before report.commit()

    # Unmarked, a restarted agent would report the same loss again:
    assert [g.gap_count for g in ledger(plane).collect().gaps] == [lost]
    restarted = ledger(plane)
    written = [i for i in map(parse_item, last_lines(sink.path)) if isinstance(i, Gap)]
    restarted.recover(written)
    assert restarted.collect().gaps == []
    mark = plane.reported.lookup(cg.id)
    assert (mark.ringbuf_lost, mark.ringbuf_lost_seq) == (lost, report.gaps[0].gap_seq_last + 1)
