"""A policy re-apply owns only what the applier wrote, and never opens a deny window."""

from __future__ import annotations

import threading

from netlogger.config.check import check_source
from netlogger.config.source import parse
from netlogger.enforce import Enforcer
from netlogger.kernel import abi
from netlogger.policy.compile import PolicySet, stable_id

# Every destination the fixture's default policy allows, allowed again, but
# from /16 entries: a re-apply between the two replaces each /24 key.
WIDER = """
policies:
  default:
    dns: {resolvers: [198.18.0.53]}
    allow:
      - {cidr: 198.18.0.0/16, ports: [443, "8000-8100"], proto: tcp, name: lab-tcp}
      - {cidr: 198.18.0.0/16, ports: [5000], proto: udp, name: lab-udp}
      - {cidr: "fd00:18::/48", ports: [443], name: lab6}
"""
OTHER_WRITER = 7  # a writer that is not the policy applier (DNS admission, say)


def wider() -> PolicySet:
    return check_source(parse(WIDER, "wider.yaml")).policies


def cidr_key(policy_id: int, addr: str, prefix: int) -> abi.CidrKey:
    raw = bytes(int(x) for x in addr.split(".")) + bytes(12)
    return abi.CidrKey(
        abi.CidrPrefix.BITS + prefix, policy_id, abi.Family.INET, (abi.u8 * 16)(*raw)
    )


def rules(writer: int, port: int) -> abi.CidrRules:
    out = abi.CidrRules(1, writer)
    out.rules[0] = abi.PortRule(port, port, abi.Proto.TCP, rule_id=99)
    return out


def test_other_writers_entries_survive_and_own_stale_ones_go(plane, enforcer: Enforcer) -> None:
    default_id = enforcer.policies.policies["default"].id
    theirs = [
        (cidr_key(default_id, "203.0.113.7", 32), rules(OTHER_WRITER, 443)),  # beside our rules
        (cidr_key(stable_id("elsewhere"), "203.0.113.8", 32), rules(OTHER_WRITER, 80)),
    ]
    ours_stale = cidr_key(stable_id("gone"), "203.0.113.9", 32)  # left by an earlier run
    for key, value in theirs:
        plane.cidrs.update(key, value)
    plane.cidrs.update(ours_stale, rules(abi.Writer.POLICY, 22))

    enforcer.apply_policies(wider())
    enforcer.apply_policies(enforcer.policies)

    for key, value in theirs:
        assert bytes(plane.cidrs.lookup(key)) == bytes(value)
    assert plane.cidrs.lookup(ours_stale) is None
    kept = {bytes(k) for k, _ in plane.cidrs.items()}
    applied = {bytes(k) for p in enforcer.policies.policies.values() for k, _ in p.cidrs}
    assert kept == applied | {bytes(k) for k, _ in theirs}


def test_reapply_never_denies_what_both_sets_allow(
    enrolled, spawn, enforcer: Enforcer, policies: PolicySet
) -> None:
    w = spawn(enrolled("a"))
    sets = [wider(), policies]
    results: dict[str, int] = {}
    batches = 0
    done = threading.Event()

    def connect_loop() -> None:
        nonlocal batches
        while not done.is_set():
            for code, n in w("flood", family=4, addr="198.18.0.2", port=5000, count=2000).items():
                results[code] = results.get(code, 0) + n
            batches += 1

    loop = threading.Thread(target=connect_loop)
    loop.start()
    applies = 0
    try:
        while applies < 40 or batches < 3:  # re-applies all through several connect batches
            enforcer.apply_policies(sets[applies % 2])
            applies += 1
    finally:
        done.set()
        loop.join()
    assert list(results) == ["0"], results  # not one EPERM
    # What only the wider set allowed is denied once the narrow set is back.
    enforcer.apply_policies(policies)
    assert w("flood", family=4, addr="198.18.1.2", port=5000, count=1) == {"1": 1}
