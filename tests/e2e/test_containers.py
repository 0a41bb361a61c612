"""Containers from a real Docker engine: enrolled by label or by id, attributed, released."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from netlogger.kernel import cgroup
from tests.e2e.conftest import AgentProcess, decisions

pytestmark = pytest.mark.docker

# A local image with busybox `nc` (built by .ci/monitor-setup.sh: no registry is reachable).
IMAGE = "curlimages/curl:8.11.1"


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    host = os.environ.get("DOCKER_HOST")
    if not host:
        if os.environ.get("CI"):
            pytest.fail("DOCKER_HOST is unset; CI must start dockerd (.ci/monitor-setup.sh)")
        pytest.skip("no Docker engine")
    client = docker.DockerClient(base_url=host)
    yield client
    client.close()


def start(engine: docker.DockerClient, parent: str | None = None, **labels: str) -> Any:
    return engine.containers.run(
        IMAGE,
        ["sleep", "300"],
        entrypoint=[],
        detach=True,
        name=f"nltest-{uuid.uuid4().hex[:8]}",
        labels=labels,
        network_mode="none",
        cgroup_parent=parent,
    )


@pytest.fixture
def container(engine: docker.DockerClient, scope) -> Iterator[Any]:
    """Containers whose cgroups the engine makes inside the test's scope (--cgroup-parent)."""
    made: list[Any] = []
    parent = "/" + str(scope.path.relative_to(cgroup.find_mount().path))

    def run(**labels: str) -> Any:
        made.append(start(engine, parent, **labels))
        return made[-1]

    yield run
    for c in made:
        c.remove(force=True)
    for v1 in Path("/sys/fs/cgroup").glob(f"*/{parent.lstrip('/')}"):
        with contextlib.suppress(OSError):
            v1.rmdir()  # the engine made the parent in every v1 hierarchy too


def wait_enrolled(agent: AgentProcess, container_id: str, present: bool = True) -> dict | None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = [e for e in agent.status()["enrolled"] if e["container_id"] == container_id]
        if bool(found) == present:
            return found[0] if found else None
        time.sleep(0.1)
    raise AssertionError(f"container {container_id[:12]} never {'en' if present else 'un'}rolled")


def test_labelled_container_is_enrolled_attributed_and_released(agent, container) -> None:
    c = container(**{"dev.clawker.agent": "agent-x", "dev.clawker.project": "proj-y"})
    entry = wait_enrolled(agent, c.id)
    assert entry is not None
    assert (entry["agent"], entry["project"], entry["policy"]) == ("agent-x", "proj-y", "default")
    code, output = c.exec_run(["nc", "-w", "1", "198.18.0.2", "22"])
    assert code != 0 and b"Operation not permitted" in output
    lines = agent.wait_for_lines(lambda ls: len(decisions(ls)) >= 1)
    (rec,) = decisions(lines)
    assert (rec["action"], rec["container_id"], rec["agent"], rec["project"], rec["comm"]) == (
        "denied",
        c.id,
        "agent-x",
        "proj-y",
        "nc",
    )
    c.kill()
    assert wait_enrolled(agent, c.id, present=False) is None


def test_enroll_by_container_id(agent, container) -> None:
    c = container()  # no labels: the watcher leaves it alone
    result = agent.cli("enroll", "--container", c.short_id, "--agent", "manual")
    assert result.returncode == 0, result.stderr
    entry = wait_enrolled(agent, c.id)
    assert entry is not None and entry["agent"] == "manual"
    assert entry["path"].endswith(c.id) or c.id in entry["path"]


def test_container_outside_the_scope_is_refused(agent, engine) -> None:
    c = engine.containers.run(
        IMAGE,
        ["sleep", "300"],
        entrypoint=[],
        detach=True,
        network_mode="none",
        name=f"nltest-{uuid.uuid4().hex[:8]}",
    )
    try:
        result = agent.cli("enroll", "--container", c.id)
        assert result.returncode == 2
        assert "is outside the agent's scope" in result.stderr
        assert agent.status()["enrolled"] == []
    finally:
        c.remove(force=True)


def test_automatic_enrollment_and_release_are_in_the_audit_trail(agent, container) -> None:
    c = container(**{"dev.clawker.agent": "agent-x"})
    entry = wait_enrolled(agent, c.id)
    assert entry is not None and entry["container_name"] == c.name
    c.exec_run(["nc", "-w", "1", "198.18.0.2", "22"])
    c.kill()
    wait_enrolled(agent, c.id, present=False)

    def audit_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # The engine is shared: other tests' labelled containers are refused (outside the scope).
        return [
            x
            for x in lines
            if x["event.name"] == "ebpf.egress.control" and x.get("container_id") == c.id
        ]

    lines = agent.wait_for_lines(lambda ls: len(audit_of(ls)) >= 2)
    audit = audit_of(lines)
    common = {
        "event.name": "ebpf.egress.control",
        "control.result": "done",
        "control.by": "agent",
        "control.target": f"container {c.name}",
        "cgroup_id": str(entry["cgroup_id"]),
        "cgroup_path": entry["path"],
        "container_id": c.id,
        "container_name": c.name,
        "agent": "agent-x",
    }
    assert [{k: v for k, v in r.items() if k not in ("ts", "host.name")} for r in audit] == [
        {
            **common,
            "control.command": "enroll",
            "control.trigger": "container_start",
            "control.mode_after": "enforce",
            "control.policy_after": "default",
        },
        {
            **common,
            "control.command": "unenroll",
            "control.trigger": "container_stop",
            "control.target": f"cgroup id {entry['cgroup_id']}",
            "control.mode_before": "enforce",
            "control.policy_before": "default",
        },
    ]
    (rec,) = decisions(lines)
    assert (rec["container_id"], rec["container_name"]) == (c.id, c.name)
    by_name = agent.cli("tail", "--no-follow", "--json", "--container", c.name)
    by_id = agent.cli("tail", "--no-follow", "--json", "--container", c.short_id)
    assert by_name.returncode == by_id.returncode == 0, by_name.stderr + by_id.stderr
    assert by_name.stdout == by_id.stdout
    assert [json.loads(x)["event.name"] for x in by_name.stdout.splitlines()] == [
        "ebpf.egress.control",  # enroll
        "ebpf.egress.connect",  # the deny
        "ebpf.egress.control",  # unenroll
    ]
    human = agent.cli("tail", "--no-follow", "--no-color", "--action", "denied")
    assert f"agent-x ({c.name})  nc[" in human.stdout
