"""Resolve-then-connect with kernel admission on versus off, as a ratio, in one run.

A real dnsmasq in the sandbox answers fresh names; glibc resolves them (A only) and the
client connects at once, name after name, in two cgroups per round:
  off   beside the scope: no program runs
  on    enrolled under a domain rule: every query recorded, every answer parsed and admitted,
        every connect decided against the admitted set
Fresh names each round, so no cache helps either side.

Usage: sudo python3 bench/dns_latency.py [--names N] [--rounds R]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.harness import UNTHROTTLED, arguments, bench_plane
from tests.kernel import dnslab

POLICY = f"""
policies:
  bench:
    dns: {{resolvers: [{dnslab.RESOLVER}]}}
    allow:
      - {{domain: "*.ok.test", ports: [443], proto: tcp}}
"""


def main() -> None:
    args = arguments(__doc__, names=300, rounds=5)
    sides = ("off", "on")
    hosts = {
        f"r{r}-{side}-{i}.ok.test": [f"198.19.{r * 2 + n}.{i % 250 + 1}"]
        for r in range(args.rounds)
        for n, side in enumerate(sides)
        for i in range(args.names)
    }
    with bench_plane(UNTHROTTLED, POLICY) as bench:
        tmp = Path(bench.stack.enter_context(tempfile.TemporaryDirectory()))
        lab = bench.stack.enter_context(dnslab.lab(bench.net, tmp, hosts))
        cgroups = {"off": bench.outside("nlbench-dns-off"), "on": bench.child("nlbench-dns-on")}
        dnslab.client_binary()
        per_name: dict[str, list[float]] = {side: [] for side in sides}
        for r in range(args.rounds):
            for side in sides if r % 2 else sides[::-1]:  # alternate who goes first
                names = [f"r{r}-{side}-{i}.ok.test" for i in range(args.names)]
                start = time.perf_counter()
                rows = lab.resolve_connect(cgroups[side], names)
                elapsed = time.perf_counter() - start
                assert {res for _, res, _ in rows} == {"115"}, side  # every connect in progress
                per_name[side].append(elapsed / args.names * 1e6)
        off, on = (statistics.median(per_name[s]) for s in sides)
        print(f"{'admission':<10}{'us/name':>10}{'x off':>8}   (median of {args.rounds})")
        print(f"{'off':<10}{off:>10.0f}{1.0:>8.2f}")
        print(f"{'on':<10}{on:>10.0f}{on / off:>8.2f}")


if __name__ == "__main__":
    main()
