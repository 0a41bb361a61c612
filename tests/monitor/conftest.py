"""Fixtures for the monitor tests: an isolated stack (names, ports, data dir) and the engine.

Docker tests need the private dockerd and the stand-in images that `.ci/monitor-setup.sh`
provides. In CI (`CI` set) a missing engine is a failure, never a skip.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from monitor import images
from monitor.cli import cli

REPO = Path(__file__).resolve().parents[2]
STANDIN_BUILD = REPO / "tests" / "monitor" / "standins" / "build.sh"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require(reason: str) -> None:
    """Fail in CI, skip on a developer machine."""
    if in_ci():
        pytest.fail(f"{reason} (CI must provide it: source .ci/monitor-setup.sh)")
    pytest.skip(reason)


def free_ports(count: int) -> list[int]:
    """Distinct ports free right now on 127.0.0.1 (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class StackEnv:
    """A throwaway stack: its own names, ports, settings file and data directory."""

    root: Path
    prefix: str
    settings: dict[str, Any]

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def settings_file(self) -> Path:
        return self.root / "settings.yaml"

    @property
    def network(self) -> str:
        return str(self.settings["network"])

    @property
    def project(self) -> str:
        return f"{self.prefix}-monitor"

    def write_settings(self, **changes: Any) -> None:
        self.settings.update(changes)
        self.settings_file.write_text(yaml.safe_dump({"monitoring": self.settings}))

    def run(self, *args: str) -> Result:
        runner = CliRunner()
        return runner.invoke(
            cli,
            ["--data-dir", str(self.data_dir), "--settings", str(self.settings_file), *args],
            catch_exceptions=False,
        )


@pytest.fixture
def stack_env(tmp_path: Path) -> StackEnv:
    prefix = f"nlt{secrets.token_hex(3)}"
    ports = free_ports(7)
    settings: dict[str, Any] = {
        "otel_collector_port": ports[0],
        "otel_grpc_port": ports[1],
        "otel_mtls_port": ports[2],
        "opensearch_port": ports[3],
        "opensearch_dashboards_port": ports[4],
        "prometheus_port": ports[5],
        "prometheus_metrics_port": ports[6],
        "image_refs": "tag",
        "name_prefix": prefix,
        "network": f"{prefix}-net",
        "bootstrap_timeout_s": 60,
    }
    env = StackEnv(tmp_path, prefix, settings)
    env.write_settings()
    return env


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    if not os.environ.get("DOCKER_HOST"):
        require("DOCKER_HOST is not set")
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        require(f"Docker engine at {os.environ['DOCKER_HOST']} does not answer: {exc}")
    done = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if done.returncode != 0:
        require("the docker compose v2 plugin is missing")
    for image in images.ALL:
        try:
            client.images.get(image.ref("tag"))
        except docker.errors.ImageNotFound:
            require(f"stand-in image {image.ref('tag')} missing (run {STANDIN_BUILD})")
    yield client
    client.close()


@pytest.fixture
def live_stack(stack_env: StackEnv, docker_client: Any) -> Iterator[StackEnv]:
    """A stack env whose Docker objects are all removed afterwards, whatever happened."""
    yield stack_env
    label = f"com.docker.compose.project={stack_env.project}"
    for container in docker_client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)
    for volume in docker_client.volumes.list():
        if volume.name.startswith(f"{stack_env.prefix}-"):
            volume.remove(force=True)
    for network in docker_client.networks.list(names=[stack_env.network]):
        network.remove()
