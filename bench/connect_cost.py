"""What the programs cost a UDP connect(), as ratios against no program, in one run.

Four cgroups, one workload moved between them round by round:
  bare      outside the scope: no program runs
  null      outside the scope, with a program that only returns "allow" attached:
            what any cgroup connect4 program costs, before it does anything
  passing   inside the scope, not enrolled: the programs run and pass
  recorded  enrolled, every connect allowed and recorded (token bucket off)
Each round measures all four in turn; the medians are compared.

Usage: sudo python3 bench/connect_cost.py [--count N] [--rounds R]
"""

from __future__ import annotations

import ctypes
import os
import statistics
import threading
from contextlib import ExitStack

from bench.harness import arguments, bench_plane
from netlogger.kernel import libbpf
from netlogger.kernel.cgroup import Cgroup
from netlogger.kernel.spec import AttachType

# r0 = 1; exit: allow, and nothing else.
ALLOW_ALL = bytes.fromhex("b7000000010000009500000000000000")
CGROUP_SOCK_ADDR = 18
INET4_CONNECT = AttachType.CGROUP_INET4_CONNECT


def attach_null_program(cg: Cgroup, stack: ExitStack) -> None:
    opts = libbpf.ProgLoadOpts(
        sz=ctypes.sizeof(libbpf.ProgLoadOpts), expected_attach_type=INET4_CONNECT
    )
    prog = libbpf.call(
        libbpf.bpf_prog_load,
        libbpf.Op.LOAD,
        "load null program",
        CGROUP_SOCK_ADDR,
        None,
        b"GPL",
        ALLOW_ALL,
        2,
        ctypes.byref(opts),
    )
    stack.callback(os.close, prog)
    cg_fd = os.open(cg.path, os.O_RDONLY | os.O_DIRECTORY)
    stack.callback(os.close, cg_fd)
    link = libbpf.call(
        libbpf.bpf_link_create,
        libbpf.Op.ATTACH,
        "attach null program",
        prog,
        cg_fd,
        INET4_CONNECT,
        None,
    )
    stack.callback(os.close, link)  # the last fd of an unpinned link: closing detaches it


def main() -> None:
    args = arguments(__doc__, count=200_000, rounds=7)
    with bench_plane() as bench:
        stack, net, plane = bench.stack, bench.net, bench.plane
        bare = bench.outside("nlbench-bare")
        null = bench.outside("nlbench-null")
        attach_null_program(null, stack)
        passing = bench.child("passing", enroll=False)
        recorded = bench.child("recorded")
        ring = stack.enter_context(plane.reader())
        stop = threading.Event()
        drained = [0]

        def drain() -> None:  # keep the ring from filling, as the agent would
            while not stop.is_set():
                if ring.wait(0.05):
                    drained[0] += len(ring.drain())

        drainer = threading.Thread(target=drain)
        drainer.start()
        stack.callback(drainer.join)
        stack.callback(stop.set)

        w = bench.workload(bare)
        cgroups = {"bare": bare, "null": null, "passing": passing, "recorded": recorded}
        samples: dict[str, list[float]] = {name: [] for name in cgroups}
        w("time_connects", family=4, addr=net.peer4, port=5000, count=args.count // 4)  # warm up
        for _ in range(args.rounds):
            for name, cg in cgroups.items():
                (cg.path / "cgroup.procs").write_text(str(w.pid))
                samples[name].append(
                    w("time_connects", family=4, addr=net.peer4, port=5000, count=args.count)
                )
        state = plane.cgroup_state.lookup(recorded.id)

    base = statistics.median(samples["bare"])
    print(f"UDP connect(), median of {args.rounds} rounds x {args.count} connects")
    for name in samples:
        med = statistics.median(samples[name])
        print(f"  {name:<9} {med:8.0f} ns/connect   {med / base:5.3f}x bare")
    print(
        f"  recorded: {state.seq} decisions, {drained[0]} records drained, "
        f"{state.ringbuf_lost} lost to a full ring"
    )
    null = statistics.median(samples["null"])
    over = {name: statistics.median(samples[name]) - null for name in ("passing", "recorded")}
    print(
        f"  our logic over the null program: passing +{over['passing']:.0f} ns, "
        f"recorded +{over['recorded']:.0f} ns"
    )
    print(
        "targets: passing <= 1.05x, recorded <= 1.25x -> "
        f"passing {statistics.median(samples['passing']) / base:.3f}x, "
        f"recorded {statistics.median(samples['recorded']) / base:.3f}x"
    )


if __name__ == "__main__":
    main()
