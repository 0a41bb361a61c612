"""What the programs cost a UDP connect(), as ratios against no program, in one run.

Three cgroups, one workload moved between them round by round:
  bare      outside the scope: no program runs
  passing   inside the scope, not enrolled: the programs run and pass
  recorded  enrolled, every connect allowed and recorded (token bucket off)
Each round measures all three in turn; the medians are compared.

Usage: sudo python3 bench/connect_cost.py [--count N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import uuid
from contextlib import ExitStack
from pathlib import Path

from netlogger import sandbox
from netlogger.config.check import check_source
from netlogger.config.source import parse
from netlogger.enforce import Enforcer, Target
from netlogger.kernel import cgroup, loader
from netlogger.workload import Workload

POLICY = "policies:\n  bench:\n    allow:\n      - {cidr: 198.18.0.0/24, ports: [5000]}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    policies = check_source(parse(POLICY, "bench")).policies

    with ExitStack() as stack:
        net = stack.enter_context(sandbox.network(tag))
        root = cgroup.root()
        bare = stack.enter_context(sandbox.cgroup(root, f"nlbench-bare-{tag}"))
        scope = stack.enter_context(sandbox.cgroup(root, f"nlbench-scope-{tag}"))
        passing = stack.enter_context(sandbox.cgroup(scope, "passing"))
        recorded = stack.enter_context(sandbox.cgroup(scope, "recorded"))
        pin_root = Path(f"/sys/fs/bpf/nlbench-{tag}")
        stack.callback(loader.teardown, pin_root)
        settings = loader.Settings(ring_bytes=64 << 20, allowed_per_sec=0)
        plane = stack.enter_context(loader.loaded(pin_root, scope, settings))
        enforcer = Enforcer(plane, policies)
        enforcer.apply_policies(policies)
        enforcer.enroll(Target(recorded, "bench"))
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

        w = stack.enter_context(Workload(net.workload_ns, bare.path))
        samples: dict[str, list[float]] = {"bare": [], "passing": [], "recorded": []}
        w("time_connects", family=4, addr=net.peer4, port=5000, count=args.count // 4)  # warm up
        for _ in range(args.rounds):
            for name, cg in (("bare", bare), ("passing", passing), ("recorded", recorded)):
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
    print(
        "targets: passing <= 1.05x, recorded <= 1.25x -> "
        f"passing {statistics.median(samples['passing']) / base:.3f}x, "
        f"recorded {statistics.median(samples['recorded']) / base:.3f}x"
    )


if __name__ == "__main__":
    main()
