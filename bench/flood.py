"""A deny flood with one odd attempt inside, folding on and off; then the pipeline rate (alone
and with OTLP beside it) and the hook costs: every figure of issue 16, in one run.

The flood is the issue's: an enrolled workload issues FLOOD denied UDP connects at
three destinations (a third each, one after another) with one connect to another
port in the middle, while the agent's own pipeline (drain -> decode -> enrich ->
JSONL on one thread) reads the ring, and then runs the kernel's flush, as the
agent does on stop. Folding off is the same flood through a plane without it.
For each: records written, decisions they stand for (folded = those beyond one
per record), decisions lost to a full ring, whether the odd one was recorded,
and records/s through the pipeline while the flood ran.

Usage: sudo python3 bench/flood.py [--flood N] [--records N] [--rounds R] [--count N]
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench import connect_cost, pipeline
from bench.harness import arguments, bench_plane
from netlogger.kernel import loader

RING = 8 << 20  # the agent's default ring
PORTS = (6000, 6001, 6002)  # three denied destinations
ODD = 7000


@dataclass
class Flood:
    records: int
    stands_for: int
    lost: int
    odd_recorded: bool
    records_per_s: float
    seconds: float


def flood(settings: loader.Settings, size: int) -> Flood:
    with bench_plane(settings) as bench:
        cg = bench.child("flooder", agent="bench-agent", project="bench")
        w = bench.workload(cg)
        out = Path(bench.stack.enter_context(tempfile.TemporaryDirectory(dir="/dev/shm")))
        ring = bench.stack.enter_context(bench.plane.reader())
        pipe = pipeline.agent_pipeline(bench, out)
        move = lambda: pipe(ring)  # noqa: E731
        peer = bench.net.peer4

        def attack() -> None:
            for n, port in enumerate(PORTS):
                w("flood", family=4, addr=peer, port=port, count=size // len(PORTS))
                if n == 0:
                    w("connect", family=4, type="udp", addr=peer, port=ODD)

        moved = 0
        start = time.perf_counter()
        attacker = threading.Thread(target=attack)
        attacker.start()
        while attacker.is_alive():
            moved += move()
        attacker.join()
        bench.plane.flush_folds()
        moved += move()
        elapsed = time.perf_counter() - start
        lines = [json.loads(line) for line in (out / "egress.jsonl").read_bytes().splitlines()]
        state = bench.plane.cgroup_state.lookup(cg.id)
    return Flood(
        records=len(lines),
        stands_for=sum(x.get("repeat.count", 1) for x in lines),
        lost=state.ringbuf_lost,
        odd_recorded=any(x.get("dst_port") == str(ODD) for x in lines),
        records_per_s=moved / elapsed,
        seconds=elapsed,
    )


def main() -> None:
    args = arguments(__doc__, flood=600_000, records=300_000, rounds=3, count=20_000)
    size = args.flood // len(PORTS) * len(PORTS)
    runs = {
        "folding on": flood(loader.Settings(ring_bytes=RING, allowed_per_sec=0), size),
        "folding off": flood(
            loader.Settings(ring_bytes=RING, allowed_per_sec=0, fold_window_ns=0), size
        ),
    }
    print(f"deny flood: {size} connects at 3 destinations + 1 odd, ring {RING >> 20} MiB")
    print(
        "  case          records  stand for   folded     lost  odd recorded  records/s  "
        "decisions/s  sum ok"
    )
    for name, f in runs.items():
        ok = f.stands_for + f.lost == size + 1
        print(
            f"  {name:<12} {f.records:8} {f.stands_for:10} {f.stands_for - f.records:8} "
            f"{f.lost:8}  {'yes' if f.odd_recorded else 'NO':<12} {f.records_per_s:9.0f}  "
            f"{f.stands_for / f.seconds:11.0f}  {'yes' if ok else 'NO'}"
        )
    pipeline.report(pipeline.measure_both(args.records, args.rounds), args.records, args.rounds)
    with bench_plane(connect_cost.NO_FOLD) as bench:
        costs = connect_cost.measure(bench, args.count, args.rounds * 4 - 1)
    connect_cost.report(costs, args.count, args.rounds * 4 - 1)


if __name__ == "__main__":
    main()
