"""Sustained decisions per second through decode + enrich + JSONL, on one core.

Each round fills the ring with N real records (an enrolled workload's UDP
connects, throttling and folding off), then moves them with the agent's own
pieces on one thread: batch drain -> decode -> enrich -> JSONL sink (written to
a tmpfs file). The baseline, in the same run, is the one-ctypes-callback-per-
record consumer draining the same N records and doing nothing else.

Usage: sudo python3 bench/pipeline.py [--records N] [--rounds R]
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Bench, agent_pipeline, arguments, bench_plane, rates
from bench.ring_drain import callback_drain


@dataclass
class Rates:
    callback: float  # records/s, the baseline
    pipeline: float
    lost: int


def measure(bench: Bench, records: int, rounds: int) -> Rates:
    producer = bench.child("producer", agent="bench-agent", project="bench")
    w = bench.workload(producer)
    out = Path(bench.stack.enter_context(tempfile.TemporaryDirectory(dir="/dev/shm")))
    ring = bench.stack.enter_context(bench.plane.reader())
    pipeline = agent_pipeline(bench, out)
    fill = lambda: w("flood", family=4, addr=bench.net.peer4, port=5000, count=records)  # noqa: E731
    measured = rates(
        rounds,
        records,
        fill,
        {
            "callback": lambda: len(callback_drain(bench.plane.ring_fd)),
            "pipeline": lambda: pipeline(ring),
        },
    )
    lost = bench.plane.cgroup_state.lookup(producer.id).ringbuf_lost
    return Rates(
        statistics.median(measured["callback"]), statistics.median(measured["pipeline"]), lost
    )


def report(r: Rates, records: int, rounds: int) -> None:
    print(
        f"decode + enrich + JSONL, {records} records per round, median of {rounds} ({r.lost} lost)"
    )
    print(f"  callback consumer (drain only)   {r.callback / 1e3:7.0f} k records/s   1.00x")
    print(
        f"  pipeline (drain..JSONL)          {r.pipeline / 1e3:7.0f} k records/s   "
        f"{r.pipeline / r.callback:.2f}x"
    )
    print(f"target: >= 300 k/s -> {r.pipeline / 1e3:.0f} k/s")


def main() -> None:
    args = arguments(__doc__, records=300_000, rounds=3)
    with bench_plane() as bench:
        r = measure(bench, args.records, args.rounds)
    report(r, args.records, args.rounds)


if __name__ == "__main__":
    main()
