"""Containers from the Docker engine: who they are and which cgroup they run in.

A container's cgroup is read from its init process (/proc/<pid>/cgroup, the
`0::` line of cgroup v2), so it works whatever cgroup driver the engine uses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import docker
import docker.errors
import docker.models.containers

from netlogger.errors import UsageError
from netlogger.kernel import cgroup
from netlogger.kernel.mounts import Mount

log = logging.getLogger("netlogger.containers")

DEFAULT_ENGINE = "unix:///var/run/docker.sock"
AGENT_LABEL = "dev.clawker.agent"
PROJECT_LABEL = "dev.clawker.project"


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


class Engine:
    """A Docker engine, by URL (unix:///var/run/docker.sock, tcp://...)."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self._client = docker.DockerClient(base_url=url, timeout=10)
        except docker.errors.DockerException:
            raise UsageError(
                f"cannot reach the Docker engine at {url}; is dockerd running? "
                "(set `containers.engine` in the config)"
            ) from None

    def _container(self, obj: docker.models.containers.Container) -> Container:
        pid = int(obj.attrs["State"]["Pid"])
        if not pid:
            raise UsageError(f"container {obj.name} ({obj.short_id}) is not running")
        assert obj.id is not None and obj.name is not None  # an inspected container has both
        return Container(obj.id, obj.name, pid, cgroup_of(pid), dict(obj.labels))

    def find(self, ref: str) -> Container:
        try:
            return self._container(self._client.containers.get(ref))
        except docker.errors.NotFound:
            raise UsageError(f"no container {ref!r} on the Docker engine at {self.url}") from None
        except docker.errors.DockerException as exc:
            raise UsageError(f"Docker engine at {self.url}: {exc}") from None

    def running(self, label: str) -> list[Container]:
        found = []
        for obj in self._client.containers.list(filters={"label": label}):
            try:
                found.append(self._container(obj))
            except (UsageError, FileNotFoundError) as exc:  # exited between list and inspect
                log.info("skipping container %s: %s", obj.short_id, exc)
        return found

    def watch(
        self,
        label: str,
        started: Callable[[Container], None],
        stopped: Callable[[str], None],
        stop: threading.Event,
    ) -> None:
        """Call `started`/`stopped` for labelled containers until `stop` is set."""
        # The event stream is quiet for long stretches: it gets a client without a read timeout.
        # None reaches requests as "no timeout"; types-docker declares the parameter int only.
        listener = docker.DockerClient(base_url=self.url, timeout=None)  # type: ignore[arg-type]  # see above
        events = listener.events(
            decode=True, filters={"type": "container", "event": ["start", "die"], "label": label}
        )

        def close_on_stop() -> None:
            stop.wait()
            events.close()

        threading.Thread(target=close_on_stop, daemon=True).start()
        try:
            for event in events:
                if stop.is_set():
                    break
                ref = event.get("id") or event.get("Actor", {}).get("ID", "")
                try:
                    if event.get("Action") == "start":
                        started(self.find(ref))
                    else:
                        stopped(ref)
                except Exception as exc:  # one odd container must not end the watch
                    log.warning("container %s: %s", ref[:12], exc)
        finally:
            listener.close()

    def close(self) -> None:
        self._client.close()
