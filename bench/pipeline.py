"""Sustained decisions per second through decode + enrich + JSONL, and with OTLP beside it.

Each round fills the ring with N real records (an enrolled workload's UDP
connects, throttling and folding off), then moves them with the agent's own
pieces. The baseline, in the same run, is the one-ctypes-callback-per-record
consumer draining the same N records and doing nothing else.

* pipeline: batch drain -> decode -> enrich -> JSONL sink (a tmpfs file), on one thread;
* with OTLP: the same batches through the agent's fan-out to the JSONL sink and the
  OTLP sink (encode, spool, send over mTLS to a receiver that acknowledges at once),
  this process pinned to one core with every thread it has (fan-out lanes, gRPC);
  the receiver runs in its own process on the other core. A round ends when the
  file has every record and the receiver has acknowledged every one.

Usage: sudo python3 bench/pipeline.py [--records N] [--rounds R]
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Bench, agent_pipeline, arguments, bench_plane, rates
from bench.otlp_sink import _serve
from bench.ring_drain import callback_drain
from monitor import certs as monitor_certs
from netlogger.agent import QUEUE_RECORDS
from netlogger.pipeline.fanout import Fanout
from netlogger.sinks.jsonl import JsonlSink
from netlogger.sinks.otlp import OtlpExportSink
from netlogger.sinks.otlp.settings import Settings, Tls


@dataclass
class Rates:
    callback: float  # records/s, the baseline
    pipeline: float
    lost: int
    with_otlp: float = 0.0


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


def measure_with_otlp(bench: Bench, records: int, rounds: int, one_core: bool = True) -> float:
    """Records/s into both sinks (median of `rounds`); `one_core` pins this process."""
    producer = bench.child("otlp-producer", agent="bench-agent", project="bench")
    w = bench.workload(producer)
    tmp = Path(bench.stack.enter_context(tempfile.TemporaryDirectory(dir="/dev/shm")))
    certs = monitor_certs.generate(tmp / "monitor")
    ctx = multiprocessing.get_context("spawn")
    answer, answer_w = ctx.Pipe(duplex=False)
    ask_r, ask = ctx.Pipe(duplex=False)
    server = ctx.Process(target=_serve, args=(str(tmp / "monitor"), answer_w, ask_r), daemon=True)
    server.start()
    bench.stack.callback(server.join, 30)
    bench.stack.callback(ask.send, "stop")
    port = answer.recv()
    cores = sorted(os.sched_getaffinity(0))
    if one_core:
        os.sched_setaffinity(0, {cores[0]})  # before any thread of the sinks starts
        bench.stack.callback(os.sched_setaffinity, 0, set(cores))
    settings = Settings(
        host="127.0.0.1",
        port=port,
        tls=Tls(certs.ca_cert, certs.client_cert, certs.client_key),
        spool_dir=tmp / "spool",
        spool_max_bytes=4 << 30,
    )
    jsonl = JsonlSink(tmp / "egress.jsonl", 1 << 34, 0)
    otlp = OtlpExportSink(settings, "bench-host")
    bench.stack.callback(jsonl.shutdown)
    bench.stack.callback(otlp.shutdown)
    fanout = Fanout([jsonl, otlp], QUEUE_RECORDS, lambda: "")
    bench.stack.callback(fanout.close)
    ring = bench.stack.enter_context(bench.plane.reader())
    move = agent_pipeline(bench, tmp, publish=fanout.publish)
    out: list[float] = []
    for round_ in range(1, rounds + 1):
        w("flood", family=4, addr=bench.net.peer4, port=5000, count=records)
        start = time.perf_counter()
        assert move(ring) == records
        until(lambda: all(s.exported >= round_ * records for s in fanout.stats()))  # noqa: B023
        until(lambda: otlp.status().spooled_records == 0)
        out.append(records / (time.perf_counter() - start))
        ask.send("count")
        got = answer.recv()  # what arrived since the last ask
        assert got == records, f"the receiver has {got} of this round's {records} records"
        assert all(s.dropped == 0 for s in fanout.stats()), fanout.stats()
    return statistics.median(out)


def until(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 300
    while not done():
        assert time.monotonic() < deadline, "the sinks did not finish in 300 s"
        time.sleep(0.005)


def report(r: Rates, records: int, rounds: int) -> None:
    print(
        f"decode + enrich + JSONL, {records} records per round, median of {rounds} ({r.lost} lost)"
    )
    print(f"  callback consumer (drain only)   {r.callback / 1e3:7.0f} k records/s   1.00x")
    print(
        f"  pipeline (drain..JSONL)          {r.pipeline / 1e3:7.0f} k records/s   "
        f"{r.pipeline / r.callback:.2f}x"
    )
    if r.with_otlp:
        print(
            f"  with OTLP beside (one core)      {r.with_otlp / 1e3:7.0f} k records/s   "
            f"{r.with_otlp / r.callback:.2f}x"
        )
    print(f"target: pipeline >= 300 k/s -> {r.pipeline / 1e3:.0f} k/s")
    if r.with_otlp:
        print(f"target: with OTLP beside >= 100 k/s -> {r.with_otlp / 1e3:.0f} k/s")


def measure_both(records: int, rounds: int) -> Rates:
    """The pipeline alone, then with OTLP beside it, each on a plane of its own."""
    with bench_plane() as bench:
        r = measure(bench, records, rounds)
    with bench_plane() as bench:
        r.with_otlp = measure_with_otlp(bench, records // 3, rounds)
    return r


def main() -> None:
    args = arguments(__doc__, records=300_000, rounds=3)
    report(measure_both(args.records, args.rounds), args.records, args.rounds)


if __name__ == "__main__":
    main()
