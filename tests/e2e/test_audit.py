"""The audit trail on the real agent: every control action is a record in every sink.

Commands run as real processes, so `control.pid` is checked against the pid the
kernel gave the CLI, and `control.uid` against ours (SO_PEERCRED, not a claim).
"""

from __future__ import annotations

import copy
import os
import re
import signal
from typing import Any

from netlogger import sandbox
from tests.e2e.conftest import controls, run_cli


def without_ts(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in ("ts", "host.name", "control.bypass_until")}


def test_enroll_bypass_enforce_unenroll_leave_one_record_each(agent, scope) -> None:
    with sandbox.cgroup(scope, "web") as cg:
        path = str(cg.path)
        pids = []
        for args in (
            ("enroll", "--cgroup", path, "--agent", "a1", "--project", "p1", "--mode", "audit"),
            ("bypass", "--cgroup", path, "--for", "10m"),
            ("enforce", "--cgroup", path),
            ("unenroll", "--cgroup", path),
        ):
            pid, result = run_cli(agent, *args)
            assert result.returncode == 0, result.stderr
            pids.append(pid)
        lines = agent.wait_for_lines(lambda ls: len(controls(ls)) >= 4)
    got = controls(lines)
    common = {
        "event.name": "ebpf.egress.control",
        "control.result": "done",
        "control.by": "peer",
        "control.uid": os.getuid(),
        "control.target": f"cgroup {path}",
        "cgroup_id": str(cg.id),
        "cgroup_path": path,
        "agent": "a1",
        "project": "p1",
    }
    assert [without_ts(r) for r in got] == [
        {
            **common,
            "control.command": "enroll",
            "control.pid": pids[0],
            "control.mode_after": "audit",
            "control.policy_after": "default",
        },
        {
            **common,
            "control.command": "bypass",
            "control.pid": pids[1],
            "control.mode_before": "audit",
            "control.mode_after": "bypass",
            "control.policy_before": "default",
            "control.policy_after": "default",
            "control.bypass_s": 600.0,
        },
        {
            **common,
            "control.command": "enforce",
            "control.pid": pids[2],
            "control.mode_before": "bypass",
            "control.mode_after": "enforce",
            "control.policy_before": "default",
            "control.policy_after": "default",
        },
        {
            **common,
            "control.command": "unenroll",
            "control.pid": pids[3],
            "control.mode_before": "enforce",
            "control.policy_before": "default",
        },
    ]
    # The expiry is the kernel's: ten minutes after the bypass, on the wall clock.
    assert got[1]["ts"] < got[1]["control.bypass_until"]
    assert got[1]["control.bypass_until"][:13] >= got[1]["ts"][:13]
    assert all(r["host.name"] == os.uname().nodename for r in got)


def test_refused_commands_say_who_asked_and_why(agent, scope) -> None:
    with sandbox.cgroup(scope, "web") as cg:
        path = str(cg.path)
        p1, r1 = run_cli(agent, "enroll", "--cgroup", path, "--policy", "nope")
        p2, r2 = run_cli(agent, "bypass", "--cgroup", path, "--for", "10m")
        p3, r3 = run_cli(agent, "enroll", "--cgroup", path + "/missing")
        lines = agent.wait_for_lines(lambda ls: len(controls(ls)) >= 3)
    assert [r.returncode for r in (r1, r2, r3)] == [2, 2, 2]
    got = [without_ts(r) for r in controls(lines)]
    assert got == [
        {
            "event.name": "ebpf.egress.control",
            "control.command": "enroll",
            "control.result": "refused",
            "control.error": "UsageError: no policy named 'nope' (known: default)",
            "control.by": "peer",
            "control.uid": os.getuid(),
            "control.pid": p1,
            "control.target": f"cgroup {path}",
            "cgroup_id": str(cg.id),
            "cgroup_path": path,
        },
        {
            "event.name": "ebpf.egress.control",
            "control.command": "bypass",
            "control.result": "refused",
            "control.error": f"UsageError: cgroup id {cg.id} is not enrolled; enroll it first",
            "control.by": "peer",
            "control.uid": os.getuid(),
            "control.pid": p2,
            "control.target": f"cgroup {path}",
            "control.bypass_s": 600.0,
            "cgroup_id": str(cg.id),
        },
        {
            "event.name": "ebpf.egress.control",
            "control.command": "enroll",
            "control.result": "refused",
            "control.error": f"CgroupError: cgroup {path}/missing does not exist; "
            f"create it with: mkdir {path}/missing",
            "control.by": "peer",
            "control.uid": os.getuid(),
            "control.pid": p3,
            "control.target": f"cgroup {path}/missing",
        },
    ]
    assert agent.status()["enrolled"] == []


def test_static_enrollments_are_recorded_as_the_agents(agent_factory, scope) -> None:
    with sandbox.cgroup(scope, "static") as cg:
        agent = agent_factory(
            enroll=[{"cgroup": str(cg.path), "agent": "s1", "policy": "default"}]
        ).start()
        lines = agent.wait_for_lines(lambda ls: len(controls(ls)) >= 1)
        agent.stop()
    (rec,) = controls(lines)
    assert without_ts(rec) == {
        "event.name": "ebpf.egress.control",
        "control.command": "enroll",
        "control.result": "done",
        "control.by": "agent",
        "control.trigger": "config",
        "control.target": f"cgroup {cg.path}",
        "control.mode_after": "enforce",
        "control.policy_after": "default",
        "cgroup_id": str(cg.id),
        "cgroup_path": str(cg.path),
        "agent": "s1",
    }


def test_tail_shows_control_actions(agent, scope) -> None:
    with sandbox.cgroup(scope, "web") as cg:
        pid, _ = run_cli(agent, "enroll", "--cgroup", str(cg.path), "--agent", "a1")
        agent.wait_for_lines(lambda ls: len(controls(ls)) >= 1)
        result = agent.cli("tail", "--no-follow", "--no-color")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line[12:] == (
        f"  CONTROL  enroll    a1  cgroup {cg.path}  by uid {os.getuid()} pid {pid}  "
        "not enrolled -> enforce default  done"
    )


def test_a_vanished_cgroup_is_unenrolled_by_the_agent_on_the_record(agent, scope) -> None:
    with sandbox.cgroup(scope, "gone") as cg:
        assert agent.cli("enroll", "--cgroup", str(cg.path), "--agent", "g1").returncode == 0
    # The cgroup is removed; the agent's housekeeping (every 5 s) notices.
    lines = agent.wait_for_lines(lambda ls: len(controls(ls)) >= 2, timeout=30)
    assert without_ts(controls(lines)[1]) == {
        "event.name": "ebpf.egress.control",
        "control.command": "unenroll",
        "control.result": "done",
        "control.by": "agent",
        "control.trigger": "cgroup_gone",
        "control.target": f"cgroup id {cg.id}",
        "control.mode_before": "enforce",
        "control.policy_before": "default",
        "cgroup_id": str(cg.id),
        "cgroup_path": str(cg.path),
        "agent": "g1",
    }
    assert agent.status()["enrolled"] == []


def test_a_reload_is_on_the_record_with_who_asked_done_or_refused(agent_factory, scope) -> None:
    with sandbox.cgroup(scope, "first") as first, sandbox.cgroup(scope, "second") as second:
        static = {"cgroup": str(first.path), "policy": "default"}
        agent = agent_factory(enroll=[static], containers=None).start()
        good = copy.deepcopy(agent.config)
        agent.rewrite_config(enroll=[static, {"cgroup": str(second.path), "policy": "default"}])
        asked, done = run_cli(agent, "reload")
        agent.rewrite_config(policies={"default": {"allow": [{"cidr": "198.18.0.0/33"}]}})
        asked_again, refused = run_cli(agent, "reload")
        agent.config = good
        agent.rewrite_config()
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGHUP)  # nobody to name: the agent's own
        lines = agent.wait_for_lines(lambda ls: len(controls(ls)) >= 6)
    assert (done.returncode, refused.returncode) == (0, 2), (done.stderr, refused.stderr)
    got = [without_ts(r) for r in controls(lines)[1:]]
    # A refused reload's record says where the config is wrong, as the CLI does.
    error = got[2].pop("control.error")
    where = re.escape(str(agent.config_file))
    assert re.fullmatch(
        rf"ConfigError: 1 problem\(s\)\n{where}:\d+: policies\.default\.allow\[0\]\.cidr: "
        r"bad cidr '198\.18\.0\.0/33': .*",
        error,
    ), error
    reload = {
        "event.name": "ebpf.egress.control",
        "control.command": "reload",
        "control.target": f"config {agent.config_file}",
    }
    peer = {"control.by": "peer", "control.uid": os.getuid()}
    assert got == [
        {  # the enrollment the reload made is the asker's, as the reload is
            "event.name": "ebpf.egress.control",
            "control.command": "enroll",
            "control.result": "done",
            **peer,
            "control.pid": asked,
            "control.target": f"cgroup {second.path}",
            "control.mode_after": "enforce",
            "control.policy_after": "default",
            "cgroup_id": str(second.id),
            "cgroup_path": str(second.path),
        },
        {**reload, "control.result": "done", **peer, "control.pid": asked},
        {**reload, "control.result": "refused", **peer, "control.pid": asked_again},
        {  # SIGHUP with the first config again: the agent's own, and so is what it undid
            "event.name": "ebpf.egress.control",
            "control.command": "unenroll",
            "control.result": "done",
            "control.by": "agent",
            "control.trigger": "reload",
            "control.target": f"cgroup id {second.id}",
            "control.mode_before": "enforce",
            "control.policy_before": "default",
            "cgroup_id": str(second.id),
            "cgroup_path": str(second.path),
        },
        {**reload, "control.result": "done", "control.by": "agent", "control.trigger": "reload"},
    ]
