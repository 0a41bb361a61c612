"""What the packet layers cost, as ratios against no program, in one run.

The container backstop, per packet: a workload in a network namespace sends UDP
datagrams over a veth whose other end is in this host's namespace; the sender
pays for the receive side too (veth delivery runs in its softirq), so the time
per sendto() is the time per packet. Round by round, the veth's host side has
  bare      no filter
  passing   the backstop, the destination allowed by the policy (the common case)
  dropping  the backstop, the destination denied: dropped and recorded, rate-limited

The LSM layer, per socket(): an AF_UNIX socket() (which no cgroup socket hook
sees, while the LSM hook runs for every family) made in a cgroup outside the
scope and in an enrolled one. Where the kernel refuses the layer, both rows are
still measured and the reason is printed: the ratio then shows no program.

Usage: sudo python3 bench/packet_layers.py [--count N] [--rounds R]
"""

from __future__ import annotations

import os
import socket
import statistics
import threading
from contextlib import ExitStack

from bench.harness import arguments, bench_plane
from netlogger import backstop, sandbox
from netlogger.kernel import abi, libbpf, loader
from netlogger.kernel.spec import BACKSTOP

HOST4, WORKLOAD4, PORT, DENIED_PORT = "198.19.0.1", "198.19.0.2", 5000, 5001
POLICY = (
    f"policies:\n  bench:\n    allow:\n      - {{cidr: {HOST4}/32, ports: [{PORT}], proto: udp}}\n"
)


def main() -> None:
    args = arguments(__doc__, count=200_000, rounds=7)
    settings = loader.Settings(ring_bytes=64 << 20)  # the default rate limit on drop records
    with bench_plane(settings, POLICY) as bench, ExitStack() as stack:
        plane = bench.plane
        owner = bench.child("frames")  # the enrolled cgroup the veth's frames answer to
        outside = bench.outside("nlbench-sockets")
        enrolled = bench.child("sockets")
        ifindex = stack.enter_context(sandbox.host_veth(bench.net.workload_ns, HOST4, WORKLOAD4))
        sink = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sink.bind((HOST4, PORT))  # never read: a full buffer drops cheaply, no ICMP sent back
        ring = stack.enter_context(plane.reader())
        stop = threading.Event()

        def drain() -> None:  # keep the ring from filling, as the agent would
            while not stop.wait(0.05):
                ring.drain()

        drainer = threading.Thread(target=drain)
        drainer.start()
        stack.callback(drainer.join)
        stack.callback(stop.set)

        w = bench.workload(outside)
        w("time_sendto", addr=HOST4, port=PORT, count=args.count // 4)  # warm up, learn ARP
        samples: dict[str, list[float]] = {"bare": [], "passing": [], "dropping": []}
        sockets: dict[str, list[float]] = {"outside": [], "enrolled": []}
        # The kernel's own account of the program: run count and time, while stats are on.
        runs, run_ns = {"passing": 0, "dropping": 0}, {"passing": 0, "dropping": 0}
        stats_fd = libbpf.bpf_enable_stats(libbpf.BPF_STATS_RUN_TIME)
        if stats_fd >= 0:
            stack.callback(os.close, stats_fd)
        plane.veths.update(ifindex, abi.Veth(owner.id))
        for _ in range(args.rounds):
            backstop.detach_filter(ifindex)
            samples["bare"].append(w("time_sendto", addr=HOST4, port=PORT, count=args.count))
            backstop.attach_filter(ifindex, plane.prog_fds[BACKSTOP])
            for name, port in (("passing", PORT), ("dropping", DENIED_PORT)):
                before = plane.program_stats()[BACKSTOP]
                samples[name].append(w("time_sendto", addr=HOST4, port=port, count=args.count))
                after = plane.program_stats()[BACKSTOP]
                runs[name] += after[0] - before[0]
                run_ns[name] += after[1] - before[1]
            for name, cg in (("outside", outside), ("enrolled", enrolled)):
                (cg.path / "cgroup.procs").write_text(str(w.pid))
                sockets[name].append(w("time_sockets", count=args.count))
            (outside.path / "cgroup.procs").write_text(str(w.pid))
        backstop.detach_filter(ifindex)
        state = plane.cgroup_state.lookup(owner.id)

    base = statistics.median(samples["bare"])
    print(f"UDP sendto() over a veth, median of {args.rounds} rounds x {args.count} packets")
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"  {name:<9} {med:8.0f} ns/packet   {med / base:5.3f}x bare   +{med - base:.0f} ns")
    assert state is not None
    for name in runs:
        if runs[name]:
            per_run = run_ns[name] / runs[name]
            print(f"  {name}: the program itself {per_run:.0f} ns/run (kernel stats)")
    print(f"  dropping: {state.seq} drops decided, {state.throttled} records rate-limited away")
    base = statistics.median(sockets["outside"])
    enrolled_ns = statistics.median(sockets["enrolled"])
    why = plane.layers["lsm"]
    print(f"AF_UNIX socket()+close(), median of {args.rounds} rounds x {args.count}")
    print(f"  outside   {base:8.0f} ns/socket")
    print(f"  enrolled  {enrolled_ns:8.0f} ns/socket   {enrolled_ns / base:5.3f}x outside")
    print("  LSM layer: loaded" if why is None else f"  LSM layer: not loaded here ({why})")


if __name__ == "__main__":
    main()
