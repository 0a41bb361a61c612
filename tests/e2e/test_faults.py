"""Nothing lost silently, under faults caused for real (issue 10, items 1-10).

Each test judges from the JSONL history alone (tests/completeness.py): every
sequence number of the cgroup is a record or inside a gap, no record twice,
and the counts add up; where losses happen, `status --json` and the metrics
report the same numbers as the gaps.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from netlogger import sandbox
from netlogger.kernel import abi, cgroup, libbpf
from netlogger.kernel.maps import BpfMap
from tests.completeness import DECISIONS, assert_complete, gap_counts, history, problems
from tests.e2e.conftest import REPO, AgentProcess, decisions, netlogger
from tests.faults import fill, free, read_only, tmpfs
from tests.fixtures import unique

EPERM, EINPROGRESS = errno.EPERM, errno.EINPROGRESS
TAIL = [sys.executable, "-m", "netlogger", "tail", "--json"]
DST = {"family": 4, "addr": "198.18.0.2", "port": 6000}  # a UDP port the policy denies


def deny(w: Any, count: int) -> None:
    assert w("flood", count=count, **DST) == {"1": count}


def until_complete(agent: AgentProcess, cgroup_id: int, seqs: range, timeout: float = 30) -> list:
    """The history, once it accounts for `seqs` exactly (or the test fails saying why not)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = history(agent.jsonl, settled=False)
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


@contextlib.contextmanager
def on_small_disk(
    agent_factory: Callable[..., AgentProcess], scope: Any, tmp_path: Path
) -> Iterator[tuple[AgentProcess, Any, Path]]:
    """A running agent whose JSONL file is on a 1 MiB tmpfs, with one enrolled cgroup."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        agent = agent_factory(**jsonl_on(disk)).start()
        with sandbox.cgroup(scope, "a") as cg:
            enroll(agent, cg)
            yield agent, cg, disk


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


# 2 ------------------------------------------------------------------------------


def test_gap_is_marked_reported_only_once_the_file_holds_it(
    agent_factory, scope, spawn, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        first = agent_factory(
            limits={"ring_size": "16KiB", "allowed_per_sec": 0}, **jsonl_on(disk)
        ).start()
        with sandbox.cgroup(scope, "a") as cg:
            enroll(first, cg)
            filler = fill(disk)
            deny(spawn(cg), 1000)  # the ring holds 128: most are lost to a full ring
            until(lambda: first.status()["losses"]["ringbuf_full"] > 0)
            time.sleep(0.5)  # the gap's write has failed by now
            first.kill()
            free(filler)
            second = first.restarted().start()
            try:
                lines = until_complete(second, cg.id, range(1000))
                assert gap_counts(lines)["ringbuf_full"] > 0
            finally:
                second.stop()


# 3 ------------------------------------------------------------------------------


def test_failed_rotation_keeps_writing_and_recovers(agent_factory, scope, spawn, tmp_path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    agent = agent_factory(**jsonl_on(logs, max_bytes="16KiB", keep=200)).start()
    with sandbox.cgroup(scope, "a") as cg:
        enroll(agent, cg)
        w = spawn(cg)
        deny(w, 200)
        until_complete(agent, cg.id, range(200))
        with read_only(logs):
            deny(w, 300)  # every rotation now fails with EROFS
            until_complete(agent, cg.id, range(500))
        deny(w, 300)
        lines = until_complete(agent, cg.id, range(800))
        assert agent.status()["sinks"][0]["healthy"] is True
        assert agent.signal(signal.SIGTERM) == 0, agent.stderr
    assert "Traceback" not in agent.stderr
    rotated = [history(p) for p in logs.glob("egress.jsonl.*")]
    # Everything written while read-only went on in one file, rotated once writable again.
    # (The enroll's control record, which takes no seq, sits in the first file.)
    seqs = [{x["seq"] for x in file if x["event.name"] in DECISIONS} for file in rotated]
    assert any(set(range(200, 500)) <= file for file in seqs)
    assert gap_counts(lines) == {}
    assert_complete(history(agent.jsonl), cg.id, range(800))


# 4 ------------------------------------------------------------------------------


def test_sink_failed_losses_reach_status_and_metrics(
    agent_factory, scope, spawn, tmp_path: Path
) -> None:
    with on_small_disk(agent_factory, scope, tmp_path) as (agent, cg, disk):
        filler = fill(disk)
        deny(spawn(cg), 100)
        until(lambda: agent.status()["sinks"][0]["errors"] > 0)
        free(filler)
        lines = until_complete(agent, cg.id, range(100))
        assert gap_counts(lines).get("sink_failed", 0) > 0
        assert_reported_as_gaps(agent, lines)
        assert agent.signal(signal.SIGTERM) == 0, agent.stderr


# 5 ------------------------------------------------------------------------------


def test_full_disk_counts_exactly_the_lines_that_did_not_fit(
    agent_factory, scope, spawn, tmp_path: Path
) -> None:
    with on_small_disk(agent_factory, scope, tmp_path) as (agent, cg, disk):
        w = spawn(cg)
        deny(w, 10)
        until_complete(agent, cg.id, range(10))
        filler = fill(disk)
        free(filler, 8192)  # room for a few lines of the next batch, not for all
        agent.pause()
        deny(w, 200)
        agent.proc.send_signal(signal.SIGCONT)  # one batch of 200 meets a full disk
        until(lambda: agent.status()["sinks"][0]["errors"] > 0)
        partly = len(decisions(history(agent.jsonl, settled=False), cg.id))
        assert 10 < partly < 210
        free(filler)
        deny(w, 100)
        lines = until_complete(agent, cg.id, range(310))
        assert_reported_as_gaps(agent, lines)
        assert agent.signal(signal.SIGTERM) == 0, agent.stderr
        assert_complete(history(agent.jsonl), cg.id, range(310))


# 6 ------------------------------------------------------------------------------


def test_torn_last_line_is_cut_before_a_restart_appends(agent_factory, scope, spawn) -> None:
    """The torn line is made by hand (a fake, named as such): the sink itself cuts what a
    failed write leaves, so only a crash inside that one write could leave one."""
    first = agent_factory().start()
    with sandbox.cgroup(scope, "a") as cg:
        enroll(first, cg)
        w = spawn(cg)
        deny(w, 10)
        until_complete(first, cg.id, range(10))
        first.pause()
        deny(w, 10)
        first.kill()
        last = first.jsonl.read_bytes().splitlines(keepends=True)[-1]
        with first.jsonl.open("ab") as f:
            f.write(last[: len(last) // 2])  # a write cut short by the kill
        second = first.restarted().start()
        try:
            until_complete(second, cg.id, range(20))
        finally:
            second.stop()
    assert_complete(history(second.jsonl), cg.id, range(20))


# 7 ------------------------------------------------------------------------------


def test_changed_ring_size_delivers_what_the_old_ring_held(agent_factory, scope, spawn) -> None:
    first = agent_factory(limits={"ring_size": "16KiB"}).start()
    with sandbox.cgroup(scope, "a") as cg:
        enroll(first, cg)
        w = spawn(cg)
        deny(w, 10)
        until_complete(first, cg.id, range(10))
        first.pause()
        deny(w, 100)  # unread in the old ring (it holds 128)
        first.kill()
        second = first.restarted(limits={"ring_size": "32KiB"}).start()
        try:
            assert second.status()["ring"]["size"] == 32 << 10
            deny(w, 10)
            lines = until_complete(second, cg.id, range(120))
        finally:
            second.stop()
    assert gap_counts(lines) == {}


# 8 ------------------------------------------------------------------------------


def test_deleted_or_moved_file_is_reopened_at_its_path(agent, scope, spawn) -> None:
    with sandbox.cgroup(scope, "a") as cg:
        enroll(agent, cg)
        w = spawn(cg)
        deny(w, 20)
        until_complete(agent, cg.id, range(20))
        agent.jsonl.unlink()
        deny(w, 30)
        until_complete(agent, cg.id, range(20, 50))
        agent.jsonl.rename(agent.jsonl.with_name("moved.jsonl"))
        deny(w, 30)
        until_complete(agent, cg.id, range(50, 80))
        assert agent.status()["sinks"][0]["healthy"] is True
        tail = subprocess.Popen(
            [*TAIL, "--since", "5m", "--control-socket", str(agent.socket)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert tail.stdout is not None
        since = [json.loads(tail.stdout.readline())["seq"] for _ in range(30)]
        tail.terminate()
        tail.communicate()
    assert since == list(range(50, 80))


# 9 ------------------------------------------------------------------------------


def test_a_refused_start_leaves_no_trace(
    agent_factory, scope, spawn, pin_root: Path, tmp_path: Path
) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    with busy, sandbox.cgroup(scope, "a") as cg:
        w = spawn(cg)
        static = {"enroll": [{"cgroup": str(cg.path)}]}
        refused = agent_factory(metrics=f"127.0.0.1:{port}", **static)
        out = netlogger("run", "--config", str(refused.config_file))
        assert (out.returncode, out.stderr.strip().splitlines()[-1]) == (
            2,
            f"error: UsageError: cannot serve metrics on 127.0.0.1:{port}: Address already in use",
        )
        assert not refused.socket.exists()
        assert not any(pin_root.glob("*/*")), list(pin_root.glob("*/*"))
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EINPROGRESS

        # Refused only once the programs are attached: a static cgroup outside the scope.
        with sandbox.cgroup(cgroup.root(), unique("nltest")) as outside:
            late = agent_factory(enroll=[{"cgroup": str(cg.path)}, {"cgroup": str(outside.path)}])
            out = netlogger("run", "--config", str(late.config_file))
        assert out.returncode == 2, out.stderr
        assert "is outside the agent's scope" in out.stderr.strip().splitlines()[-1]
        assert not late.socket.exists()
        assert not any(pin_root.glob("*/*")), list(pin_root.glob("*/*"))
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EINPROGRESS

        # A refused start that found pinned enforcement leaves it enforcing, as it was.
        running = agent_factory(**static).start()
        running.kill()
        pins = sorted(pin_root.glob("*/*"))
        out = netlogger("run", "--config", str(refused.config_file))
        assert out.returncode == 2, out.stderr
        assert sorted(pin_root.glob("*/*")) == pins
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EPERM
        assert not refused.socket.exists()


# 10 -----------------------------------------------------------------------------


def test_no_state_losses_and_unknown_enums_are_reported(agent, scope, spawn, pin_root) -> None:
    with sandbox.cgroup(scope, "a") as cg:
        enroll(agent, cg)
        w = spawn(cg)
        deny(w, 5)
        until_complete(agent, cg.id, range(5))
        # Make the kernel find no state for the cgroup, and no room to make one.
        path = bytes(pin_root / "maps" / "nl_cgroup_state")
        fd = libbpf.bpf_obj_get(path)
        states = BpfMap("nl_cgroup_state", fd, ctypes.c_uint64, abi.CgroupState)
        states.delete(cg.id)
        dummy = 1 << 62
        try:
            while True:
                states.update(dummy, abi.CgroupState())
                dummy += 1
        except Exception as exc:  # the map is full
            assert getattr(exc, "errno", None) == errno.E2BIG, exc
        deny(w, 30)
        until(lambda: agent.status()["losses"]["no_state"] == 30)
        until(lambda: gap_counts(history(agent.jsonl, settled=False)).get("no_state") == 30)
        lines = history(agent.jsonl)
        assert_reported_as_gaps(agent, lines)
        status = agent.status()
        assert status["records"]["unknown_enum"] == {}
        assert status["ring"]["no_state"] == 30
