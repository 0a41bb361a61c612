"""Sustained decisions per second through decode + enrich + JSONL, on one core.

Each round fills the ring with N real records (an enrolled workload's UDP
connects, throttling off), then moves them with the agent's own pieces on one
thread: batch drain -> decode -> enrich -> JSONL sink (written to a tmpfs file).
The baseline, in the same run, is the one-ctypes-callback-per-record consumer
draining the same N records and doing nothing else.

Usage: sudo python3 bench/pipeline.py [--records N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from bench.ring_drain import POLICY, callback_drain
from netlogger import sandbox
from netlogger.config.check import check_source
from netlogger.config.source import parse
from netlogger.enforce import Enforcer, Target
from netlogger.kernel import cgroup, loader
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.enrich import Enricher
from netlogger.sinks.jsonl import JsonlSink
from netlogger.workload import Workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    policies = check_source(parse(POLICY, "bench")).policies
    rates: dict[str, list[float]] = {"callback": [], "pipeline": []}

    with ExitStack() as stack:
        net = stack.enter_context(sandbox.network(tag))
        scope = stack.enter_context(sandbox.cgroup(cgroup.root(), f"nlbench-{tag}"))
        producer = stack.enter_context(sandbox.cgroup(scope, "producer"))
        pin_root = Path(f"/sys/fs/bpf/nlbench-{tag}")
        stack.callback(loader.teardown, pin_root)
        settings = loader.Settings(ring_bytes=64 << 20, allowed_per_sec=0)
        plane = stack.enter_context(loader.loaded(pin_root, scope, settings))
        enforcer = Enforcer(plane, policies)
        enforcer.apply_policies(policies)
        enforcer.enroll(Target(producer, "bench", agent="bench-agent", project="bench"))
        ring = stack.enter_context(plane.reader())
        w = stack.enter_context(Workload(net.workload_ns, producer.path))
        out = Path(stack.enter_context(tempfile.TemporaryDirectory(dir="/dev/shm")))
        sink = JsonlSink(out / "egress.jsonl", 1 << 30, 2)
        stack.callback(sink.shutdown)
        by_id = policies.by_id()
        decoder = Decoder(
            lambda r: policies.rules[r].name if r in policies.rules else None,
            lambda p: by_id[p].name,
            "bench-host",
        )
        enricher = Enricher(plane.labels.lookup)

        def pipeline() -> int:
            records = decoder.decode_all(ring.drain())
            for record in records:
                enricher.enrich(record)
            sink.export(records)
            return len(records)

        for _ in range(args.rounds):
            for name, move in (
                ("callback", lambda: len(callback_drain(plane.ring_fd))),
                ("pipeline", pipeline),
            ):
                w("flood", family=4, addr=net.peer4, port=5000, count=args.records)
                start = time.perf_counter()
                moved = move()
                elapsed = time.perf_counter() - start
                assert moved == args.records, (name, moved)
                rates[name].append(args.records / elapsed)
        lost = plane.cgroup_state.lookup(producer.id).ringbuf_lost

    base = statistics.median(rates["callback"])
    pipe = statistics.median(rates["pipeline"])
    print(
        f"decode + enrich + JSONL, {args.records} records per round, median of {args.rounds} "
        f"({lost} lost)"
    )
    print(f"  callback consumer (drain only)   {base / 1e3:7.0f} k records/s   1.00x")
    print(f"  pipeline (drain..JSONL)          {pipe / 1e3:7.0f} k records/s   {pipe / base:.2f}x")
    print(f"target: >= 300 k/s -> {pipe / 1e3:.0f} k/s")


if __name__ == "__main__":
    main()
