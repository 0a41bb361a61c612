"""Decision history -> one proposed policy, as YAML a reviewer reads and `policy check` takes.

What the workloads were seen to try becomes allow rules: a domain rule where the
destination had a name (`dst_host`), a wildcard only where at least
WILDCARD_MIN names share one registrable domain (the Public Suffix List says
which part is registrable, so `*.co.uk` is never proposed), and a /32 or /128
only for addresses never resolved. What was seen only as a way around the
resolvers (a foreign resolver, DNS over TLS or TCP to one, an address no answer
admitted) is a finding, written as comments and never proposed as an allow:
allowing it would let the workload around DNS-based enforcement.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from publicsuffixlist import PublicSuffixList

from netlogger import control
from netlogger.config.check import check_file, check_source
from netlogger.config.model import Dns, Policy, Rule
from netlogger.config.source import parse
from netlogger.errors import UsageError
from netlogger.pipeline.record import Record
from netlogger.policy.compile import compile_policies, parse_ports
from netlogger.sinks.jsonl import parse_item
from netlogger.tail import Filter, cutoff

WILDCARD_MIN = 3  # distinct names under one registrable domain before `*.domain` is proposed
RESOLVER_PORTS = ("53", "853")
FINDING_REASONS = {
    "resolver_not_allowed": "DNS to a resolver the policy does not list",
    "dns_over_tls": "DNS over TLS to a resolver the policy does not list",
    "dns_over_tcp": "DNS over TCP to a resolver the policy does not list",
    "unresolved_ip": "an address no DNS answer admitted (a hard-coded IP or a private resolver)",
}
Proto = Literal["tcp", "udp"]
_PROTOS: dict[str, Proto] = {"stream": "tcp", "dgram": "udp"}
_SKIPPED = {"loopback", "raw_socket", "icmp"}
_psl = PublicSuffixList()


@dataclass
class Seen:
    """How often, when and by whom something was seen."""

    decisions: int = 0
    first: str = ""
    last: str = ""
    agents: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)
    names: set[str] = field(default_factory=set)  # what an address was resolved from

    def add(self, record: Record) -> None:
        self.decisions += 1
        self.first = min(self.first or record.ts, record.ts)
        self.last = max(self.last, record.ts)
        self.agents.add(record.agent or "(unattributed)")
        if record.dst_port:
            self.ports.add(int(record.dst_port))
        if record.dst_host:
            self.names.add(record.dst_host)

    def merge(self, other: Seen) -> None:
        self.decisions += other.decisions
        self.first = min(self.first or other.first, other.first)
        self.last = max(self.last, other.last)
        self.agents |= other.agents
        self.ports |= other.ports
        self.names |= other.names

    def comment(self, names: bool = False) -> str:
        text = (
            f"{self.decisions} decision{'s' * (self.decisions != 1)}, first {self.first}, "
            f"last {self.last}, agents {', '.join(sorted(self.agents))}"
        )
        return f"{text}; resolved from {', '.join(sorted(self.names))}" if names else text


@dataclass
class Suggestion:
    name: str
    rules: list[tuple[Rule, Seen]]
    resolvers: dict[str, Seen]
    findings: dict[tuple[str, str], Seen]  # (reason, destination) -> seen
    records: int

    def policy(self) -> Policy:
        return Policy(
            dns=Dns(resolvers=sorted(self.resolvers)),
            allow=[rule for rule, _ in self.rules],
        )


def domain_rules_supported() -> bool:
    """Does this build compile domain rules (they need DNS-answer tracking in the kernel)?"""
    probe = Policy(dns=Dns(resolvers=["192.0.2.53"]), allow=[Rule(domain="example.com")])
    _, problems = compile_policies({"probe": probe})
    return not problems


def _ranges(ports: set[int]) -> list[int | str]:
    """[443, 8000, 8001, 8002] -> [443, "8000-8002"]: contiguous ports as one range."""
    out: list[int | str] = []
    run: list[int] = []
    for port in sorted(ports):
        if run and port != run[-1] + 1:
            out.append(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run = []
        run.append(port)
    if run:
        out.append(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return out


def _host_cidr(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    return f"{addr}/{addr.max_prefixlen}"


def _domains(names: dict[tuple[str, Proto], Seen]) -> dict[tuple[str, Proto], Seen]:
    """(name, proto) -> seen, with names that crowd one registrable domain folded into `*.it`."""
    by_base: dict[tuple[str, Proto], list[str]] = {}
    for name, proto in names:
        base = _psl.privatesuffix(name)
        if base and name != base:
            by_base.setdefault((base, proto), []).append(name)
    out = dict(names)
    for (base, proto), members in by_base.items():
        if len(members) < WILDCARD_MIN:
            continue
        folded = Seen()
        for name in members:
            folded.merge(out.pop((name, proto)))
        out[(f"*.{base}", proto)] = folded
    return out


def suggest(records: Iterable[Record], name: str, domains: bool | None = None) -> Suggestion:
    """The policy that allows what `records` show was needed, and the findings beside it.

    `domains`: propose domain rules for named destinations (default: when this
    build compiles them). Domain rules admit only what the policy's resolvers
    answer, so without a resolver seen allowed, named destinations get /32 or
    /128 rules like the rest.
    """
    resolvers: dict[str, Seen] = {}
    findings: dict[tuple[str, str], Seen] = {}
    wanted: list[tuple[Record, Proto]] = []
    for r in records:
        proto = _PROTOS.get(r.l4_proto)
        if r.no_dst or not r.dst_ip or not r.dst_port or proto is None or r.reason in _SKIPPED:
            continue
        dest = f"{r.dst_ip}:{r.dst_port}/{proto}"
        if r.reason in FINDING_REASONS:
            findings.setdefault((r.reason, dest), Seen()).add(r)
        elif r.dst_port in RESOLVER_PORTS:
            if r.reason == "resolver":
                resolvers.setdefault(r.dst_ip, Seen()).add(r)
            else:  # seen only while the cgroup was in a bypass window: not a known resolver
                findings.setdefault(("resolver_not_allowed", dest), Seen()).add(r)
        else:
            wanted.append((r, proto))
    # glibc's getaddrinfo connect()s a UDP socket to each candidate address to sort them, with
    # the port asked for: beside a TCP decision for the same place it is that probe, no need.
    tcp = {(r.dst_ip, r.dst_port) for r, proto in wanted if proto == "tcp"}
    wanted = [
        (r, proto)
        for r, proto in wanted
        if not (proto == "udp" and r.udp_connect and (r.dst_ip, r.dst_port) in tcp)
    ]
    use_domains = bool(resolvers) and (domain_rules_supported() if domains is None else domains)
    named: dict[tuple[str, Proto], Seen] = {}
    addresses: dict[tuple[str, Proto], Seen] = {}
    for r, proto in wanted:
        if r.dst_host and use_domains:
            named.setdefault((r.dst_host.rstrip(".").lower(), proto), Seen()).add(r)
        else:
            addresses.setdefault((str(r.dst_ip), proto), Seen()).add(r)
    rules = [
        (Rule(domain=host, ports=_ranges(seen.ports), proto=proto), seen)
        for (host, proto), seen in sorted(_domains(named).items())
    ]
    rules += [
        (Rule(cidr=_host_cidr(ip), ports=_ranges(seen.ports), proto=proto), seen)
        for (ip, proto), seen in sorted(addresses.items(), key=lambda i: _address_order(i[0]))
    ]
    count = len(wanted) + sum(s.decisions for s in [*resolvers.values(), *findings.values()])
    return Suggestion(name, rules, resolvers, findings, count)


def _address_order(key: tuple[str, Proto]) -> tuple[int, int, str]:
    addr = ipaddress.ip_address(key[0])
    return addr.version, int(addr), key[1]


def _flow(rule: Rule) -> str:
    """A rule as one YAML flow mapping; JSON scalars are YAML scalars."""
    target = ("domain", rule.domain) if rule.domain else ("cidr", rule.cidr)
    parts = [f"{target[0]}: {json.dumps(target[1])}"]
    parts.append(f"ports: {json.dumps(rule.ports)}")
    parts.append(f"proto: {rule.proto}")
    return "{" + ", ".join(parts) + "}"


def render(s: Suggestion) -> str:
    """The suggestion as YAML with a comment on every rule; `policy check` accepts it as is."""
    lines = [
        f"# netlogger policy suggest: {s.records} decisions -> policy {s.name!r}.",
        "# Review before enforcing: every rule says how often, when and by whom it was needed.",
    ]
    if s.findings:
        lines.append("#")
        lines.append(
            "# Findings: seen only as ways around the resolvers; never proposed as allows."
        )
        for (reason, dest), seen in sorted(s.findings.items()):
            lines.append(f"#   {reason}: {dest} ({FINDING_REASONS[reason]})")
            lines.append(f"#     {seen.comment()}")
    lines += ["policies:", f"  {json.dumps(s.name)}:", "    mode: enforce"]
    if s.resolvers:
        lines.append("    dns:")
        lines.append("      resolvers:")
        for ip, seen in sorted(s.resolvers.items()):
            lines.append(f"        # {seen.comment()}")
            lines.append(f"        - {json.dumps(ip)}")
    if not s.rules:
        lines.append("    allow: []  # nothing was seen that a rule would allow")
    else:
        lines.append("    allow:")
        for rule, seen in s.rules:
            lines.append(f"      # {seen.comment(names=bool(rule.cidr and seen.names))}")
            lines.append(f"      - {_flow(rule)}")
    text = "\n".join(lines) + "\n"
    check_source(parse(text, "<suggestion>"))  # a suggestion that would not start is a bug
    return text


def _normal(policy: Policy) -> set[str]:
    out = {f"dns resolver {r}" for r in policy.dns.resolvers}
    for rule in policy.allow:
        target = f"domain {rule.domain}" if rule.domain else f"cidr {rule.cidr}"
        ranges = parse_ports(rule.ports) if rule.ports else []
        ports = ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in ranges) or "all"
        out.add(f"allow {target} ports {ports} proto {rule.proto}")
    return out


def diff(current: Policy | None, proposed: Policy) -> list[str]:
    """What adopting `proposed` in place of `current` changes: `- ` removed, `+ ` added."""
    before, after = _normal(current or Policy()), _normal(proposed)
    return [f"- {line}" for line in sorted(before - after)] + [
        f"+ {line}" for line in sorted(after - before)
    ]


# -- where the history comes from --------------------------------------------


def from_files(paths: Iterable[Path], accept: Filter, since: str | None) -> Iterator[Record]:
    """Records of JSONL files (the JSONL sink's, or `tail --json` output) that pass the filter."""
    oldest = cutoff(since) or ""
    for path in paths:
        with path.open("rb") as f:
            for line in f:
                item = parse_item(line)
                if isinstance(item, Record) and item.ts >= oldest and accept(item):
                    yield item


def from_agent(socket: Path, accept: Filter, since: str) -> Iterator[Record]:
    """The running agent's JSONL history through its control socket (as `tail --since` reads it)."""
    items = control.stream(
        socket,
        "tail",
        since=since,
        follow=False,
        agent=sorted(accept.agents),
        project=sorted(accept.projects),
        container=list(accept.containers),
    )
    for raw in items:
        item = parse_item(json.dumps(raw).encode())
        if isinstance(item, Record):
            yield item


def current_policy(path: Path, name: str) -> Policy:
    """The policy `--diff` compares with: the one named `name`, else the file's only one."""
    policies = check_file(path).config.policies
    if name in policies:
        return policies[name]
    if len(policies) == 1:
        return next(iter(policies.values()))
    raise UsageError(
        f"{path} has no policy {name!r} and more than one other ({', '.join(sorted(policies))}); "
        "pick one with --name"
    )
