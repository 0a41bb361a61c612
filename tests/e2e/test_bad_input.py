"""Bad input: a clear one-line error, a non-zero exit, and nothing changed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from netlogger import sandbox
from tests.e2e.conftest import REPO, AgentProcess, netlogger


def enrolled(agent: AgentProcess) -> list[dict]:
    return agent.status()["enrolled"]


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_rejected_commands_change_nothing(agent, scope) -> None:
    with sandbox.cgroup(scope, "a") as cg:
        agent.cli("enroll", "--cgroup", str(cg.path), "--agent", "a1")
        before = enrolled(agent)
        cases = [
            (
                ("enroll", "--container", "no-such-container"),
                2,
                "error: UsageError: no container 'no-such-container' on the Docker engine at ",
            ),
            (
                ("bypass", "--cgroup", str(cg.path), "--for", "10 parsecs"),
                2,
                "error: UsageError: bad duration '10 parsecs': use a number with ms, s, m, h or d",
            ),
            (
                ("enroll", "--cgroup", "/tmp"),
                1,
                "error: CgroupError: cgroup path /tmp is outside the cgroup2 mount",
            ),
            (("enroll", "--cgroup", f"{cg.path}/../../.."), 1, "error: CgroupError: cgroup path"),
            (
                ("enroll", "--cgroup", str(cg.path), "--policy", "nope"),
                2,
                "error: UsageError: no policy named 'nope' (known: default)",
            ),
            (
                ("unenroll", "--cgroup", str(scope.path)),
                2,
                f"error: UsageError: cgroup id {scope.id} is not enrolled",
            ),
            (
                ("enroll",),
                2,
                "error: UsageError: name exactly one target: --cgroup PATH or --container ID",
            ),
        ]
        for args, code, message in cases:
            result = agent.cli(*args)
            assert result.returncode == code, (args, result.stderr)
            assert one_line(result.stderr).startswith(message), (args, result.stderr)
        assert enrolled(agent) == before


def test_second_agent_on_the_same_pin_root_is_refused(
    agent, scope, pin_root, tmp_path: Path
) -> None:
    other = AgentProcess(tmp_path, scope.path, pin_root)
    result = netlogger("run", "--config", str(other.config_file))
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"error: StateError: another netlogger agent is using pin root {pin_root}; stop it, "
        "or give this one its own --pin-root"
    )
    assert agent.status()["agent"]["pin_root"] == str(pin_root)  # the first one is unharmed


def test_second_agent_on_the_same_socket_is_refused(agent, scope, tmp_path: Path) -> None:
    config = yaml.safe_load(agent.config_file.read_text())
    config["pin_root"] = "/sys/fs/bpf/nltest-other-never-created"
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(config))
    result = netlogger("run", "--config", str(path))
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"error: AgentError: another netlogger agent answers on {agent.socket}; stop it or use "
        "--control-socket"
    )
    assert not Path("/sys/fs/bpf/nltest-other-never-created").exists()


def test_bad_config_exits_2_before_touching_the_kernel(tmp_path: Path, scope, pin_root) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        json.dumps(
            {
                "scope": str(scope.path),
                "pin_root": str(pin_root),
                "policies": {
                    "default": {"allow": [{"cidr": "10.0.0.1/8"}, {"cidr": "x", "proto": "icmp"}]}
                },
            }
        )
    )
    result = netlogger("run", "--config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "error: ConfigError: 1 problem(s)"
    assert lines[1].startswith(f"{bad}:1: policies.default.allow[1].proto: Invalid enum value")
    assert not pin_root.exists()  # nothing loaded, nothing pinned


def test_missing_privileges_refuse_to_run(tmp_path: Path, scope, pin_root) -> None:
    agent = AgentProcess(tmp_path, scope.path, pin_root)
    no_caps = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--ambient-caps", "-all"]
    result = subprocess.run(
        [*no_caps, sys.executable, "-m", "netlogger", "run", "--config", str(agent.config_file)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        "error: PrivilegeError: missing CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN; run netlogger as "
        "root or grant these capabilities (see deploy/netlogger.service)"
    )
    assert not pin_root.exists() and not agent.socket.exists()
