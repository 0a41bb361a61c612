"""What the DNS ingress program costs per packet, as ratios against a non-DNS packet, in one run.

One enrolled workload socket receives, round by round, batches of:
  non-dns     UDP datagrams from port 5353: the program parses the IP/UDP header and leaves
  unmatched   answers to the workload's own queries for names no domain rule matches
  matched-1   answers matching a domain rule, one A record each (admitted)
  matched-8   the same with eight A records each
Answers are forged from the resolver's namespace (raw socket, source = a policy resolver)
so every batch is the same packets each round; the cost is the kernel's own
per-program accounting (run_time_ns / run_cnt of nl_dns_ingress, BPF stats on).

Usage: sudo python3 bench/dns_ingress.py [--batch N] [--rounds R]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from bench.harness import UNTHROTTLED, arguments, bench_plane
from netlogger.kernel import libbpf
from tests.kernel import dnslab

SERVER = dnslab.SILENT
PORT = 40070
POLICY = f"""
policies:
  bench:
    dns: {{resolvers: [{SERVER}]}}
    allow:
      - {{domain: "*.ok.test", ports: [443], proto: tcp}}
"""
BPF_STATS_RUN_TIME = 0

# Sends the queries it is told to ("<zone> <first txid> <count>") and reads what arrives.
QUERIER = textwrap.dedent(
    f"""
    import socket, sys, threading
    import dns.message, dns.rdatatype
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("198.18.0.1", {PORT}))
    threading.Thread(target=lambda: [s.recv(4096) for _ in iter(int, 1)], daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        zone, first, count = line.split()
        for txid in range(int(first), int(first) + int(count)):
            q = dns.message.make_query(f"q{{txid}}.{{zone}}", dns.rdatatype.A, use_edns=False)
            q.id = txid
            s.sendto(q.to_wire(), ("{SERVER}", 53))
        print("sent", flush=True)
    """
)


def answers(zone: str, first: int, count: int, records: int) -> list[bytes]:
    out = []
    for txid in range(first, first + count):
        addrs = [f"198.19.{(txid >> 8) & 255}.{i + 1}" for i in range(records)]
        msg = dnslab.answer(txid, f"q{txid}.{zone}", addrs)
        out.append(dnslab.udp4(SERVER, 53, "198.18.0.1", PORT, msg))
    return out


def main() -> None:
    args = arguments(__doc__, batch=1000, rounds=5)
    if args.batch > 1000:
        sys.exit("error: --batch is at most 1000: the outstanding queries of one cgroup (LRU)")
    with bench_plane(UNTHROTTLED, POLICY) as bench:
        tmp = Path(bench.stack.enter_context(tempfile.TemporaryDirectory()))
        lab = dnslab.Lab(bench.net, tmp)
        _add_server(bench.net)
        cg = bench.child("nlbench-dns")
        querier = lab.python(cg, QUERIER)
        bench.stack.callback(querier.kill)
        assert querier.stdout is not None and querier.stdout.readline() == "ready\n"
        stats_fd = libbpf.call(
            libbpf.bpf_enable_stats, libbpf.Op.QUERY, "enable BPF stats", BPF_STATS_RUN_TIME
        )
        bench.stack.callback(os.close, stats_fd)

        def ask(zone: str, first: int) -> None:
            assert querier.stdin is not None and querier.stdout is not None
            querier.stdin.write(f"{zone} {first} {args.batch}\n")
            querier.stdin.flush()
            assert querier.stdout.readline() == "sent\n"

        def forged(zone: str, records: int) -> Any:
            def make(first: int) -> list[bytes]:
                ask(zone, first)
                return answers(zone, first, args.batch, records)

            return make

        kinds: dict[str, Any] = {
            "non-dns": lambda first: [
                dnslab.udp4(SERVER, 5353, "198.18.0.1", PORT, b"x" * 64) for _ in range(args.batch)
            ],
            "unmatched": forged("no.test", 1),
            "matched-1": forged("ok.test", 1),
            "matched-8": forged("ok.test", 8),
        }
        cost: dict[str, list[float]] = {k: [] for k in kinds}
        for rnd in range(args.rounds):
            for i, (kind, make) in enumerate(kinds.items()):
                first = (rnd * len(kinds) + i) * args.batch % 60000
                packets = make(first)
                before = bench.plane.program_stats()["nl_dns_ingress"]
                lab.forge(packets)
                after = bench.plane.program_stats()["nl_dns_ingress"]
                runs, ns = after[0] - before[0], after[1] - before[1]
                assert runs >= len(packets), (kind, runs)
                cost[kind].append(ns / runs)
        base = statistics.median(cost["non-dns"])
        print(f"{'packet':<12}{'ns/packet':>12}{'x non-dns':>12}   (median of {args.rounds})")
        for kind, values in cost.items():
            med = statistics.median(values)
            print(f"{kind:<12}{med:>12.0f}{med / base:>12.2f}")


def _add_server(net: Any) -> None:
    subprocess.run(
        ["ip", "netns", "exec", net.peer_ns, "ip", "addr", "add", f"{SERVER}/24", "dev", "nlp0"],
        check=True,
    )


if __name__ == "__main__":
    main()
