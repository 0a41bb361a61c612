"""Nothing lost silently, under faults caused for real (issue 10, items 1-10).

Each test judges from the JSONL history alone (tests/completeness.py): every
sequence number of the cgroup is a record or inside a gap, no record twice,
and the counts add up; where losses happen, `status --json` and the metrics
report the same numbers as the gaps.
"""

from __future__ import annotations

import ctypes
import errno
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netlogger import sandbox
from netlogger.kernel import abi, libbpf
from netlogger.kernel.maps import BpfMap
from tests.completeness import assert_complete, gap_counts, history, problems
from tests.e2e.conftest import REPO, AgentProcess, decisions, netlogger
from tests.faults import fill, free, read_only, tmpfs

EPERM, EINPROGRESS = errno.EPERM, errno.EINPROGRESS
TAIL = [sys.executable, "-m", "netlogger", "tail", "--json"]
DST = {"family": 4, "addr": "198.18.0.2", "port": 6000}  # a UDP port the policy denies


def deny(w: Any, count: int) -> None:
    assert w("flood", count=count, **DST) == {"1": count}


def until_complete(agent: AgentProcess, cgroup_id: int, seqs: range, timeout: float = 30) -> list:
    """The history, once it accounts for `seqs` exactly (or the test fails saying why not)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = history(agent.jsonl)
        found = problems(lines, cgroup_id, seqs)
        if not found:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(found)
        time.sleep(0.2)


def until(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.1)


def assert_reported_as_gaps(agent: AgentProcess, lines: list[dict[str, Any]]) -> None:
    """status --json and the metrics count each loss kind exactly as the gaps do."""
    in_gaps = gap_counts(lines)
    out = agent.cli("status", "--json")
    assert out.returncode == 0, out.stderr
    losses = json.loads(out.stdout)["losses"]
    assert {k: v for k, v in losses.items() if v} == in_gaps
    for kind, count in in_gaps.items():
        assert agent.metric("netlogger_lost_records_total", kind=kind) == count


def enroll(agent: AgentProcess, cg: Any) -> None:
    out = agent.cli("enroll", "--cgroup", str(cg.path))
    assert out.returncode == 0, out.stderr


def jsonl_on(directory: Path, **spec: Any) -> dict[str, Any]:
    return {"sinks": [{"type": "jsonl", "path": str(directory / "egress.jsonl"), **spec}]}


# 1 ------------------------------------------------------------------------------


def test_reenrolled_cgroup_continues_its_sequence_across_a_crash(
    agent_factory, scope, spawn
) -> None:
    first = agent_factory().start()
    with sandbox.cgroup(scope, "a") as cg:
        enroll(first, cg)
        w = spawn(cg)
        deny(w, 50)
        until_complete(first, cg.id, range(50))
        assert first.cli("unenroll", "--cgroup", str(cg.path)).returncode == 0
        enroll(first, cg)
        first.pause()  # the next 50 stay unread in the ring ...
        deny(w, 50)
        first.kill()  # ... and the agent dies before reading them
        second = first.restarted().start()
        try:
            lines = until_complete(second, cg.id, range(100))
        finally:
            second.stop()
    assert [r["seq"] for r in decisions(lines, cg.id)] == list(range(100))
