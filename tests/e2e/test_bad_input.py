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
                2,
                "error: CgroupError: cgroup path /tmp is outside the cgroup2 mount",
            ),
            (("enroll", "--cgroup", f"{cg.path}/../../.."), 2, "error: CgroupError: cgroup path"),
            (
                ("enroll", "--cgroup", f"{cg.path}/missing"),
                2,
                f"error: CgroupError: cgroup {cg.path}/missing does not exist",
            ),
            (
                ("enroll", "--cgroup", str(scope.path.parent)),
                2,
                f"error: UsageError: {scope.path.parent} is outside the agent's scope",
            ),
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
        f"error: StateError: the netlogger agent with pid {agent.proc.pid} is using pin root "
        f"{pin_root}; stop it, or give this one its own --pin-root"
    )
    assert agent.status()["agent"]["pin_root"] == str(pin_root)  # the first one is unharmed


def test_teardown_while_an_agent_runs_names_it(agent, pin_root) -> None:
    result = netlogger("teardown", "--pin-root", str(pin_root))
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"error: StateError: the netlogger agent with pid {agent.proc.pid} holds pin root "
        f"{pin_root}: teardown would pull enforcement from under it; stop it first "
        f"(`kill -TERM {agent.proc.pid}`), then run teardown again"
    )
    assert agent.status()["agent"]["pid"] == agent.proc.pid  # still there, still enforcing


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
    # The schema error (proto) hides neither value error.
    assert lines == [
        "error: ConfigError: 3 problem(s)",
        f"{bad}:1: policies.default.allow[1].proto: 'icmp' is not one of tcp, udp, any",
        f"{bad}:1: policies.default.allow[0].cidr: bad cidr '10.0.0.1/8': 10.0.0.1/8 has host "
        "bits set",
        f"{bad}:1: policies.default.allow[1].cidr: bad cidr 'x': 'x' does not appear to be an "
        "IPv4 or IPv6 network",
    ]
    assert not pin_root.exists()  # nothing loaded, nothing pinned


BAD_VALUES = """scope: {scope}
pin_root: {pin_root}
control_socket: {socket}
metrics: 0.0.0.0:9464
limits:
  ring_size: 3000
  allowed_per_sec: -5
  allowed_burst: 0
sinks:
  - {{type: jsonl, path: {jsonl}, max_bytes: -100, keep: -1}}
policies:
  strict:
    allow: [{{cidr: 10.0.0.0/8}}]
  strict:
    mode: audit
    allow: [{{cidr: 0.0.0.0/0}}]
enroll:
  - {{cgroup: {scope}/../x, policy: strict}}
  - {{cgroup: {scope}/no-such-child, policy: strict}}
"""


def test_run_refuses_what_policy_check_reports_with_the_same_messages(
    tmp_path: Path, scope, pin_root
) -> None:
    socket, jsonl = tmp_path / "control.sock", tmp_path / "logs" / "egress.jsonl"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        BAD_VALUES.format(scope=scope.path, pin_root=pin_root, socket=socket, jsonl=jsonl)
    )
    check = netlogger("policy", "check", str(bad))
    run = netlogger("run", "--config", str(bad))
    assert (check.returncode, run.returncode) == (2, 2)
    assert run.stderr == check.stderr
    assert run.stderr.splitlines() == [
        "error: ConfigError: 9 problem(s)",
        f"{bad}:4: metrics: metrics address '0.0.0.0:9464' must be a loopback host:port, like "
        "127.0.0.1:9464",
        f"{bad}:6: limits.ring_size: 3000 is not a power of two from the page size (4096 bytes) "
        "to 2GiB, which the kernel needs; like 8MiB",
        f"{bad}:7: limits.allowed_per_sec: -5 is not 0 (no limit) to 1000000000",
        f"{bad}:8: limits.allowed_burst: 0 is not at least 1",
        f"{bad}:10: sinks[0].max_bytes: -100 is not more than 0",
        f"{bad}:10: sinks[0].keep: -1 is not at least 1 (without a rotated file to keep, the file "
        "would grow past max_bytes)",
        f"{bad}:14: policies.strict: duplicate key; the first is at line 12: keep one",
        f"{bad}:18: enroll[0].cgroup: cgroup path {scope.path}/../x contains '..'; give it "
        "without parent references",
        f"{bad}:19: enroll[1].cgroup: cgroup {scope.path}/no-such-child does not exist; create it "
        f"with: mkdir {scope.path}/no-such-child",
    ]
    # Refused before anything was made: no pins, no socket, no log directory.
    assert not pin_root.exists() and not socket.exists() and not jsonl.parent.exists()


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
