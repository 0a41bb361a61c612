"""Fixtures every test on the real kernel shares: a scope cgroup, a pin root,
network namespaces and workload processes. All are made fresh per test and
removed afterwards, pass or fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netlogger import sandbox
from netlogger.kernel import cgroup, pins
from netlogger.workload import Workload


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def scope() -> Iterator[cgroup.Cgroup]:
    with sandbox.cgroup(cgroup.root(), unique("nltest")) as cg:
        yield cg


@pytest.fixture
def pin_root() -> Iterator[Path]:
    path = Path("/sys/fs/bpf") / unique("nltest")
    yield path
    pins.teardown(path)


@pytest.fixture
def net() -> Iterator[sandbox.Net]:
    with sandbox.network() as n:
        yield n


@pytest.fixture
def spawn(net: sandbox.Net) -> Iterator[Any]:
    made: list[Workload] = []

    def make(cg: cgroup.Cgroup) -> Workload:
        made.append(Workload(net.workload_ns, cg.path))
        return made[-1]

    yield make
    for w in made:
        w.close()
