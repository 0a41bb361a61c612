"""What each control request does: enroll, unenroll, bypass, enforce, status, policies,
reload (netlogger/reload.py), tail.

Every enforcement change goes through one lock, so a change and the loss
report or cache it invalidates happen together: before a cgroup is unenrolled
its kernel losses are reported, and every enricher forgets what it cached
about it. Unenrolling retires the cgroup's counters (its sequence goes on if
it is enrolled again); they go only with the cgroup itself (`forget`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

from netlogger import tail
from netlogger.backstop import Backstop
from netlogger.config.model import Containers
from netlogger.container_watch import container_target
from netlogger.containers import DEFAULT_ENGINE, Container, Engine
from netlogger.enforce import Enforcer, Enrolled, Expected, Target
from netlogger.errors import UsageError
from netlogger.kernel import cgroup
from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.pump import Pump
from netlogger.units import parse_duration


class Commands:
    def __init__(
        self,
        enforcer: Enforcer,
        pump: Pump,
        fanout: Fanout,
        status: Callable[[], dict[str, Any]],
        policies: Callable[[], dict[str, Any]],
        reload: Callable[[], dict[str, Any]],
        containers: Containers | None,
        engine: Callable[[], Engine] | None,
        stack: ExitStack,
        backstop: Backstop,
    ) -> None:
        """`engine`: the container watch's (connected) engine; None: $DOCKER_HOST's, opened
        when a request first names a container."""
        self.enforcer = enforcer
        self.backstop = backstop
        self.pump = pump
        self.fanout = fanout
        self._status = status
        self._policies = policies
        self._reload = reload
        self._containers = containers
        self._watch_engine = engine
        self._engine: Engine | None = None
        self._stack = stack  # closes what this opens, when the agent stops
        # One enforcement change at a time; reentrant, so a reload enrolls inside its own.
        self.changing = threading.RLock()

    # -- enforcement changes, for requests and the container watcher ---------------------

    def enroll(self, target: Target, container: Container | None = None) -> Enrolled:
        """Enroll `target`; a container also gets the backstop on its veths."""
        with self.changing:
            entry = self.enforcer.enroll(target)
            self.pump.forget(entry.cgroup_id)
            if container is not None:
                self.backstop.cover(container)
            return entry

    def unenroll(self, cgroup_id: int) -> Enrolled:
        with self.changing:
            before = self.enforcer.get(cgroup_id)  # refuses what is not enrolled
            self.pump.report_losses(only=cgroup_id)
            if before.container_id:
                self.backstop.detach(before.container_id)
            entry = self.enforcer.unenroll(cgroup_id)
            self.pump.forget(cgroup_id)
            return entry

    def forget(self, cgroup_id: int) -> None:
        """The cgroup is gone: report its last losses, then drop all that is kept of it."""
        with self.changing:
            self.pump.report_losses(only=cgroup_id)
            self.enforcer.forget(cgroup_id)
            self.pump.forget(cgroup_id)
            self.pump.losses.forget(cgroup_id)

    def expect(self, name: str, expected: Expected) -> None:
        with self.changing:
            self.enforcer.expect(name, expected)

    def unexpect(self, name: str) -> None:
        with self.changing:
            self.enforcer.unexpect(name)

    # -- requests ----------------------------------------------------------------------

    def _resolve(self, request: dict[str, Any]) -> tuple[cgroup.Cgroup, Container | None]:
        path, ref = request.get("cgroup"), request.get("container")
        if bool(path) == bool(ref):
            raise UsageError("name exactly one target: --cgroup PATH or --container ID")
        if path:
            return cgroup.resolve(path), None
        if self._watch_engine is not None:
            engine = self._watch_engine()
        else:  # no watcher: find containers where $DOCKER_HOST says
            if self._engine is None:
                self._engine = Engine(os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE)
                self._stack.callback(self._engine.close)
            engine = self._engine
        container = engine.find(str(ref))
        return cgroup.resolve(container.cgroup), container

    def _target(
        self, request: dict[str, Any], cg: cgroup.Cgroup, container: Container | None
    ) -> Target:
        mode, agent, project = request.get("mode"), request.get("agent"), request.get("project")
        if container is None:
            return Target(cg, request.get("policy") or "default", mode, agent or "", project or "")
        chosen = container_target(
            self._containers, container, request.get("policy"), set(self.enforcer.policies.named())
        )
        return Target(
            chosen.cgroup,
            chosen.policy,
            mode,
            agent or chosen.agent,
            project or chosen.project,
            chosen.container_id,
            from_engine=True,
        )

    def handle(self, request: dict[str, Any]) -> Any:
        op = request["op"]
        if op == "status":
            return self._status()
        if op == "policies":  # `policy test` decides with what this agent enforces
            return self._policies()
        if op == "reload":
            return self._reload()
        cg, container = self._resolve(request)
        if op == "enroll":
            return asdict(self.enroll(self._target(request, cg, container), container))
        if op == "unenroll":
            return asdict(self.unenroll(cg.id))
        if op == "bypass":
            try:
                seconds = parse_duration(str(request.get("for") or ""))
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            with self.changing:
                return asdict(self.enforcer.bypass(cg.id, seconds))
        if op == "enforce":
            with self.changing:
                return asdict(self.enforcer.enforce(cg.id))
        raise UsageError(f"unknown command {op!r}")

    def stream(
        self, request: dict[str, Any], write: Callable[[bytes], None], closed: Callable[[], bool]
    ) -> None:
        tail.serve(request, self.fanout, write, closed)
