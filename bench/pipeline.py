"""Sustained decisions per second through decode + enrich + JSONL, on one core.

Each round fills the ring with N real records (an enrolled workload's UDP
connects, throttling off), then moves them with the agent's own pieces on one
thread: batch drain -> decode -> enrich -> JSONL sink (written to a tmpfs file).
The baseline, in the same run, is the one-ctypes-callback-per-record consumer
draining the same N records and doing nothing else.

Usage: sudo python3 bench/pipeline.py [--records N] [--rounds R]
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from bench.harness import arguments, bench_plane, rates
from bench.ring_drain import callback_drain
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.enrich import AttributionEnricher
from netlogger.sinks.jsonl import JsonlSink


def main() -> None:
    args = arguments(__doc__, records=300_000, rounds=3)
    with bench_plane() as bench, tempfile.TemporaryDirectory(dir="/dev/shm") as out:
        plane, policies = bench.plane, bench.policies
        producer = bench.child("producer", agent="bench-agent", project="bench")
        ring = bench.stack.enter_context(plane.reader())
        w = bench.workload(producer)
        sink = JsonlSink(Path(out) / "egress.jsonl", 1 << 30, 2)
        bench.stack.callback(sink.shutdown)
        by_id = policies.by_id()
        decoder = Decoder(
            lambda r: policies.rules[r].name if r in policies.rules else None,
            lambda p: by_id[p].name,
            "bench-host",
        )
        enricher = AttributionEnricher(plane.labels.lookup)

        def pipeline() -> int:
            records = decoder.decode_all(ring.drain())
            enricher.enrich(records)
            sink.export(records)
            return len(records)

        fill = lambda: w("flood", family=4, addr=bench.net.peer4, port=5000, count=args.records)  # noqa: E731
        measured = rates(
            args.rounds,
            args.records,
            fill,
            {"callback": lambda: len(callback_drain(plane.ring_fd)), "pipeline": pipeline},
        )
        lost = plane.cgroup_state.lookup(producer.id).ringbuf_lost

    base = statistics.median(measured["callback"])
    pipe = statistics.median(measured["pipeline"])
    print(
        f"decode + enrich + JSONL, {args.records} records per round, median of {args.rounds} "
        f"({lost} lost)"
    )
    print(f"  callback consumer (drain only)   {base / 1e3:7.0f} k records/s   1.00x")
    print(f"  pipeline (drain..JSONL)          {pipe / 1e3:7.0f} k records/s   {pipe / base:.2f}x")
    print(f"target: >= 300 k/s -> {pipe / 1e3:.0f} k/s")


if __name__ == "__main__":
    main()
