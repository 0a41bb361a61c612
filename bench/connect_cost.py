"""What the programs cost a UDP connect(), over a program that does nothing, in one run.

One workload moves between cgroups, a short burst per case per round:
  bare      outside every scope: no program runs
  null      outside every scope, with a program that only returns "allow" attached:
            the floor of any cgroup connect4 program on this machine
  passing   inside the scope, not enrolled: the programs run and pass
  recorded  enrolled, every connect allowed and recorded, folding off (the old path)
  fold+rec  enrolled, folding on with a 1 ns window: the fold lookup, lock and slot
            bookkeeping run, and every connect is still recorded (the fold path's worst)
  folded    enrolled, folding on (10 ms): repeats are counted, not written

Two figures per case. The syscall's wall time (what a workload feels), and the
programs' own run time per run from the kernel's BPF statistics (run_time_ns /
run_cnt of the program that ran, read around each burst): the second leaves out
preemption and the syscall's own noise, which on a loaded machine swamp a
difference of tens of ns.

This machine drifts (shared CPUs, other tenants): a case measured a minute after
another is not comparable to it. So every round runs every case back to back, in
an order rotated round by round, and a cost is the median over rounds of (case -
null) within the same round; medians of whole cases would mix rounds. Nothing
drains the ring while a case is timed (a drainer thread competes for the two
CPUs and makes "recorded" look several hundred ns dearer); the ring is emptied
between rounds and is big enough that it never fills.

Usage: sudo python3 bench/connect_cost.py [--count N] [--rounds R]
"""

from __future__ import annotations

import ctypes
import os
import statistics
from contextlib import ExitStack
from dataclasses import dataclass

from bench.harness import Bench, arguments, bench_plane
from netlogger.kernel import libbpf, loader
from netlogger.kernel.cgroup import Cgroup
from netlogger.kernel.objinfo import prog_info
from netlogger.kernel.spec import AttachType

# r0 = 1; exit: allow, and nothing else.
ALLOW_ALL = bytes.fromhex("b7000000010000009500000000000000")
CGROUP_SOCK_ADDR = 18
INET4_CONNECT = AttachType.CGROUP_INET4_CONNECT
RING = 64 << 20
NO_FOLD = loader.Settings(ring_bytes=RING, allowed_per_sec=0, fold_window_ns=0)
FOLD_EVERY_ONE_RECORDED = loader.Settings(ring_bytes=RING, allowed_per_sec=0, fold_window_ns=1)
FOLD = loader.Settings(ring_bytes=RING, allowed_per_sec=0, fold_window_ns=10_000_000)
TARGETS = {"passing": 100.0, "fold+rec": 400.0}  # ns over the null program


def attach_null_program(cg: Cgroup, stack: ExitStack) -> int:
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
    return prog


@dataclass
class Costs:
    ns: dict[str, list[float]]  # ns/connect per case, one per round
    over_null: dict[str, float]  # median over rounds of (case - null), per case
    run_ns: dict[str, float]  # the connect4 program's own ns per run, per case
    run_over_null: dict[str, float]  # median over rounds of (run ns - null's run ns)
    recorded: int  # decisions of the recorded cases
    lost: int  # of them lost to a full ring (must be 0 for the figures to hold)


def measure(bench: Bench, count: int, rounds: int) -> Costs:
    """The cases above; `bench` is a plane loaded with NO_FOLD."""
    stack = bench.stack
    fold_rec = stack.enter_context(bench_plane(FOLD_EVERY_ONE_RECORDED))
    fold = stack.enter_context(bench_plane(FOLD))
    null = bench.outside("nlbench-null")
    null_fd = attach_null_program(null, stack)
    cases = {
        "bare": bench.outside("nlbench-bare"),
        "null": null,
        "passing": bench.child("passing", enroll=False),
        "recorded": bench.child("recorded"),
        "fold+rec": fold_rec.child("fold-rec"),
        "folded": fold.child("folded"),
    }
    planes = [bench.plane, fold_rec.plane, fold.plane]
    prog_fd = {
        "bare": None,
        "null": null_fd,
        "passing": bench.plane.prog_fds["nl_connect4"],
        "recorded": bench.plane.prog_fds["nl_connect4"],
        "fold+rec": fold_rec.plane.prog_fds["nl_connect4"],
        "folded": fold.plane.prog_fds["nl_connect4"],
    }
    stats = libbpf.bpf_enable_stats(libbpf.BPF_STATS_RUN_TIME)
    if stats < 0:
        raise SystemExit(f"error: cannot turn on BPF run-time statistics: errno {-stats}")
    stack.callback(os.close, stats)
    runs: dict[str, list[float]] = {name: [] for name in cases}
    rings = [stack.enter_context(p.reader()) for p in planes]
    w = bench.workload(cases["bare"])
    dst = {"family": 4, "addr": bench.net.peer4, "port": 5000}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    w("time_connects", **dst, count=count)  # warm up
    names = list(cases)
    for n in range(rounds):
        order = names[n % len(names) :] + names[: n % len(names)]
        for name in order:
            (cases[name].path / "cgroup.procs").write_text(str(w.pid))
            fd = prog_fd[name]
            before = prog_info(fd) if fd is not None else None
            samples[name].append(w("time_connects", **dst, count=count))
            if fd is not None and before is not None:
                after = prog_info(fd)
                ran = after.run_cnt - before.run_cnt
                runs[name].append((after.run_time_ns - before.run_time_ns) / max(ran, 1))
        for ring in rings:
            ring.drain()
    states = [
        plane.cgroup_state.lookup(cases[name].id)
        for plane, name in zip(planes, ["recorded", "fold+rec", "folded"], strict=True)
    ]
    over = {
        name: statistics.median(c - z for c, z in zip(samples[name], samples["null"], strict=True))
        for name in names
        if name != "null"
    }
    run_over = {
        name: statistics.median(c - z for c, z in zip(runs[name], runs["null"], strict=True))
        for name in names
        if name not in ("null", "bare")
    }
    run_ns = {name: statistics.median(v) for name, v in runs.items() if v}
    recorded = states[0].seq + states[1].seq
    lost = states[0].ringbuf_lost + states[1].ringbuf_lost
    return Costs(samples, over, run_ns, run_over, recorded, lost)


def report(costs: Costs, count: int, rounds: int) -> None:
    print(f"UDP connect(), {rounds} interleaved rounds x {count} connects per case")
    print("  case        syscall ns  (-null, median of rounds)   program ns/run  (-null)")
    null = statistics.median(costs.ns["null"])
    for name, ns in costs.ns.items():
        med = statistics.median(ns)
        over = f"{costs.over_null[name]:+7.0f}" if name != "null" else "       "
        run = f"{costs.run_ns[name]:7.0f}" if name in costs.run_ns else "      -"
        run_over = f"{costs.run_over_null[name]:+7.0f}" if name in costs.run_over_null else ""
        print(f"  {name:<9} {med:10.0f} {med / null:6.3f}x {over}          {run}  {run_over}")
    print(f"  recorded cases: {costs.recorded} decisions, {costs.lost} lost to a full ring")
    for name, target in TARGETS.items():
        wall, own = costs.over_null[name], costs.run_over_null[name]
        verdict = "met" if own <= target else "MISSED"
        print(
            f"target: {name} <= +{target:.0f} ns over null -> program {own:+.0f} ns ({verdict}), "
            f"syscall {wall:+.0f} ns"
        )


def main() -> None:
    args = arguments(__doc__, count=20_000, rounds=11)
    with bench_plane(NO_FOLD) as bench:
        costs = measure(bench, args.count, args.rounds)
    report(costs, args.count, args.rounds)


if __name__ == "__main__":
    main()
