"""Fixtures for tests against the running kernel.

Safety: programs attach only to a scope cgroup the test made, pins live under
a per-test pin root, traffic stays inside namespaces the test made, and all of
it is removed on the way out, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from netlogger import sandbox
from netlogger.config.check import check_source
from netlogger.config.source import parse
from netlogger.enforce import Enforcer, Target
from netlogger.kernel import cgroup, loader
from netlogger.kernel.plane import Plane
from netlogger.kernel.ringbuf import RingReader
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.record import Record
from netlogger.policy.compile import PolicySet

POLICY = """
policies:
  default:
    dns: {resolvers: [198.18.0.53]}
    allow:
      - {cidr: 198.18.0.0/24, ports: [443, "8000-8100"], proto: tcp, name: lab-tcp}
      - {cidr: 198.18.0.0/24, ports: [5000], proto: udp, name: lab-udp}
      - {cidr: "fd00:18::/64", ports: [443], name: lab6}
  watch:
    mode: audit
    allow:
      - {cidr: 198.18.0.0/24, ports: [443], name: watch-https}
  pinger:
    icmp: allow
    log_loopback: true
"""


@pytest.fixture
def policies() -> PolicySet:
    return check_source(parse(POLICY, "test-policy.yaml")).policies


@pytest.fixture
def settings() -> loader.Settings:
    return loader.Settings()


@pytest.fixture
def plane(pin_root: Path, scope: cgroup.Cgroup, settings: loader.Settings) -> Iterator[Plane]:
    with loader.loaded(pin_root, scope, settings) as p:
        yield p


@pytest.fixture
def enforcer(plane: Plane, policies: PolicySet) -> Enforcer:
    enforcer = Enforcer(plane, policies)
    enforcer.apply_policies(policies)
    return enforcer


@pytest.fixture
def enrolled(scope: cgroup.Cgroup, enforcer: Enforcer) -> Iterator[Any]:
    """Make a child cgroup of the scope and enroll it: enrolled(name, policy=..., mode=...)."""
    with ExitStack() as stack:

        def make(name: str = "a", **target: Any) -> cgroup.Cgroup:
            cg = stack.enter_context(sandbox.cgroup(scope, name))
            enforcer.enroll(Target(cg, **target))
            return cg

        yield make


@pytest.fixture
def ring(plane: Plane) -> Iterator[RingReader]:
    with plane.reader() as r:
        yield r


@pytest.fixture
def decoder(policies: PolicySet) -> Decoder:
    by_id = policies.by_id()
    return Decoder(
        rule_name=lambda rid: policies.rules[rid].name if rid in policies.rules else None,
        policy_name=lambda pid: by_id[pid].name if pid in by_id else f"unknown({pid})",
    )


@pytest.fixture
def read(ring: RingReader, decoder: Decoder) -> Any:
    def drain() -> list[Record]:
        return decoder.decode_all(ring.drain())

    return drain
