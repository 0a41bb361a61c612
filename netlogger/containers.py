"""Containers from the Docker engine: who they are and which cgroup they run in.

A container's cgroup is read from its init process (/proc/<pid>/cgroup, the
`0::` line of cgroup v2), so it works whatever cgroup driver the engine uses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.errors
import docker.models.containers

from netlogger.errors import EngineError, UsageError
from netlogger.kernel import cgroup
from netlogger.kernel.mounts import Mount

log = logging.getLogger("netlogger.containers")

DEFAULT_ENGINE = "unix:///var/run/docker.sock"
# The lifecycle events the watcher follows; each only says "look at this container again".
EVENTS = ("create", "start", "die", "destroy")
AGENT_LABEL = "dev.clawker.agent"
PROJECT_LABEL = "dev.clawker.project"
# How long a container's name outlives its enrollment: records it made before leaving may
# still be in the ring, a sink's queue or a restart's recovery, and they should name it.
NAME_GRACE_S = 600.0


class ContainerNames(dict[str, str]):
    """Container id -> the engine's name, for every record that names a container.

    Kept past an unenroll, but not for ever: `trim` drops a name once its container has
    not been enrolled for NAME_GRACE_S, so an agent that sees thousands of short-lived
    containers keeps only the names still worth knowing.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._left: dict[str, float] = {}  # id -> when trim first found it not enrolled

    def trim(self, enrolled: set[str]) -> list[str]:
        """Forget the names of containers not in `enrolled` for the grace; the ids gone."""
        now = self._clock()
        self._left = {c: t for c, t in self._left.items() if c not in enrolled and c in self}
        gone = []
        # A snapshot of the ids: enrollments on other threads add names meanwhile.
        for cid in [c for c in list(self) if c not in enrolled]:
            if now - self._left.setdefault(cid, now) >= NAME_GRACE_S:
                self.pop(cid, None)
                del self._left[cid]
                gone.append(cid)
        return gone


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    pid: int
    cgroup: Path
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def agent(self) -> str:
        return self.labels.get(AGENT_LABEL, "")

    @property
    def project(self) -> str:
        return self.labels.get(PROJECT_LABEL, "")


def cgroup_of(pid: int, mount: Mount | None = None, proc: Path = Path("/proc")) -> Path:
    """The cgroup v2 directory of process `pid`."""
    mount = mount or cgroup.find_mount()
    for line in (proc / str(pid) / "cgroup").read_text().splitlines():
        if line.startswith("0::"):
            inside = PurePosixPath(line[3:])
            relative = inside.relative_to(mount.root) if inside.is_relative_to(mount.root) else None
            if relative is None:
                break
            return mount.path / relative
    raise UsageError(f"process {pid} has no cgroup v2 directory visible from here")


def systemd_slice_dir(unit: str) -> PurePosixPath:
    """Where systemd puts a slice: `a-b.slice` lives in `a.slice/a-b.slice`."""
    stem = unit.removesuffix(".slice")
    if stem in ("", "-"):
        return PurePosixPath()
    parts = stem.split("-")
    return PurePosixPath(*["-".join(parts[: i + 1]) + ".slice" for i in range(len(parts))])


def cgroup_name(container_id: str, driver: str) -> str:
    """The name of the cgroup directory the engine will make for a container."""
    return f"docker-{container_id}.scope" if driver == "systemd" else container_id


def expected_cgroup(attrs: dict[str, Any], driver: str, mount: Mount) -> tuple[str, Path]:
    """The name and path of the cgroup v2 directory the engine will make for a container.

    Docker's cgroupfs driver makes `<--cgroup-parent or /docker>/<id>`, its systemd
    driver `<slice or system.slice>/docker-<id>.scope`.
    """
    name = cgroup_name(attrs["Id"], driver)
    parent = str((attrs.get("HostConfig") or {}).get("CgroupParent") or "")
    if driver == "systemd":
        where = systemd_slice_dir(parent or "system.slice")
    else:
        where = PurePosixPath((parent or "/docker").lstrip("/"))
    inside = PurePosixPath("/", where)
    relative = inside.relative_to(mount.root) if inside.is_relative_to(mount.root) else where
    return name, mount.path / relative / name


def container_of(attrs: dict[str, Any]) -> Container:
    """A running container, from its `docker inspect` attributes."""
    pid = int((attrs.get("State") or {}).get("Pid") or 0)
    name = str(attrs.get("Name", "")).lstrip("/")
    if not pid:
        raise UsageError(f"container {name} ({attrs['Id'][:12]}) is not running")
    labels = dict((attrs.get("Config") or {}).get("Labels") or {})
    return Container(attrs["Id"], name, pid, cgroup_of(pid), labels)


class Engine:
    """A Docker engine, by URL (unix:///var/run/docker.sock, tcp://...)."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self._client = docker.DockerClient(base_url=url, timeout=10)
        except docker.errors.DockerException:
            raise EngineError(
                f"cannot reach the Docker engine at {url}; is dockerd running? "
                "(set `containers.engine` in the config)"
            ) from None

    def find(self, ref: str) -> Container:
        try:
            return container_of(self._client.containers.get(ref).attrs)
        except docker.errors.NotFound:
            raise UsageError(f"no container {ref!r} on the Docker engine at {self.url}") from None
        except docker.errors.DockerException as exc:
            raise UsageError(f"Docker engine at {self.url}: {exc}") from None

    def inspect(self, ref: str) -> dict[str, Any] | None:
        """`docker inspect`, or None when the engine has no such container (any more)."""
        try:
            return dict(self._client.api.inspect_container(ref))
        except docker.errors.NotFound:
            return None

    def selected(self, label: str) -> list[dict[str, Any]]:
        """Every container carrying `label`, running or not, as `docker inspect` shows it."""
        return [c.attrs for c in self._client.containers.list(all=True, filters={"label": label})]

    def cgroup_driver(self) -> str:
        return str(self._client.info().get("CgroupDriver", "cgroupfs"))

    def events(
        self, label: str, stop: threading.Event
    ) -> Iterator[tuple[str, str, dict[str, str]]]:
        """(action, container id, attributes: its labels, name and image) of labelled
        containers' lifecycle events, until `stop`.

        The stream is opened before this returns, so nothing that happens after
        the call is missed by a caller that lists containers before iterating.
        """
        # The event stream is quiet for long stretches: it gets a client without a read timeout.
        # None reaches requests as "no timeout"; types-docker declares the parameter int only.
        listener = docker.DockerClient(base_url=self.url, timeout=None)  # type: ignore[arg-type]  # see above
        try:
            stream = listener.events(
                decode=True,
                filters={"type": "container", "event": list(EVENTS), "label": label},
            )
        except BaseException:
            listener.close()
            raise

        def close_on_stop() -> None:
            stop.wait()
            stream.close()

        threading.Thread(target=close_on_stop, daemon=True).start()

        def follow() -> Iterator[tuple[str, str, dict[str, str]]]:
            try:
                for event in stream:
                    if stop.is_set():
                        break
                    actor = event.get("Actor") or {}
                    ref = event.get("id") or actor.get("ID", "")
                    yield (
                        str(event.get("Action", "")),
                        str(ref),
                        dict(actor.get("Attributes") or {}),
                    )
            finally:
                listener.close()

        return follow()

    def close(self) -> None:
        self._client.close()
