"""Policies (config model) -> the map entries the kernel decides with.

Each (policy, prefix) LPM entry carries its own port rules plus those of every
shorter prefix that contains it, most specific first, so one longest-prefix
lookup answers. Rule ids are hashes of their names, so records keep naming
the same rule across agent restarts and reloads. A policy's id is a hash of
its name and its content: a changed policy gets a new id, so its new entries
are written beside the old ones and an enrollment moves from one complete
policy to the other in a single map write (enforce.py), never through a
mixture or an empty policy; an unchanged policy keeps its id and its entries.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from netlogger.config.model import Policy, Rule
from netlogger.kernel import abi
from netlogger.policy.domains import Domain, parse_domain

Located = tuple[tuple[str | int, ...], str]  # (path in the config, message)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

A = TypeVar("A")
T = TypeVar("T")

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
POLICY_NAME_MAX = 31
# Always compiled in: what a selected container whose policy cannot be had is
# enrolled with, so a bad label fails closed. Names starting with `_` are ours.
DENY_ALL = "_deny_all"
_PROTOS = {"tcp": abi.Proto.TCP, "udp": abi.Proto.UDP, "any": abi.Proto.TCP | abi.Proto.UDP}


@dataclass(frozen=True)
class RuleInfo:
    id: int
    policy: str
    name: str


@dataclass
class CompiledPolicy:
    name: str
    id: int
    mode: abi.Mode
    flags: abi.PolicyFlag
    cidrs: list[tuple[abi.CidrKey, abi.CidrRules]] = field(default_factory=list)
    resolvers: list[tuple[abi.ResolverKey, int]] = field(default_factory=list)
    domains: list[tuple[abi.DomainKey, abi.Domain]] = field(default_factory=list)
    domain_ports: list[tuple[abi.DomainPortsKey, abi.CidrRules]] = field(default_factory=list)


@dataclass
class PolicySet:
    policies: dict[str, CompiledPolicy] = field(default_factory=dict)
    rules: dict[int, RuleInfo] = field(default_factory=dict)

    def named(self) -> list[str]:
        """The policies the config defines (not the reserved ones)."""
        return [n for n in self.policies if not n.startswith("_")]

    def by_id(self) -> dict[int, CompiledPolicy]:
        return {p.id: p for p in self.policies.values()}


def stable_id(*parts: str) -> int:
    return zlib.crc32("\0".join(parts).encode()) & 0x7FFFFFFF or 1


def policy_id(name: str, policy: Policy) -> int:
    return stable_id(name, msgspec.json.encode(policy).decode())


def parse_ports(ports: list[int | str]) -> list[tuple[int, int]]:
    """[443, "8000-8100"] -> [(443, 443), (8000, 8100)]; empty means every port."""
    if not ports:
        return [(0, 65535)]
    out = []
    for item in ports:
        lo_text, _, hi_text = str(item).partition("-")
        try:
            lo, hi = int(lo_text), int(hi_text or lo_text)
        except ValueError:
            raise ValueError(f"bad port {item!r}: use a number or a range like 8000-8100") from None
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"bad port {item!r}: ports run from 1 to 65535, low to high")
        out.append((lo, hi))
    return out


def _as_ipv4(addr: Address) -> Address:
    """IPv4-mapped and NAT64 forms are decided as the IPv4 address they carry."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped:
            return addr.ipv4_mapped
        if addr in NAT64:
            return ipaddress.IPv4Address(addr.packed[12:])
    return addr


def _family_and_bytes(addr: Address) -> tuple[abi.Family, bytes]:
    if addr.version == 4:
        return abi.Family.INET, addr.packed + bytes(12)
    return abi.Family.INET6, addr.packed


def _network(rule: Rule) -> Network:
    assert rule.cidr is not None
    try:
        net = ipaddress.ip_network(rule.cidr, strict=True)
    except ValueError as exc:
        raise ValueError(f"bad cidr {rule.cidr!r}: {exc}") from None
    if isinstance(net, ipaddress.IPv6Network) and (
        net.subnet_of(ipaddress.IPv6Network("::ffff:0:0/96")) or net.subnet_of(NAT64)
    ):
        raise ValueError(
            f"cidr {rule.cidr!r} is IPv4-mapped or NAT64: those addresses are decided as IPv4, "
            "so write the rule as an IPv4 CIDR"
        )
    return net


def _value(
    problems: list[Located], at: tuple[str | int, ...], parse: Callable[[A], T], arg: A
) -> T | None:
    """parse(arg), or None with its ValueError appended to `problems` at `at`."""
    try:
        return parse(arg)
    except ValueError as exc:
        problems.append((at, str(exc)))
        return None


def _rule_name(policy: str, index: int, rule: Rule) -> str:
    return rule.name or f"{policy}.allow[{index}]"


def _covers(outer: Network, inner: Network) -> bool:
    """`inner` lies within `outer`; never across address families."""
    if isinstance(inner, ipaddress.IPv4Network):
        return isinstance(outer, ipaddress.IPv4Network) and inner.subnet_of(outer)
    return isinstance(outer, ipaddress.IPv6Network) and inner.subnet_of(outer)


def _cidr_entries(
    policy_id: int, port_rules: list[tuple[Network, abi.PortRule]], where: tuple[str | int, ...]
) -> tuple[list[tuple[abi.CidrKey, abi.CidrRules]], list[Located]]:
    entries, problems = [], []
    for net in dict.fromkeys(n for n, _ in port_rules):
        covering = [(n.prefixlen, r) for n, r in port_rules if _covers(n, net)]
        covering.sort(key=lambda item: -item[0])  # most specific first
        if len(covering) > abi.MAX_PORT_RULES:
            problems.append(
                (
                    where,
                    f"{net} collects {len(covering)} port rules from the rules "
                    f"that contain it; at most {abi.MAX_PORT_RULES} fit",
                )
            )
            continue
        family, addr = _family_and_bytes(net.network_address)
        key = abi.CidrKey(
            abi.CidrPrefix.BITS + net.prefixlen, policy_id, family, (abi.u8 * 16)(*addr)
        )
        rules = abi.CidrRules(len(covering), abi.Writer.POLICY)
        for i, (_, port_rule) in enumerate(covering):
            rules.rules[i] = port_rule
        entries.append((key, rules))
    return entries, problems


def _port_rules_of(
    policy: str, policy_id: int, rules: list[tuple[Domain, list[abi.PortRule]]], name: str
) -> tuple[int, abi.CidrRules | None]:
    """Match id and port rules for a name: those of every rule matching it, most specific first."""
    matching = [(d, prs) for d, prs in rules if d.matches(name)]
    if not matching:
        return 0, None
    matching.sort(key=lambda item: (item[0].wildcard, -len(item[0].base)))
    flat = [pr for _, prs in matching for pr in prs]
    if len(flat) > abi.MAX_PORT_RULES:
        raise ValueError(
            f"{name} collects {len(flat)} port rules from the domain rules that match it; "
            f"at most {abi.MAX_PORT_RULES} fit"
        )
    match_id = stable_id(policy, "domains", *(str(d) for d, _ in matching))
    out = abi.CidrRules(len(flat))
    for i, pr in enumerate(flat):
        out.rules[i] = pr
    return match_id, out


def _domain_entries(
    compiled: CompiledPolicy, rules: list[tuple[Domain, list[abi.PortRule]]]
) -> list[str]:
    """Fill compiled.domains/domain_ports: one LPM entry per distinct rule name.

    A name the trie reaches through an entry gets every rule that matches it: an
    exact rule's own and those of every wildcard above it. A wildcard's entry
    also answers for its base name itself (the apex), which only the wildcards
    above it match.
    """
    problems: list[str] = []
    ports: dict[int, abi.CidrRules] = {}
    for domain in dict.fromkeys(d for d, _ in rules):
        # A name just below a wildcard's base stands for every name the entry reaches.
        probe = f"x.{domain.base}" if domain.wildcard else domain.base
        try:
            match_id, port_rules = _port_rules_of(compiled.name, compiled.id, rules, probe)
            apex_id, apex_rules = (
                _port_rules_of(compiled.name, compiled.id, rules, domain.base)
                if domain.wildcard
                else (0, None)
            )
        except ValueError as exc:
            problems.append(str(exc))
            continue
        for mid, prs in ((match_id, port_rules), (apex_id, apex_rules)):
            if mid and prs is not None:
                ports[mid] = prs
        name = domain.key_name()
        key = abi.DomainKey(32 + 8 * len(name), compiled.id, (abi.u8 * abi.DNS_NAME_MAX)(*name))
        value = abi.Domain(match_id, apex_id, len(name), int(domain.wildcard))
        compiled.domains.append((key, value))
    compiled.domain_ports = [
        (abi.DomainPortsKey(compiled.id, mid), prs) for mid, prs in sorted(ports.items())
    ]
    return problems


def _compile_one(name: str, policy: Policy, out: PolicySet) -> list[Located]:
    where: tuple[str | int, ...] = ("policies", name)
    problems: list[Located] = []
    if not name or len(name.encode()) > POLICY_NAME_MAX:
        problems.append((where, f"policy names are 1 to {POLICY_NAME_MAX} bytes long"))
    flags = abi.PolicyFlag(0)
    if policy.log_loopback:
        flags |= abi.PolicyFlag.LOG_LOOPBACK
    if policy.icmp == "allow":
        flags |= abi.PolicyFlag.ICMP_ALLOW
    mode = abi.Mode.AUDIT if policy.mode == "audit" else abi.Mode.ENFORCE
    compiled = CompiledPolicy(name, policy_id(name, policy), mode, flags)

    port_rules: list[tuple[Network, abi.PortRule]] = []
    domain_rules: list[tuple[Domain, list[abi.PortRule]]] = []
    for i, rule in enumerate(policy.allow):
        at = (*where, "allow", i)
        # Every bad value of a rule is reported, not only the first.
        cidr_only = rule.cidr is not None and rule.domain is None
        domain_only = rule.domain is not None and rule.cidr is None
        net = _value(problems, (*at, "cidr"), _network, rule) if cidr_only else None
        domain = (
            _value(problems, (*at, "domain"), parse_domain, rule.domain) if domain_only else None
        )
        ranges = _value(problems, (*at, "ports"), parse_ports, rule.ports)
        if not cidr_only and not domain_only:
            problems.append((at, "give exactly one of cidr or domain"))
            continue
        if domain_only and not policy.dns.resolvers:
            problems.append(
                (
                    (*at, "domain"),
                    "a domain rule needs dns.resolvers: addresses are admitted only from "
                    "answers of the policy's resolvers",
                )
            )
            continue
        target = rule.cidr if cidr_only else rule.domain
        rule_id = stable_id(name, "allow", rule.name or f"{target}|{rule.ports}|{rule.proto}")
        if rule_id in out.rules:
            problems.append((at, f"duplicates {out.rules[rule_id].name}"))
            continue
        if ranges is None or (net is None and domain is None):
            continue
        out.rules[rule_id] = RuleInfo(rule_id, name, _rule_name(name, i, rule))
        prs = [abi.PortRule(lo, hi, _PROTOS[rule.proto], rule_id=rule_id) for lo, hi in ranges]
        if net is not None:
            port_rules += [(net, pr) for pr in prs]
        elif domain is not None:
            domain_rules.append((domain, prs))
    if domain_rules:
        compiled.flags |= abi.PolicyFlag.HAS_DOMAINS
        problems += [((*where, "allow"), text) for text in _domain_entries(compiled, domain_rules)]

    entries, closure_problems = _cidr_entries(compiled.id, port_rules, (*where, "allow"))
    compiled.cidrs = entries
    problems += closure_problems

    for i, text in enumerate(policy.dns.resolvers):
        at = (*where, "dns", "resolvers", i)
        try:
            addr = _as_ipv4(ipaddress.ip_address(text))
        except ValueError:
            problems.append((at, f"bad resolver address {text!r}"))
            continue
        rule_id = stable_id(name, "dns", str(addr))
        out.rules[rule_id] = RuleInfo(rule_id, name, f"{name}.dns.resolvers[{i}]")
        family, raw = _family_and_bytes(addr)
        key = abi.ResolverKey(compiled.id, family, addr=(abi.u8 * 16)(*raw))
        compiled.resolvers.append((key, rule_id))
    out.policies[name] = compiled
    return problems


def compile_policies(policies: dict[str, Policy]) -> tuple[PolicySet, list[Located]]:
    """Compile every policy; problems come back located, not raised."""
    out = PolicySet()
    problems: list[Located] = []
    seen: dict[int, str] = {}
    for name, policy in {**policies, DENY_ALL: Policy()}.items():
        if name.startswith("_") and name in policies:
            problems.append((("policies", name), "names starting with `_` are reserved"))
            continue
        problems += _compile_one(name, policy, out)
        policy_id = out.policies[name].id
        if policy_id in seen:
            problems.append(
                (("policies", name), f"name hashes like {seen[policy_id]!r}; rename it")
            )
        seen[policy_id] = name
    return out, problems
