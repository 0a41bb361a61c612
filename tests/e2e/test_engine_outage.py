"""The engine goes away and comes back: enforcement, records and attribution carry on.

These tests stop and start a dockerd of their own (its own data root, exec
root, socket and containerd; --live-restore keeps its containers running
while it is down), never the shared one other tests use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from netlogger import sandbox
from netlogger.kernel import cgroup
from tests.e2e.conftest import AgentProcess, decisions
from tests.e2e.test_containers import IMAGE, SELECTED

pytestmark = pytest.mark.docker

# Every container here loops on a connect the default policy denies; with no network
# (--network none) nothing leaves it either way.
LOOP = ["sh", "-c", "while true; do nc -w 1 198.18.0.2 22; sleep 0.2; done"]


class Dockerd:
    """A dockerd of this test's own."""

    def __init__(self, tag: str) -> None:
        self.data_root = Path(f"/var/lib/nltest-dockerd-{tag}")
        self.exec_root = Path(f"/run/nltest-dockerd-{tag}")
        self.socket = self.exec_root.with_suffix(".sock")
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> docker.DockerClient:
        """Start it (if it is not running) and return a client once it answers."""
        if self.proc is None or self.proc.poll() is not None:
            self._spawn()
        return self._client()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            [
                "dockerd",
                f"--data-root={self.data_root}",
                f"--exec-root={self.exec_root}",
                f"--host={self.url}",
                f"--pidfile={self.exec_root}.pid",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--bridge=none",
                "--live-restore",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _client(self) -> docker.DockerClient:
        assert self.proc is not None
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"dockerd exited {self.proc.returncode}"
            if self.socket.exists():
                # A fixed API version: the client asks nothing until the ping.
                client = docker.DockerClient(base_url=self.url, version="1.41", timeout=10)
                try:
                    client.ping()
                    return client
                except docker.errors.DockerException:
                    client.close()
            assert time.monotonic() < deadline, "dockerd did not come up in 60 s"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.socket.unlink(missing_ok=True)  # so a start waits for the new one
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


@pytest.fixture
def own_dockerd() -> Iterator[Dockerd]:
    shared = docker.DockerClient(base_url=os.environ["DOCKER_HOST"])
    image = b"".join(shared.images.get(IMAGE).save(named=True))
    shared.close()
    d = Dockerd(uuid.uuid4().hex[:8])
    client = d.start()
    client.images.load(image)
    client.close()
    d.stop()  # each test starts it when it wants it
    try:
        yield d
    finally:
        with contextlib.suppress(docker.errors.DockerException, AssertionError):
            client = d.start()
            for c in client.containers.list(all=True):
                c.remove(force=True)
            client.close()
        d.stop()
        # dockerd's own containerd outlives it under --live-restore: it goes with the test.
        for pid_file in d.exec_root.glob("containerd/*.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
        time.sleep(0.5)
        for mounted in (d.data_root, d.exec_root):  # dockerd bind-mounts these onto themselves
            subprocess.run(["umount", "-R", str(mounted)], capture_output=True, check=False)
        shutil.rmtree(d.data_root, ignore_errors=True)
        shutil.rmtree(d.exec_root, ignore_errors=True)


def run(client: docker.DockerClient, parent: Path, **labels: str) -> Any:
    mount = cgroup.find_mount()
    return client.containers.run(
        IMAGE,
        LOOP,
        entrypoint=[],
        detach=True,
        name=f"nltest-{uuid.uuid4().hex[:8]}",
        labels=labels,
        network_mode="none",
        cgroup_parent="/" + str(parent.relative_to(mount.path)),
    )


def state(agent: AgentProcess, want: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (got := agent.status()["containers"])["state"] != want:
        assert time.monotonic() < deadline, got
        time.sleep(0.1)
    return got


def newer(agent: AgentProcess, after: int, container_id: str) -> dict[str, Any]:
    """A decision of `container_id` written after the first `after` JSONL lines."""
    lines = agent.wait_for_lines(
        lambda ls: any(x.get("container_id") == container_id for x in decisions(ls[after:]))
    )
    return next(x for x in decisions(lines[after:]) if x.get("container_id") == container_id)


def test_engine_stopped_then_back(agent_factory, own_dockerd, scope) -> None:
    with sandbox.cgroup(scope, "statics") as statics:
        client = own_dockerd.start()
        agent = agent_factory(
            containers={"engine": own_dockerd.url},
            enroll=[{"cgroup": str(statics.path), "agent": "static-a", "project": "static-p"}],
        ).start()
        state(agent, "connected")
        labelled = run(client, scope.path, **SELECTED)
        unlabelled = run(client, statics.path)  # governed by the static enrollment above it
        newer(agent, 0, labelled.id)
        client.close()

        own_dockerd.stop()
        down = state(agent, "unreachable")
        assert down["attribution"] == "degraded"
        assert agent.metric("netlogger_engine_up") == 0
        assert agent.metric("netlogger_attribution_degraded") == 1
        notes = agent.status()["notes"]
        assert any(own_dockerd.url in n and "static enrollments and pinned" in n for n in notes)
        mark = len(agent.lines())
        from_cache = newer(agent, mark, labelled.id)
        assert (from_cache["action"], from_cache["agent"], from_cache["attribution"]) == (
            "denied",
            "agent-z",
            "engine",
        )
        from_path = newer(agent, mark, unlabelled.id)
        assert (from_path["action"], from_path["cgroup_id"], from_path["attribution"]) == (
            "denied",
            str(statics.id),
            "cgroup_path",
        )
        assert (from_path["agent"], from_path["project"]) == ("static-a", "static-p")

        client = own_dockerd.start()
        state(agent, "connected")
        assert agent.metric("netlogger_attribution_degraded") == 0
        mark = len(agent.lines())
        later = run(client, scope.path, **{**SELECTED, "dev.clawker.agent": "agent-later"})
        rec = newer(agent, mark, later.id)
        assert (rec["seq"], rec["action"], rec["agent"], rec["attribution"]) == (
            0,
            "denied",
            "agent-later",
            "engine",
        )
        client.close()


def test_agent_started_while_the_engine_is_down(agent_factory, own_dockerd, scope, spawn) -> None:
    with sandbox.cgroup(scope, "statics") as statics:
        agent = agent_factory(
            containers={"engine": own_dockerd.url},
            enroll=[{"cgroup": str(statics.path), "agent": "static-a"}],
        ).start()  # no engine: the agent starts all the same
        down = state(agent, "unreachable")
        assert down["attribution"] == "degraded" and "cannot reach" in down["error"]
        (entry,) = agent.status()["enrolled"]
        assert (entry["cgroup_id"], entry["agent"], entry["source"]) == (
            statics.id,
            "static-a",
            "static",
        )
        w = spawn(statics)
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == 1  # EPERM
        rec = newer(agent, 0, "")
        assert (rec["action"], rec["agent"], rec["attribution"]) == (
            "denied",
            "static-a",
            "static",
        )

        client = own_dockerd.start()
        state(agent, "connected")
        mark = len(agent.lines())
        c = run(client, scope.path, **SELECTED)
        first = newer(agent, mark, c.id)
        assert (first["seq"], first["action"], first["agent"], first["attribution"]) == (
            0,
            "denied",
            "agent-z",
            "engine",
        )
        client.close()
