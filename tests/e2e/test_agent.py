"""The host agent end to end on the real kernel: enroll over the control socket,
make traffic, and read exactly those records from `tail --json` and the file."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import threading
import time

from netlogger import sandbox
from tests.completeness import problems
from tests.e2e.conftest import REPO, AgentProcess, decisions, gaps

EPERM, EINPROGRESS = errno.EPERM, errno.EINPROGRESS


def start_tail(agent: AgentProcess, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "netlogger",
            "tail",
            "--json",
            "--control-socket",
            str(agent.socket),
            *args,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    deadline = time.monotonic() + 10
    while agent.status()["tail_subscribers"] < 1:  # subscribed before traffic starts
        assert time.monotonic() < deadline, "tail never subscribed"
        time.sleep(0.05)
    return proc


def read_tail(proc: subprocess.Popen[str], count: int) -> list[dict]:
    assert proc.stdout is not None
    out = [json.loads(proc.stdout.readline()) for _ in range(count)]
    proc.terminate()
    proc.communicate()
    return out


def test_enroll_then_records_reach_tail_and_file(agent, scope, spawn) -> None:
    with sandbox.cgroup(scope, "a") as cg:
        result = agent.cli(
            "enroll", "--cgroup", str(cg.path), "--agent", "a1", "--project", "p1", "--json"
        )
        assert result.returncode == 0, result.stderr
        entry = json.loads(result.stdout)
        assert (entry["cgroup_id"], entry["agent"], entry["project"], entry["mode"]) == (
            cg.id,
            "a1",
            "p1",
            "enforce",
        )

        tail = start_tail(agent)
        w = spawn(cg)
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=443) == EINPROGRESS
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EPERM
        assert w("sendto", family=4, addr="198.18.0.2", port=53) == EPERM
        streamed = read_tail(tail, 3)
        written = decisions(agent.wait_for_lines(lambda ls: len(decisions(ls)) >= 3))

    assert streamed == written
    expected = [
        ("allowed", "rule", "443", "lab-tcp"),
        ("denied", "default_deny", "22", None),
        ("denied", "resolver_not_allowed", "53", None),
    ]
    assert [(r["action"], r["reason"], r["dst_port"], r.get("rule")) for r in written] == expected
    for rec in written:
        assert (rec["agent"], rec["project"], rec["pid"], rec["comm"]) == (
            "a1",
            "p1",
            w.pid,
            "nl-workload",
        )
        assert rec["cgroup_id"] == str(cg.id) and rec["attribution"] == "static"
    assert [r["seq"] for r in written] == [0, 1, 2]


def test_tail_filters_and_history(agent, scope, spawn) -> None:
    with sandbox.cgroup(scope, "a") as a, sandbox.cgroup(scope, "b") as b:
        agent.cli("enroll", "--cgroup", str(a.path), "--agent", "alpha")
        agent.cli("enroll", "--cgroup", str(b.path), "--agent", "beta")
        wa, wb = spawn(a), spawn(b)
        for w in (wa, wb):
            w("connect", family=4, type="tcp", addr="198.18.0.2", port=443)
            w("connect", family=4, type="tcp", addr="198.18.0.2", port=22)
        agent.wait_for_lines(lambda ls: len(decisions(ls)) >= 4)
        tail = start_tail(agent, "--since", "5m", "--action", "denied", "--agent", "beta")
        history = read_tail(tail, 1)
    assert [(r["agent"], r["action"], r["dst_port"]) for r in history] == [("beta", "denied", "22")]


def test_a_stuck_tail_client_does_not_slow_the_file(agent, scope, spawn) -> None:
    import socket as sockets

    with sandbox.cgroup(scope, "a") as cg:
        agent.cli("enroll", "--cgroup", str(cg.path))
        stuck = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
        stuck.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 4096)
        stuck.connect(str(agent.socket))
        stuck.sendall(b'{"op": "tail"}\n')  # ... and never reads a byte
        while agent.status()["tail_subscribers"] < 1:
            time.sleep(0.05)
        w = spawn(cg)
        count = 30_000
        assert w("flood", family=4, addr="198.18.0.2", port=6000, count=count) == {"1": count}
        lines = agent.wait_for_lines(lambda ls: len(decisions(ls)) >= count, timeout=60)
        assert [r["seq"] for r in decisions(lines)] == list(range(count))
        assert gaps(lines) == []  # the file lost nothing; the stuck client's losses are its own
        status = agent.status()
        assert status["tail_subscribers"] == 1
        assert status["losses"]["queue_full"] == 0
        stuck.close()


def test_losses_are_accounted_exactly(agent_factory, scope, spawn) -> None:
    agent = agent_factory(
        limits={"ring_size": "16KiB", "allowed_per_sec": 200, "allowed_burst": 50}
    ).start()
    with sandbox.cgroup(scope, "a") as allowed_cg, sandbox.cgroup(scope, "b") as denied_cg:
        agent.cli("enroll", "--cgroup", str(allowed_cg.path), "--agent", "noisy")
        agent.cli("enroll", "--cgroup", str(denied_cg.path), "--agent", "denier")
        noisy, denier = spawn(allowed_cg), spawn(denied_cg)
        results: dict[str, dict] = {}
        burst = [
            threading.Thread(
                target=lambda: results.update(
                    noisy=noisy("flood", family=4, addr="198.18.0.2", port=5000, count=20_000)
                )
            ),
            threading.Thread(
                target=lambda: results.update(
                    denier=denier("flood", family=4, addr="198.18.0.2", port=6000, count=20_000)
                )
            ),
        ]
        for t in burst:
            t.start()
        for t in burst:
            t.join()
        assert results == {"noisy": {"0": 20_000}, "denier": {"1": 20_000}}

        def accounted(lines: list[dict]) -> bool:
            return all(
                len(decisions(lines, cg.id))
                + sum(g["gap.count"] for g in gaps(lines) if g.get("cgroup_id") == str(cg.id))
                == 20_000
                for cg in (allowed_cg, denied_cg)
            )

        lines = agent.wait_for_lines(accounted, timeout=30)
        status = agent.status()

    for cg in (allowed_cg, denied_cg):
        delivered = {r["seq"] for r in decisions(lines, cg.id)}
        cg_gaps = [g for g in gaps(lines) if g.get("cgroup_id") == str(cg.id)]
        # every seq is delivered or inside a gap that counts it
        for seq in set(range(20_000)) - delivered:
            assert any(g["gap.seq_first"] <= seq <= g["gap.seq_last"] for g in cg_gaps), seq
    noisy_gaps = {g["gap.kind"] for g in gaps(lines) if g.get("cgroup_id") == str(allowed_cg.id)}
    assert "throttled" in noisy_gaps
    assert all(
        g["gap.kind"] == "ringbuf_full"
        for g in gaps(lines)
        if g.get("cgroup_id") == str(denied_cg.id)
    )  # denies are never throttled
    total = {
        kind: sum(g["gap.count"] for g in gaps(lines, kind))
        for kind in ("throttled", "ringbuf_full")
    }
    enrolled = {e["cgroup_id"]: e for e in status["enrolled"]}
    assert total["throttled"] == enrolled[allowed_cg.id]["throttled"]
    assert total["ringbuf_full"] == sum(e["ringbuf_lost"] for e in enrolled.values())
    assert agent.metric("netlogger_lost_records_total", kind="throttled") == total["throttled"]
    assert (
        agent.metric("netlogger_lost_records_total", kind="ringbuf_full") == total["ringbuf_full"]
    )


def test_sigterm_during_a_burst_keeps_every_record_read(agent, scope, spawn) -> None:
    with sandbox.cgroup(scope, "a") as cg:
        agent.cli("enroll", "--cgroup", str(cg.path))
        w = spawn(cg)
        burst = threading.Thread(
            target=lambda: w("flood", family=4, addr="198.18.0.2", port=6000, count=50_000)
        )
        burst.start()
        agent.wait_for_lines(lambda ls: len(ls) > 1000)
        assert agent.signal(signal.SIGTERM) == 0
        burst.join()
    read = int(agent.stderr.split("stopped; ")[1].split(" records read")[0])
    written = decisions(agent.lines())
    assert len(written) == read > 1000
    assert [r["seq"] for r in written] == list(range(read))


def test_kill_9_and_restart_loses_and_repeats_nothing(agent_factory, scope, spawn) -> None:
    first = agent_factory().start()
    with sandbox.cgroup(scope, "a") as cg:
        first.cli("enroll", "--cgroup", str(cg.path), "--agent", "a1")
        w = spawn(cg)
        assert w("flood", family=4, addr="198.18.0.2", port=6000, count=5_000) == {"1": 5_000}
        assert first.signal(signal.SIGKILL) == -signal.SIGKILL
        # No agent: the pinned programs still deny, and still record into the ring.
        assert w("flood", family=4, addr="198.18.0.2", port=6000, count=2_000) == {"1": 2_000}

        second = AgentProcess(first.workdir, scope.path, first.config["pin_root"]).start()
        try:
            assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EPERM
            lines = second.wait_for_lines(lambda ls: len(decisions(ls)) >= 7_001)
            assert second.status()["enrolled"][0]["agent"] == "a1"  # enrollment survived
        finally:
            second.stop()
    seqs = [r["seq"] for r in decisions(lines)]
    assert len(seqs) == len(set(seqs)) == 7_001
    assert sorted(seqs) == list(range(7_001))
    assert {r["agent"] for r in decisions(lines)} == {"a1"}


def test_tail_says_when_the_agent_goes_away(agent_factory) -> None:
    for sig, message in (
        (signal.SIGTERM, "error: AgentError: the agent is stopping; the stream ends here"),
        (
            signal.SIGKILL,
            "error: AgentError: the agent on {socket} went away (the stream ended without "
            "its end mark); see `netlogger status` or the agent's log, and run tail again "
            "once it is back",
        ),
    ):
        agent = agent_factory().start()
        proc = subprocess.Popen(
            [sys.executable, "-m", "netlogger", "tail", "--control-socket", str(agent.socket)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        while agent.status()["tail_subscribers"] < 1:
            time.sleep(0.05)
        agent.signal(sig)
        out, err = proc.communicate(timeout=30)
        assert (proc.returncode, out, err) == (1, "", message.format(socket=agent.socket) + "\n")


def test_tail_no_follow_prints_history_and_exits_0(agent, scope, spawn) -> None:
    with sandbox.cgroup(scope, "a") as cg:
        agent.cli("enroll", "--cgroup", str(cg.path), "--agent", "a1", "--mode", "audit")
        w = spawn(cg)
        w("connect", family=4, type="tcp", addr="198.18.0.2", port=443)
        w("connect", family=4, type="tcp", addr="198.18.0.2", port=22)
        w("connect", family=4, type="tcp", addr="198.18.0.3", port=23)
        agent.wait_for_lines(lambda ls: len(decisions(ls)) >= 3)
        runs = {
            args: agent.cli("tail", "--no-follow", "--json", *args)
            for args in (
                ("--would-deny",),
                ("--would-deny", "--last", "1"),
                ("--dst-ip", "198.18.0.2/32", "--port", "22"),
                ("--reason", "rule", "--policy", "default"),
            )
        }
    got = {}
    for args, result in runs.items():
        assert result.returncode == 0, result.stderr
        got[args] = [
            (r["dst_ip"], r["dst_port"]) for r in map(json.loads, result.stdout.splitlines())
        ]
    assert got == {
        ("--would-deny",): [("198.18.0.2", "22"), ("198.18.0.3", "23")],
        ("--would-deny", "--last", "1"): [("198.18.0.3", "23")],
        ("--dst-ip", "198.18.0.2/32", "--port", "22"): [("198.18.0.2", "22")],
        ("--reason", "rule", "--policy", "default"): [("198.18.0.2", "443")],
    }


def test_folded_repeats_reach_the_file_even_when_the_agent_stops(
    agent_factory, scope, spawn
) -> None:
    """The last repeats of a flood sit in the kernel's fold slots; SIGTERM flushes them."""
    agent = agent_factory(limits={"fold": True, "fold_window": "10s"}).start()
    with sandbox.cgroup(scope, "a") as cg:
        agent.cli("enroll", "--cgroup", str(cg.path))
        w = spawn(cg)
        count = 20_000
        assert w("flood", family=4, addr="198.18.0.2", port=6000, count=count) == {"1": count}
        assert agent.signal(signal.SIGTERM) == 0
    mine = decisions(agent.lines(), cg.id)
    assert sum(x.get("repeat.count", 1) for x in mine) == count
    assert 2 <= len(mine) < 100  # the first, then flushes (twice a second and on stop)
    assert problems(agent.lines(), cg.id, range(count)) == []
