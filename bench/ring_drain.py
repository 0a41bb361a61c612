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

import ctypes
import statistics

from bench.harness import arguments, bench_plane, rates
from netlogger.kernel import libbpf
from netlogger.pipeline.decode import Decoder


def callback_drain(ring_fd: int) -> list[bytes]:
    out: list[bytes] = []

    @libbpf.RingSampleFn
    def on_sample(_ctx: int, data: int, size: int) -> int:
        out.append(ctypes.string_at(data, size))
        return 0

    rb = libbpf.call_ptr(
        libbpf.ring_buffer__new, libbpf.Op.OPEN, "ring_buffer__new", ring_fd, on_sample, None, None
    )
    try:
        libbpf.ring_buffer__consume(rb)
    finally:
        libbpf.ring_buffer__free(rb)
    return out


def main() -> None:
    args = arguments(__doc__, records=300_000, rounds=3)
    with bench_plane() as bench:
        plane = bench.plane
        producer = bench.child("producer")
        ring = bench.stack.enter_context(plane.reader())
        w = bench.workload(producer)
        decoder = Decoder(lambda _r: "rule", lambda _p: "bench")
        net = bench.net

        readers = {
            "callback": lambda: len(callback_drain(plane.ring_fd)),
            "batch": lambda: len(ring.drain()),
            "batch, split": lambda: len(list(ring.drain())),
            "callback+decode": lambda: len(decoder.decode_all(callback_drain(plane.ring_fd))),
            "batch+decode": lambda: len(decoder.decode_all(ring.drain())),
        }
        fill = lambda: w("flood", family=4, addr=net.peer4, port=5000, count=args.records)  # noqa: E731
        measured = rates(args.rounds, args.records, fill, readers)
        lost = plane.cgroup_state.lookup(producer.id).ringbuf_lost

    base = statistics.median(measured["callback"])
    print(
        f"ring drain, {args.records} records per drain, median of {args.rounds} rounds "
        f"({lost} lost)"
    )
    for name, values in measured.items():
        med = statistics.median(values)
        print(f"  {name:<16} {med / 1e6:6.2f} M records/s   {med / base:6.2f}x callback")
    batch = statistics.median(measured["batch"]) / base
    decoded = statistics.median(measured["batch+decode"]) / statistics.median(
        measured["callback+decode"]
    )
    print(f"target: batch >= 5x callback -> {batch:.2f}x (decoded: {decoded:.2f}x)")


if __name__ == "__main__":
    main()
