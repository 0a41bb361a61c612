"""Ring drain rate: the batch reader against one ctypes callback per record, in one run.

Each round fills the ring with N real records (an enrolled workload's UDP
connects, throttling off) and drains it once with each reader:
  callback         libbpf ring_buffer__consume() calling a ctypes callback per record,
                   which copies the record out (a list of N byte strings)
  batch            RingReader.drain(): one copy of the region, headers validated in bulk
  batch, split     the same, then split into a list of N byte strings (callback's product)
  callback+decode  the callback's list decoded into Records
  batch+decode     the batch decoded into Records (one struct pass over the region)

Usage: sudo python3 bench/ring_drain.py [--records N] [--rounds R]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from netlogger import sandbox
from netlogger.config.check import check_source
from netlogger.config.source import parse
from netlogger.enforce import Enforcer, Target
from netlogger.kernel import cgroup, libbpf, loader
from netlogger.pipeline.decode import Decoder
from netlogger.workload import Workload

POLICY = "policies:\n  bench:\n    allow:\n      - {cidr: 198.18.0.0/24, ports: [5000]}\n"


def callback_drain(ring_fd: int) -> list[bytes]:
    out: list[bytes] = []

    @libbpf.RingSampleFn
    def on_sample(_ctx: int, data: int, size: int) -> int:
        out.append(ctypes.string_at(data, size))
        return 0

    rb = libbpf.call_ptr(
        libbpf.ring_buffer__new, "ring_buffer__new", ring_fd, on_sample, None, None
    )
    try:
        libbpf.ring_buffer__consume(rb)
    finally:
        libbpf.ring_buffer__free(rb)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    policies = check_source(parse(POLICY, "bench")).policies
    rates: dict[str, list[float]] = {}

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
        enforcer.enroll(Target(producer, "bench"))
        ring = stack.enter_context(plane.reader())
        w = stack.enter_context(Workload(net.workload_ns, producer.path))
        decoder = Decoder(lambda _r: "rule", lambda _p: "bench")

        def fill() -> None:
            w("flood", family=4, addr=net.peer4, port=5000, count=args.records)

        readers = {
            "callback": lambda: callback_drain(plane.ring_fd),
            "batch": ring.drain,
            "batch, split": lambda: list(ring.drain()),
            "callback+decode": lambda: decoder.decode_all(callback_drain(plane.ring_fd)),
            "batch+decode": lambda: decoder.decode_all(ring.drain()),
        }
        for _ in range(args.rounds):
            for name, drain in readers.items():
                fill()
                start = time.perf_counter()
                got = drain()
                elapsed = time.perf_counter() - start
                assert len(got) == args.records, (name, len(got))
                rates.setdefault(name, []).append(args.records / elapsed)
        lost = plane.cgroup_state.lookup(producer.id).ringbuf_lost

    base = statistics.median(rates["callback"])
    print(
        f"ring drain, {args.records} records per drain, median of {args.rounds} rounds "
        f"({lost} lost)"
    )
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"  {name:<16} {med / 1e6:6.2f} M records/s   {med / base:6.2f}x callback")
    batch = statistics.median(rates["batch"]) / base
    decoded = statistics.median(rates["batch+decode"]) / statistics.median(rates["callback+decode"])
    print(f"target: batch >= 5x callback -> {batch:.2f}x (decoded: {decoded:.2f}x)")


if __name__ == "__main__":
    main()
