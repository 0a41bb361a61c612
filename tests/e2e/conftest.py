"""The agent as users run it: `netlogger run` in a subprocess, driven by the CLI.

Reuses the kernel fixtures (scope cgroup, pin root, network namespaces,
workloads); everything the agent pins or makes is removed afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netlogger import control
from netlogger.errors import AgentError

REPO = Path(__file__).parents[2]
POLICIES = {
    "default": {
        "dns": {"resolvers": ["198.18.0.53"]},
        "allow": [
            {
                "cidr": "198.18.0.0/24",
                "ports": [443, "8000-8100"],
                "proto": "tcp",
                "name": "lab-tcp",
            },
            {"cidr": "198.18.0.0/24", "ports": [5000], "proto": "udp", "name": "lab-udp"},
        ],
    }
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def netlogger(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netlogger", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        **kw,
    )


def docker_engine() -> dict[str, Any]:
    """The test's Docker engine (.ci/monitor-setup.sh starts one), when there is one."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        return {"containers": {"engine": host}}
    if os.environ.get("CI"):
        raise AssertionError("DOCKER_HOST is unset; CI must start dockerd (.ci/monitor-setup.sh)")
    return {}


class AgentProcess:
    """`netlogger run --config ...` with this test's scope, pins, socket, file and port."""

    def __init__(
        self,
        workdir: Path,
        scope_path: Path,
        pin_root: Path,
        extra_sinks: list[dict[str, Any]] | None = None,
        **overrides: Any,
    ) -> None:
        self.workdir = workdir
        self.scope_path, self.pin_root, self.extra_sinks = scope_path, pin_root, extra_sinks
        self.overrides = overrides
        self.socket = workdir / "control.sock"
        self.jsonl = workdir / "egress.jsonl"
        self.metrics_port = free_port()
        self.config = {
            "scope": str(scope_path),
            "pin_root": str(pin_root),
            "control_socket": str(self.socket),
            "metrics": f"127.0.0.1:{self.metrics_port}",
            "state_dir": str(workdir / "state"),
            "sinks": [{"type": "jsonl", "path": str(self.jsonl)}, *(extra_sinks or [])],
            "policies": POLICIES,
            **docker_engine(),
            **overrides,
            # These tests count records one per decision; folding is on only where a test
            # asks for it (limits={"fold": True}).
            "limits": {"fold": False, **overrides.get("limits", {})},
        }
        jsonl = [s for s in self.config["sinks"] if s["type"] == "jsonl"]
        if jsonl:
            self.jsonl = Path(jsonl[0]["path"])
        self.config_file = workdir / "netlogger.yaml"
        self.config_file.write_text(yaml.safe_dump(self.config))
        self.proc: subprocess.Popen[str] | None = None
        self.stderr = ""

    def rewrite_config(self, **changes: Any) -> None:
        """The config file with `changes` over its top-level keys, for a reload to read."""
        self.config |= changes
        self.config_file.write_text(yaml.safe_dump(self.config))

    def start(self) -> AgentProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netlogger", "run", "--config", str(self.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited {self.proc.returncode}: {self.proc.communicate()[1]}"
                )
            try:
                control.request(self.socket, "status", timeout=5)
                return self
            except AgentError:
                time.sleep(0.1)
        raise AssertionError("agent did not come up in 30 s")

    def restarted(self, **overrides: Any) -> AgentProcess:
        """Another agent on this one's directory, pins and settings (`overrides` changed)."""
        return AgentProcess(
            self.workdir,
            self.scope_path,
            self.pin_root,
            self.extra_sinks,
            **(self.overrides | overrides),
        )

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL, even while stopped: nothing of the agent's runs any more."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        _, self.stderr = self.proc.communicate(timeout=60)
        assert self.proc.returncode == -signal.SIGKILL

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return netlogger(*args, "--control-socket", str(self.socket), **kw)

    def status(self) -> dict[str, Any]:
        return control.request(self.socket, "status")

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        _, self.stderr = self.proc.communicate(timeout=60)
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)

    def lines(self) -> list[dict[str, Any]]:
        if not self.jsonl.exists():
            return []
        # The agent may be mid-write: a last line without its newline is not there yet.
        complete = self.jsonl.read_text().split("\n")[:-1]
        return [json.loads(line) for line in complete]

    def wait_for_lines(self, predicate: Any, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.lines()
            if predicate(lines):
                return lines
            time.sleep(0.1)
        raise AssertionError(f"JSONL never satisfied the condition; has {len(self.lines())} lines")

    def metric(self, name: str, **labels: str) -> float:
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics").read()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.decode().splitlines():
            head, _, value = line.rpartition(" ")
            if head == (f"{name}{{{want}}}" if want else name):
                return float(value)
        raise AssertionError(f"no metric {name}{{{want}}}")


@pytest.fixture
def agent_factory(tmp_path: Path, scope, pin_root) -> Iterator[Any]:
    made: list[AgentProcess] = []

    def make(**overrides: Any) -> AgentProcess:
        workdir = tmp_path / f"agent{len(made)}"
        workdir.mkdir()
        made.append(AgentProcess(workdir, scope.path, pin_root, **overrides))
        return made[-1]

    yield make
    for agent in made:
        agent.stop()


@pytest.fixture
def agent(agent_factory) -> AgentProcess:
    return agent_factory().start()


def run_cli(agent: AgentProcess, *args: str) -> tuple[int, subprocess.CompletedProcess[str]]:
    """A CLI command against `agent`, and the pid it ran as (what `control.pid` must say)."""
    cmd = [sys.executable, "-m", "netlogger", *args, "--control-socket", str(agent.socket)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    out, err = proc.communicate(timeout=60)
    return proc.pid, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def controls(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for x in lines if x["event.name"] == "ebpf.egress.control"]


def decisions(lines: list[dict[str, Any]], cgroup_id: int | None = None) -> list[dict[str, Any]]:
    return [
        x
        for x in lines
        if x["event.name"] not in ("ebpf.egress.gap", "ebpf.egress.control")
        and (cgroup_id is None or x["cgroup_id"] == str(cgroup_id))
    ]


def gaps(lines: list[dict[str, Any]], kind: str | None = None) -> list[dict[str, Any]]:
    return [
        x
        for x in lines
        if x["event.name"] == "ebpf.egress.gap" and (kind is None or x["gap.kind"] == kind)
    ]
