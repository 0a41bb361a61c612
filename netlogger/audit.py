"""The audit trail: every control action on enforcement becomes a Control record.

Asked for (enroll, unenroll, bypass, enforce, reload over the control socket) or
automatic (static enrollments at start, containers the watcher enrolls and
releases, housekeeping of a removed cgroup), done or refused: each one is a
record that reaches every sink and `tail` subscriber through the fan-out's
never-dropped path, as gap records do. Who asked is the socket peer's uid and
pid as the kernel states them (SO_PEERCRED), never what a client claims.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from netlogger.enforce import Enrolled
from netlogger.errors import NetloggerError
from netlogger.pipeline.clock import timestamp
from netlogger.pipeline.record import CONTROL_TRIGGERS, EVENT_NAMES, Control


@dataclass(frozen=True)
class Actor:
    """Who asked for a control action: a socket peer, or the agent itself and why."""

    by: str  # peer / agent
    uid: int | None = None
    pid: int | None = None
    trigger: str | None = None  # for the agent: a key of CONTROL_TRIGGERS

    @classmethod
    def peer(cls, uid: int, pid: int) -> Actor:
        return cls("peer", uid, pid)

    @classmethod
    def agent(cls, trigger: str) -> Actor:
        assert trigger in CONTROL_TRIGGERS, trigger
        return cls("agent", trigger=trigger)


@dataclass(frozen=True)
class Action:
    """One control action as the trail records it."""

    command: str
    actor: Actor
    target: str  # as asked: "cgroup PATH", "container REF", "cgroup id N"
    before: Enrolled | None
    after: Enrolled | None
    error: str | None = None  # set when refused
    cgroup_id: int | None = None  # when the target resolved to a cgroup
    cgroup_path: str | None = None
    container_id: str = ""
    container_name: str = ""
    bypass_s: float | None = None


def why(exc: NetloggerError) -> str:
    """A refused action's `control.error`: the error's kind, then what it says."""
    return f"{type(exc).__name__}: {exc}"


class AuditTrail:
    def __init__(
        self,
        publish: Callable[[Sequence[Control]], None],
        host_name: str,
        names: Mapping[str, str],
    ) -> None:
        self._publish = publish
        self._host_name = host_name
        self._names = names  # container id -> name, as the engine named them

    def record(self, action: Action) -> Control:
        now_ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
        ts = timestamp(now_ns)
        after = action.after
        until = (
            timestamp(now_ns + int(after.bypass_left_s * 1e9))
            if after is not None and after.mode == "bypass"
            else None
        )
        known = action.after or action.before
        container_id = action.container_id or (known.container_id if known else "")
        cgroup_id = action.cgroup_id
        if cgroup_id is None and known is not None:
            cgroup_id = known.cgroup_id
        record = Control(
            event_name=EVENT_NAMES["control"],
            ts=ts,
            command=action.command,
            result="refused" if action.error is not None else "done",
            by=action.actor.by,
            target=action.target,
            error=action.error,
            uid=action.actor.uid,
            pid=action.actor.pid,
            trigger=action.actor.trigger,
            mode_before=action.before.mode if action.before else None,
            mode_after=after.mode if after else None,
            policy_before=action.before.policy if action.before else None,
            policy_after=after.policy if after else None,
            bypass_s=action.bypass_s,
            bypass_until=until,
            cgroup_id=None if cgroup_id is None else str(cgroup_id),
            cgroup_path=action.cgroup_path or (known.path if known else None),
            host_name=self._host_name,
            container_id=container_id,
            container_name=action.container_name or self._names.get(container_id) or None,
            agent=known.agent if known else "",
            project=known.project if known else "",
        )
        self._publish([record])
        return record
