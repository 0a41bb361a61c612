"""DNS answers per second the agent keeps up with: ring -> dnspython -> cache -> JSONL.

Each round, an enrolled workload asks dnsmasq (in the bench's peer namespace)
N real queries, so the kernel writes N real nl_dns_event records (four
addresses each); then the agent's own pieces move them on one thread: batch
drain -> decode (dnspython) -> attribution + DNS cache -> JSONL sink. Two
loads: one name asked again and again (the decoder remembers a message it has
read), and N distinct names (every message parsed). The baseline, in the same
run, is the same pipeline moving N decision records (UDP connects).

Usage: sudo python3 bench/dns_agent.py [--records N] [--rounds R]
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import dns.message

from bench.harness import UNTHROTTLED, agent_pipeline, arguments, bench_plane, rates
from netlogger import sandbox

RESOLVER = "198.18.0.53"
POLICY = f"""
policies:
  bench:
    dns: {{resolvers: [{RESOLVER}]}}
    allow:
      - {{cidr: 198.18.0.0/24, ports: [5000]}}
      - {{domain: "*.bench.test", ports: [443], proto: tcp}}
"""


def hosts(n: int) -> dict[str, list[str]]:
    return {f"n{i}.cdn.test": [f"198.19.{i % 250}.{j}" for j in range(1, 5)] for i in range(n)}


SETTINGS = dataclasses.replace(UNTHROTTLED, dns_ring_bytes=64 << 20)


def main() -> None:
    args = arguments(__doc__, records=20_000, rounds=3)
    with bench_plane(SETTINGS, POLICY) as bench, tempfile.TemporaryDirectory(dir="/dev/shm") as out:
        plane = bench.plane
        work = Path(out)
        names = list(hosts(args.records))
        bench.stack.enter_context(sandbox.resolver(bench.net, RESOLVER, hosts(args.records), work))
        producer = bench.child("producer", agent="bench-agent", project="bench")
        w = bench.workload(producer)
        events = bench.stack.enter_context(plane.reader())
        answers = bench.stack.enter_context(plane.dns_reader())
        pipeline = agent_pipeline(bench, work, dns=True)

        def asking(queried: list[str]) -> Callable[[], None]:
            payloads = [dns.message.make_query(n, "A").to_wire().hex() for n in queried]

            def ask() -> None:
                n = args.records
                assert w("query_flood", addr=RESOLVER, port=53, payloads=payloads, count=n) == n
                events.drain()  # the queries' own sendmsg decisions: not what is measured

            return ask

        connects = lambda: w("flood", family=4, addr=bench.net.peer4, port=5000, count=args.records)  # noqa: E731
        base = rates(args.rounds, args.records, connects, {"decisions": lambda: pipeline(events)})
        move = {"dns": lambda: pipeline(answers)}
        same = rates(args.rounds, args.records, asking(names[:1]), move)["dns"]
        distinct = rates(args.rounds, args.records, asking(names), move)["dns"]
        state = plane.cgroup_state.lookup(producer.id)

    decisions = statistics.median(base["decisions"])
    print(
        f"agent pipeline, {args.records} records per round, median of {args.rounds} "
        f"(DNS records lost: {state.dns_ringbuf_lost} ring full, {state.dns_throttled} throttled)"
    )
    print(f"  decision records (drain..JSONL)        {decisions / 1e3:7.1f} k/s   1.00x")
    for label, got in (("DNS answers, one name", same), ("DNS answers, distinct names", distinct)):
        rate = statistics.median(got)
        print(f"  {label:<38} {rate / 1e3:7.1f} k/s   {rate / decisions:.2f}x")


if __name__ == "__main__":
    main()
