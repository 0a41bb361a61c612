"""Containers the config selects, enrolled while they run and unenrolled when they stop.

A watcher lists the engine's running containers (enrolling each, and
unenrolling enrollments whose container is gone), then follows the engine's
events. When the engine goes away enforcement stays as it is and the watcher
tries again after a pause.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from netlogger.config.model import Containers
from netlogger.containers import Container, Engine
from netlogger.enforce import Enrolled, Target
from netlogger.errors import NetloggerError
from netlogger.kernel import cgroup

log = logging.getLogger("netlogger.containers")

RETRY_SECONDS = 5.0


def container_target(spec: Containers | None, c: Container, policy: str | None = None) -> Target:
    """The enrollment for `c`: a policy asked for, else its label's, else the default."""
    label_policy = c.labels.get(spec.policy_label) if spec else None
    chosen = policy or label_policy or (spec.default_policy if spec else "default")
    return Target(cgroup.resolve(c.cgroup), chosen, None, c.agent, c.project, c.id, c.name)


class ContainerWatch:
    def __init__(
        self,
        engine: Engine,
        spec: Containers,
        enroll: Callable[[Target, Container, str], Enrolled],
        unenroll: Callable[[int, str], Enrolled],
        enrolled: Callable[[], list[Enrolled]],
    ) -> None:
        self.engine = engine
        self.spec = spec
        self._enroll = enroll
        self._unenroll = unenroll
        self._enrolled = enrolled

    def run(self, stop: threading.Event) -> None:
        """Follow the engine until `stop` is set."""
        label = self.spec.select.label
        while not stop.is_set():
            try:
                running = {c.id: c for c in self.engine.running(label)}
                for c in running.values():
                    try:  # one refused container (the audit trail has it) must not stop the rest
                        self._enroll(container_target(self.spec, c), c, "container_running")
                    except NetloggerError as exc:
                        log.warning("container %s: %s", c.id[:12], exc)
                for entry in self._enrolled():
                    if entry.container_id and entry.container_id not in running:
                        self._unenroll(entry.cgroup_id, "container_gone")
                self.engine.watch(label, self.started, self.stopped, stop)
            except Exception as exc:  # engine away: keep enforcing, try again shortly
                log.warning("Docker engine at %s: %s; retrying", self.spec.engine, exc)
                stop.wait(RETRY_SECONDS)

    def started(self, c: Container) -> None:
        self._enroll(container_target(self.spec, c), c, "container_start")

    def stopped(self, container_id: str) -> None:
        for entry in self._enrolled():
            if entry.container_id == container_id:
                self._unenroll(entry.cgroup_id, "container_stop")
