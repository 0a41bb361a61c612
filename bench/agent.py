"""The running agent: syscall-to-`tail` latency, and memory with many enrolled cgroups.

Starts `netlogger run` (JSONL sink, control socket) on a scope of its own, then:
  latency   a workload makes one denied connect every 5 ms; a `tail` subscriber
            compares each record's kernel timestamp with CLOCK_BOOTTIME on arrival
  memory    the agent's RSS idle with no enrollment (the baseline), then with
            1000 enrolled cgroups after traffic from some of them

Usage: sudo python3 -m bench.agent [--records N] [--cgroups N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import yaml

from netlogger import control, sandbox
from netlogger.kernel import cgroup, pins
from netlogger.workload import Workload


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for_agent(socket: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            control.request(socket, "status")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--cgroups", type=int, default=1000)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        net = stack.enter_context(sandbox.network(tag))
        scope = stack.enter_context(sandbox.cgroup(cgroup.root(), f"nlbench-{tag}"))
        pin_root = Path(f"/sys/fs/bpf/nlbench-{tag}")
        stack.callback(pins.teardown, pin_root)
        sock = work / "control.sock"
        config = work / "netlogger.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "scope": str(scope.path),
                    "pin_root": str(pin_root),
                    "control_socket": str(sock),
                    "sinks": [{"type": "jsonl", "path": str(work / "egress.jsonl")}],
                }
            )
        )
        agent = subprocess.Popen(
            [sys.executable, "-m", "netlogger", "run", "--config", str(config)],
            stderr=subprocess.DEVNULL,
        )
        stack.callback(agent.wait)
        stack.callback(agent.terminate)
        wait_for_agent(sock)
        time.sleep(1)
        idle = rss_mb(agent.pid)

        first = stack.enter_context(sandbox.cgroup(scope, "w0"))
        control.request(sock, "enroll", cgroup=str(first.path))
        latencies: list[float] = []
        tail = control.stream(sock, "tail")

        def listen() -> None:
            for item in tail:
                latencies.append(
                    (time.clock_gettime_ns(time.CLOCK_BOOTTIME) - item["bpf_ts_ns"]) / 1e6
                )
                if len(latencies) >= args.records:
                    return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        time.sleep(0.5)
        w = stack.enter_context(Workload(net.workload_ns, first.path))
        w("paced", family=4, addr=net.peer4, port=22, count=args.records, interval=0.005)
        listener.join(30)

        for i in range(1, args.cgroups):
            cg = stack.enter_context(sandbox.cgroup(scope, f"w{i}"))
            control.request(
                sock, "enroll", cgroup=str(cg.path), agent=f"agent-{i}", project=f"project-{i % 10}"
            )
        for i in range(1, args.cgroups, max(1, args.cgroups // 50)):  # traffic from 50 of them
            (scope.path / f"w{i}" / "cgroup.procs").write_text(str(w.pid))
            w("flood", family=4, addr=net.peer4, port=22, count=200)
        time.sleep(2)
        loaded = rss_mb(agent.pid)
        enrolled = len(control.request(sock, "status")["enrolled"])

    lat = sorted(latencies)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    print(f"syscall -> tail latency over {len(lat)} records (agent polls every 20 ms):")
    print(
        f"  p50 {p(0.5):6.1f} ms   p90 {p(0.9):6.1f} ms   p99 {p(0.99):6.1f} ms   "
        f"max {lat[-1]:6.1f} ms   mean {statistics.mean(lat):6.1f} ms"
    )
    print(
        f"agent RSS: idle {idle:.1f} MB; with {enrolled} enrolled cgroups {loaded:.1f} MB "
        f"({loaded / idle:.2f}x idle)"
    )
    print(f"targets: p99 <= 50 ms -> {p(0.99):.1f} ms; RSS <= 80 MB -> {loaded:.1f} MB")


if __name__ == "__main__":
    main()
