"""What each control request does: enroll, unenroll, bypass, enforce, status, policies,
reload (netlogger/reload.py), tail.

Every enforcement change goes through one lock, so a change and the loss
report or cache it invalidates happen together: before a cgroup is unenrolled
its kernel losses are reported, and every enricher forgets what it cached
about it. Unenrolling retires the cgroup's counters (its sequence goes on if
it is enrolled again); they go only with the cgroup itself (`forget`). Every
change, asked for or automatic, done or refused, leaves a record in the audit
trail (audit.py) under the same lock, so the trail's order is the order the
kernel saw.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from netlogger import tail
from netlogger.audit import Action, Actor, AuditTrail, why
from netlogger.backstop import Backstop
from netlogger.config.model import Containers
from netlogger.container_watch import container_target
from netlogger.containers import DEFAULT_ENGINE, Container, Engine
from netlogger.control.server import Peer
from netlogger.enforce import Enforcer, Enrolled, Expected, Target
from netlogger.errors import NetloggerError, UsageError
from netlogger.kernel import cgroup
from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.pump import Pump
from netlogger.units import parse_duration

CHANGES = ("enroll", "unenroll", "bypass", "enforce")


class Commands:
    def __init__(
        self,
        enforcer: Enforcer,
        pump: Pump,
        fanout: Fanout,
        status: Callable[[], dict[str, Any]],
        policies: Callable[[], dict[str, Any]],
        reload: Callable[[Actor], dict[str, Any]],
        containers: Containers | None,
        engine: Callable[[], Engine] | None,
        stack: ExitStack,
        backstop: Backstop,
        audit: AuditTrail,
        names: dict[str, str],
        view: Callable[[Enrolled], dict[str, Any]],
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
        self._audit = audit
        # container id -> name, kept past unenroll (a record in flight may still need it)
        self._names = names
        self._entry_view = view  # the one view of an entry (status.Reporter.entry)
        # Entries the trail accounts for: pinned before this agent, or enrolled through it.
        # Any other was made by the kernel at a container's cgroup_mkdir, and the watcher's
        # enroll at the start event is that enrollment's record (nothing before it).
        self._accounted = {e.cgroup_id for e in enforcer.enrolled()}

    # -- enforcement changes, for requests, the container watcher and housekeeping -------

    def enroll(
        self,
        target: Target,
        actor: Actor,
        asked: str | None = None,
        container: Container | None = None,
    ) -> Enrolled:
        """Enroll `target`; a container also gets the backstop on its veths."""
        container_name = target.container_name or self._names.get(target.container_id, "")
        asked = asked or _target_text(target)
        with self.changing:
            before = self._current(target.cgroup.id)
            recorded = before if target.cgroup.id in self._accounted else None
            try:
                entry = self.enforcer.enroll(target)
            except NetloggerError as exc:
                self._refused("enroll", actor, asked, before, exc, target)
                raise
            if target.container_id and target.container_name:
                self._names[target.container_id] = target.container_name
            self._accounted.add(entry.cgroup_id)
            self.pump.forget(entry.cgroup_id)
            if container is not None:
                self.backstop.cover(container)
            # The agent reconciling what already holds (a container both listed and then
            # started) changed nothing: the trail records changes, and what anyone asks for.
            if actor.by == "agent" and recorded is not None and _same_governance(recorded, entry):
                return entry
            self._audit.record(
                Action("enroll", actor, asked, recorded, entry, container_name=container_name)
            )
            return entry

    def record(self, action: Action) -> None:
        """An action the commands did not carry out themselves (a reload) on the trail."""
        self._audit.record(action)

    def unenroll(self, cgroup_id: int, actor: Actor, target: str | None = None) -> Enrolled:
        target = target or f"cgroup id {cgroup_id}"
        with self.changing:
            try:
                before = self.enforcer.get(cgroup_id)  # refuses what is not enrolled, first
            except NetloggerError as exc:
                self._audit.record(
                    Action("unenroll", actor, target, None, None, why(exc), cgroup_id)
                )
                raise
            self.pump.report_losses(only=cgroup_id)
            if before.container_id:
                self.backstop.detach(before.container_id)
            entry = self.enforcer.unenroll(cgroup_id)
            self._accounted.discard(cgroup_id)
            self.pump.forget(cgroup_id)
            self._audit.record(Action("unenroll", actor, target, before, None))
            return entry

    def forget(self, cgroup_id: int, actor: Actor) -> None:
        """The cgroup is gone: report its last losses, then drop all that is kept of it.

        A cgroup still enrolled when it went is unenrolled by this: the trail says so.
        """
        with self.changing:
            before = self._current(cgroup_id)
            self.pump.report_losses(only=cgroup_id)
            self.enforcer.forget(cgroup_id)
            self._accounted.discard(cgroup_id)
            self.pump.forget(cgroup_id)
            self.pump.losses.forget(cgroup_id)
            if before is not None:
                self._audit.record(
                    Action("unenroll", actor, f"cgroup id {cgroup_id}", before, None)
                )

    def bypass(self, cgroup_id: int, seconds: float, actor: Actor, target: str) -> Enrolled:
        return self._window("bypass", cgroup_id, actor, target, seconds)

    def enforce(self, cgroup_id: int, actor: Actor, target: str) -> Enrolled:
        return self._window("enforce", cgroup_id, actor, target, None)

    def _window(
        self, command: str, cgroup_id: int, actor: Actor, target: str, seconds: float | None
    ) -> Enrolled:
        with self.changing:
            before = self._current(cgroup_id)
            try:
                if seconds is None:
                    entry = self.enforcer.enforce(cgroup_id)
                else:
                    entry = self.enforcer.bypass(cgroup_id, seconds)
            except NetloggerError as exc:
                self._audit.record(
                    Action(command, actor, target, before, before, why(exc), cgroup_id,
                           bypass_s=seconds)
                )  # fmt: skip
                raise
            self._audit.record(Action(command, actor, target, before, entry, bypass_s=seconds))
            return entry

    def _current(self, cgroup_id: int) -> Enrolled | None:
        try:
            return self.enforcer.get(cgroup_id)
        except UsageError:
            return None

    def _refused(
        self,
        command: str,
        actor: Actor,
        target: str,
        before: Enrolled | None,
        exc: NetloggerError,
        asked: Target,
    ) -> None:
        self._audit.record(
            Action(
                command,
                actor,
                target,
                before,
                before,
                why(exc),
                asked.cgroup.id,
                str(asked.cgroup.path),
                asked.container_id,
                asked.container_name,
            )
        )

    def expect(self, name: str, expected: Expected) -> None:
        with self.changing:
            self.enforcer.expect(name, expected)
            if expected.container_id and expected.container_name:
                self._names[expected.container_id] = expected.container_name

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
            chosen.container_name,
            from_engine=True,
        )

    def handle(self, request: dict[str, Any], peer: Peer) -> Any:
        op = request["op"]
        if op == "status":
            return self._status()
        if op == "policies":  # `policy test` decides with what this agent enforces
            return self._policies()
        if op == "reload":
            return self._reload(Actor.peer(peer.uid, peer.pid))
        if op not in CHANGES:
            known = ", ".join(("status", "tail", "policies", "reload", *CHANGES))
            raise UsageError(f"unknown command {op!r}; use one of: {known}")
        actor = Actor.peer(peer.uid, peer.pid)
        asked = _asked(request)
        try:
            cg, container = self._resolve(request)
            seconds = _bypass_seconds(request) if op == "bypass" else None
        except NetloggerError as exc:  # refused before it had a cgroup: the trail says so
            self._audit.record(Action(op, actor, asked, None, None, why(exc)))
            raise
        if container is not None:
            asked = f"{asked} ({container.id[:12]})"
        if op == "enroll":
            target_ = self._target(request, cg, container)
            return self._view(self.enroll(target_, actor, asked, container))
        if op == "unenroll":
            return self._view(self.unenroll(cg.id, actor, asked))
        if op == "bypass":
            assert seconds is not None
            return self._view(self.bypass(cg.id, seconds, actor, asked))
        return self._view(self.enforce(cg.id, actor, asked))

    def _view(self, entry: Enrolled) -> dict[str, Any]:
        return self._entry_view(entry)

    def stream(
        self, request: dict[str, Any], write: Callable[[bytes], None], closed: Callable[[], bool]
    ) -> None:
        tail.serve(request, self.fanout, write, closed, self._names)


def _same_governance(a: Enrolled, b: Enrolled) -> bool:
    """Whether two entries enforce and attribute alike (counters and clocks aside)."""
    keys = ("path", "policy", "mode", "agent", "project", "container_id", "source")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def _asked(request: dict[str, Any]) -> str:
    if request.get("cgroup"):
        return f"cgroup {request['cgroup']}"
    return f"container {request.get('container') or '?'}"


def _target_text(target: Target) -> str:
    if target.container_id:
        return f"container {target.container_name or target.container_id[:12]}"
    return f"cgroup {target.cgroup.path}"


def _bypass_seconds(request: dict[str, Any]) -> float:
    try:
        return parse_duration(str(request.get("for") or ""))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
