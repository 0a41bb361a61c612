"""Policy compilation: prefix closure, protocol masks, stable ids, canonical addresses."""

from __future__ import annotations

import ipaddress
import socket

from netlogger.config.check import check_source
from netlogger.config.source import parse
from netlogger.kernel import abi
from netlogger.policy.compile import PolicySet, parse_ports

POLICY = """\
policies:
  p:
    dns: {resolvers: ["::ffff:10.0.0.53", "64:ff9b::a00:35", "2001:db8::53"]}
    allow:
      - {cidr: 10.0.0.0/8, ports: [443], proto: tcp, name: wide}
      - {cidr: 10.1.0.0/16, ports: ["8000-8100"], name: narrow}
      - {cidr: 10.1.2.0/24, ports: [53], proto: udp}
      - {cidr: "2001:db8::/32"}
"""


def compiled() -> PolicySet:
    return check_source(parse(POLICY, "p.yaml")).policies


def entries() -> dict[str, list[tuple[int, int, int, str]]]:
    ps = compiled()
    out = {}
    for key, rules in ps.policies["p"].cidrs:
        raw = bytes(key.addr)
        addr = ipaddress.ip_address(raw[:4] if key.family == socket.AF_INET else raw)
        name = f"{addr}/{key.prefixlen - 40}"
        out[name] = [
            (r.port_lo, r.port_hi, r.protos, ps.rules[r.rule_id].name)
            for r in list(rules.rules)[: rules.count]
        ]
    return out


def test_each_prefix_carries_the_rules_of_every_prefix_containing_it() -> None:
    tcp, udp, both = abi.Proto.TCP, abi.Proto.UDP, abi.Proto.TCP | abi.Proto.UDP
    assert entries() == {
        "10.0.0.0/8": [(443, 443, tcp, "wide")],
        "10.1.0.0/16": [(8000, 8100, both, "narrow"), (443, 443, tcp, "wide")],
        "10.1.2.0/24": [
            (53, 53, udp, "p.allow[2]"),
            (8000, 8100, both, "narrow"),
            (443, 443, tcp, "wide"),
        ],
        "2001:db8::/32": [(0, 65535, both, "p.allow[3]")],
    }


def test_keys_separate_families_and_policies() -> None:
    policy = compiled().policies["p"]
    key = policy.cidrs[0][0]
    assert (key.prefixlen, key.policy_id, key.family) == (48, policy.id, socket.AF_INET)
    assert bytes(key.addr) == bytes([10]) + bytes(15)


def test_resolvers_are_canonical_ipv4_when_mapped_or_nat64() -> None:
    resolvers = compiled().policies["p"].resolvers
    forms = [(k.family, bytes(k.addr)) for k, _ in resolvers]
    assert forms[0] == forms[1] == (socket.AF_INET, bytes([10, 0, 0, 53]) + bytes(12))
    assert forms[2] == (socket.AF_INET6, ipaddress.ip_address("2001:db8::53").packed)


def test_ids_are_stable_across_compiles_and_order() -> None:
    first = compiled()
    reordered = (
        POLICY.replace("      - {cidr: 10.0.0.0/8, ports: [443], proto: tcp, name: wide}\n", "")
        + "      - {cidr: 10.0.0.0/8, ports: [443], proto: tcp, name: wide}\n"
    )
    second = check_source(parse(reordered, "p.yaml")).policies
    by_name = {r.name: r.id for r in first.rules.values()}
    assert {r.name: r.id for r in second.rules.values()}["wide"] == by_name["wide"]


def test_port_forms() -> None:
    assert parse_ports([]) == [(0, 65535)]
    assert parse_ports([443, "8000-8100", "22"]) == [(443, 443), (8000, 8100), (22, 22)]


def test_a_policy_id_follows_its_content_so_a_changed_policy_is_built_beside_the_old() -> None:
    first, again = compiled().policies["p"], compiled().policies["p"]
    assert first.id == again.id  # unchanged: same id, same entries, nothing rewritten
    changed = check_source(parse(POLICY.replace("[443]", "[444]", 1), "p.yaml")).policies
    assert changed.policies["p"].id != first.id
    assert {k.policy_id for k, _ in changed.policies["p"].cidrs} == {changed.policies["p"].id}
