"""Containers the config selects: governed from their first instruction, released when gone.

At the engine's `create` event the container's labels are known but its
cgroup does not exist yet: the watcher tells the kernel the name that cgroup
will have (Enforcer.expect), and the cgroup_mkdir program enrolls it when the
engine makes it, before any task is in it. `start`, `die` and `destroy` (and
the listing done on every (re)connection) only make the watcher look at the
container again and reconcile: the running container's cgroup enrolled, with
the right path and labels; any other cgroup of it unenrolled; the expectation
dropped once the container is destroyed. Events may come late, twice or out
of order: each one re-reads the engine, so none can leave a stale entry.

Fail closed: a selected container whose policy label names no policy (or is
malformed) is enrolled with `_deny_all`, which allows nothing, and says why.
An engine that cannot be reached is a degraded state: enforcement stays as
pinned, records keep their pinned labels and cgroup-path attribution, and the
watcher tries again.

A kernel that refuses the cgroup_mkdir program leaves the start event to
enroll: the container's first connects may then go out unenforced, and
`status` says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netlogger import privileges
from netlogger.config.model import Containers
from netlogger.containers import (
    AGENT_LABEL,
    PROJECT_LABEL,
    Container,
    Engine,
    cgroup_name,
    container_of,
    expected_cgroup,
)
from netlogger.enforce import Enrolled, Expected, Target
from netlogger.errors import EngineError, NetloggerError
from netlogger.escape import Escape, assess, summary
from netlogger.kernel import cgroup
from netlogger.pipeline.enrich import ContainerFlags
from netlogger.policy.compile import DENY_ALL, POLICY_NAME_MAX

log = logging.getLogger("netlogger.containers")

RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)  # backoff while the engine is away, then every 5 s
WATCH_NICE = -10


@dataclass(frozen=True)
class Ops:
    """What the watcher may change, each under the agent's one-change-at-a-time lock."""

    # The last argument is the trigger the audit trail names (container_start, ...).
    enroll: Callable[[Target, Container, str], Enrolled]  # the container gets the backstop too
    unenroll: Callable[[int, str], Enrolled]
    enrolled: Callable[[], list[Enrolled]]
    expect: Callable[[str, Expected], None]
    unexpect: Callable[[str], None]
    expected: Callable[[], dict[str, Any]]  # cgroup name -> abi.Pending


@dataclass(frozen=True)
class Choice:
    policy: str
    reason: str | None = None  # unknown_policy / malformed_policy
    detail: str = ""


def choose_policy(spec: Containers, labels: dict[str, str], known: set[str]) -> Choice:
    """The policy a selected container gets; a label that names none fails closed."""
    value = labels.get(spec.policy_label)
    if value is None:
        return Choice(spec.default_policy)
    said = f"label {spec.policy_label}={value!r}"
    if (
        not value
        or value.startswith("_")
        or len(value.encode()) > POLICY_NAME_MAX
        or not value.isprintable()
    ):
        return Choice(DENY_ALL, "malformed_policy", f"{said} is not a policy name")
    if value not in known:
        return Choice(DENY_ALL, "unknown_policy", f"{said} names no policy this agent has")
    return Choice(value)


def container_target(
    spec: Containers | None, c: Container, policy: str | None, known: set[str]
) -> Target:
    """The enrollment for `c`: a policy asked for, else its label's (failing closed), else the
    default."""
    chosen = policy or (choose_policy(spec, c.labels, known).policy if spec else "default")
    return Target(
        cgroup.resolve(c.cgroup), chosen, None, c.agent, c.project, c.id, c.name, from_engine=True
    )


@dataclass
class Known:
    """What the watcher knows of one selected container."""

    name: str
    cgroup_name: str
    choice: Choice
    escapes: list[Escape] = field(default_factory=list)

    def flags(self) -> ContainerFlags:
        return ContainerFlags(summary(self.escapes), self.choice.reason)


class ContainerWatch:
    def __init__(
        self,
        spec: Containers,
        ops: Ops,
        policies: Callable[[], set[str]],
        kernel_enrolls: str | None,
        scope: Path,
        forget: Callable[[int], None] = lambda _cg: None,
    ) -> None:
        """`kernel_enrolls`: None when the cgroup_mkdir program runs, else why it does not.

        Containers whose cgroup the engine makes outside `scope` are out of the
        programs' reach: they are left alone (and logged once).
        """
        self.spec = spec
        self._scope = scope
        self._outside: set[str] = set()
        self._ops = ops
        self._policies = policies
        self._kernel_refused = kernel_enrolls
        self._forget = forget
        self._lock = threading.Lock()
        self._known: dict[str, Known] = {}
        self._engine: Engine | None = None
        self._driver = "cgroupfs"
        self.state = "connecting"
        self.since = time.time()
        self.error: str | None = None

    # -- the loop ---------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Follow the engine until `stop` is set, reconnecting whenever it goes away."""
        # A create event races the engine's start: on a busy host this thread must get a
        # CPU before runc makes the cgroup. Best effort: root may raise its own thread.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WATCH_NICE)
        failures = 0
        while not stop.is_set():
            try:
                engine = Engine(self.spec.engine)
                try:
                    self._follow(engine, stop)
                finally:
                    self._engine = None
                    engine.close()
                failures = 0
            except Exception as exc:  # engine away: keep enforcing, try again shortly
                if self.state != "unreachable":
                    log.warning("Docker engine at %s: %s; retrying", self.spec.engine, exc)
                    self._set_state("unreachable", str(exc))
                stop.wait(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1

    def _follow(self, engine: Engine, stop: threading.Event) -> None:
        label = self.spec.select.label
        events = engine.events(label, stop)  # opened first: nothing between is missed
        self._driver = engine.cgroup_driver()
        self._engine = engine
        self._backfill(engine.selected(label))
        self._set_state("connected", None)
        for action, ref, attributes in events:
            try:
                self.handle(engine, action, ref, attributes)
            except Exception as exc:  # one odd container must not end the watch
                log.warning("container %s: %s", ref[:12], exc)
        if not stop.is_set():
            raise ConnectionError("the engine closed its event stream")

    def _set_state(self, state: str, error: str | None) -> None:
        self.state, self.error, self.since = state, error, time.time()

    def engine(self) -> Engine:
        """The connected engine, for commands that name a container."""
        if self._engine is None:
            raise EngineError(
                f"the Docker engine at {self.spec.engine} is unreachable ({self.error}); "
                "the agent is retrying"
            )
        return self._engine

    # -- one container ----------------------------------------------------

    def handle(
        self, engine: Engine, action: str, ref: str, attributes: dict[str, str] | None = None
    ) -> None:
        """React to one event; `attributes` are the event's own (labels among them)."""
        if action == "create" and attributes is not None:
            # Before anything else: the client's start request is already on its way,
            # and the kernel needs the expectation before the engine makes the cgroup.
            self._expect_early(ref, attributes)
        attrs = engine.inspect(ref)
        if action == "create" and attrs is not None:
            self._expect(attrs)
        else:
            self._reconcile(
                ref, attrs, "container_start" if action == "start" else "container_stop"
            )

    def _expect_early(self, cid: str, labels: dict[str, str]) -> None:
        """The expectation from the event alone; `_expect` completes it (path, scope)."""
        choice = choose_policy(self.spec, labels, self._policies())
        self._ops.expect(
            cgroup_name(cid, self._driver),
            Expected(
                None,
                choice.policy,
                None,
                labels.get(AGENT_LABEL, ""),
                labels.get(PROJECT_LABEL, ""),
                cid,
                labels.get("name", ""),  # the event's attributes carry the name beside labels
            ),
        )

    def _expect(self, attrs: dict[str, Any]) -> Known | None:
        cid = attrs["Id"]
        labels = dict((attrs.get("Config") or {}).get("Labels") or {})
        choice = choose_policy(self.spec, labels, self._policies())
        name, path = expected_cgroup(attrs, self._driver, cgroup.find_mount())
        if self._scope not in path.parents:
            with contextlib.suppress(NetloggerError):
                self._ops.unexpect(name)  # the early expectation, if there was one
            if cid not in self._outside:
                self._outside.add(cid)
                log.warning(
                    "container %s: its cgroup %s is outside the agent's scope %s; not enrolled",
                    cid[:12], path, self._scope,
                )  # fmt: skip
            return None
        known = Known(str(attrs.get("Name", "")).lstrip("/"), name, choice, assess(attrs))
        with self._lock:
            self._known[cid] = known
        if choice.reason:
            log.warning("container %s: %s; enrolled with %s", cid[:12], choice.detail, DENY_ALL)
        self._ops.expect(
            name,
            Expected(
                path,
                choice.policy,
                None,
                labels.get(AGENT_LABEL, ""),
                labels.get(PROJECT_LABEL, ""),
                cid,
                known.name,
            ),
        )
        return known

    def _reconcile(self, cid: str, attrs: dict[str, Any] | None, trigger: str) -> None:
        """Make the maps say what the engine says of container `cid` now.

        `trigger` is what the audit trail names for the changes this makes. A
        container the kernel enrolled at its cgroup's mkdir is enrolled again here
        (path, labels and name complete): that enrollment is its audit record.
        """
        if attrs is None:  # destroyed: nothing of it may stay
            self._drop(cid, trigger)
            return
        known = self._expect(attrs)  # also for containers created before this agent
        if known is None:
            return
        running = (attrs.get("State") or {}).get("Running") and attrs["State"].get("Pid")
        keep: set[int] = set()
        if running:
            c = container_of(attrs)
            cg = cgroup.resolve(c.cgroup)
            with contextlib.suppress(OSError):
                known.escapes = assess(attrs, privileges.effective(Path(f"/proc/{c.pid}/status")))
            entry = self._ops.enroll(
                Target(
                    cg,
                    known.choice.policy,
                    None,
                    c.agent,
                    c.project,
                    c.id,
                    c.name,
                    from_engine=True,
                ),
                c,
                trigger,
            )
            keep.add(entry.cgroup_id)
            self._forget(entry.cgroup_id)
        for entry in self._ops.enrolled():
            stale = entry.cgroup_id not in keep and (running or not _live(entry))
            if entry.container_id == cid and stale:
                self._unenroll(entry.cgroup_id, trigger)

    def _drop(self, cid: str, trigger: str) -> None:
        self._outside.discard(cid)
        with self._lock:
            known = self._known.pop(cid, None)
        for name, pending in self._ops.expected().items():
            if pending.labels.container_id.decode() == cid or (known and name == known.cgroup_name):
                self._ops.unexpect(name)
        for entry in self._ops.enrolled():
            if entry.container_id == cid:
                self._unenroll(entry.cgroup_id, trigger)

    def _unenroll(self, cgroup_id: int, trigger: str) -> None:
        with contextlib.suppress(NetloggerError):  # another event got there first
            self._ops.unenroll(cgroup_id, trigger)

    def _backfill(self, selected: list[dict[str, Any]]) -> None:
        """After a (re)connection: everything selected reconciled, everything gone dropped."""
        present = set()
        for attrs in selected:
            present.add(attrs["Id"])
            try:
                self._reconcile(attrs["Id"], attrs, "container_running")
            except Exception as exc:  # exited between the listing and now
                log.info("container %s: %s", attrs["Id"][:12], exc)
        gone = {e.container_id for e in self._ops.enrolled() if e.container_id} - present
        gone |= {
            p.labels.container_id.decode()
            for p in self._ops.expected().values()
            if p.labels.container_id.decode() not in present
        }
        for cid in gone:
            self._drop(cid, "container_gone")

    # -- reporting --------------------------------------------------------

    def flags(self, container_id: str) -> ContainerFlags | None:
        with self._lock:
            known = self._known.get(container_id)
        return known.flags() if known else None

    def status(self) -> dict[str, Any]:
        with self._lock:
            known = dict(self._known)
        up = self.state == "connected"
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))
        notes: list[str] = []
        if not up:
            notes.append(
                f"Docker engine at {self.spec.engine} {self.state} since {since}"
                + (f" ({self.error})" if self.error else "")
                + ": static enrollments and pinned state are enforced and records keep "
                "their pinned labels and cgroup-path attribution; containers started "
                "meanwhile are not enrolled; retrying"
            )
        if self._kernel_refused:
            notes.append(
                f"cgroup_mkdir program {self._kernel_refused}: containers are enrolled at "
                "the engine's start event, so their first connects can go out unenforced"
            )
        containers = []
        for cid, k in sorted(known.items()):
            if k.choice.reason:
                notes.append(
                    f"container {k.name} ({cid[:12]}): {k.choice.detail}; enrolled with "
                    f"{DENY_ALL}, which allows nothing"
                )
            for e in k.escapes:
                notes.append(f"container {k.name} ({cid[:12]}) {e.meaning} [{e.detail}]")
            containers.append(
                {
                    "id": cid,
                    "name": k.name,
                    "cgroup_name": k.cgroup_name,
                    "policy": k.choice.policy,
                    "policy_reason": k.choice.reason,
                    "policy_detail": k.choice.detail,
                    "escapes": [
                        {"kind": e.kind, "detail": e.detail, "meaning": e.meaning}
                        for e in k.escapes
                    ],
                }
            )
        return {
            "engine": self.spec.engine,
            "state": self.state,
            "since": since,
            "error": self.error,
            "cgroup_driver": self._driver,
            "enrolled_at": "start_event" if self._kernel_refused else "cgroup_mkdir",
            "attribution": "ok" if up else "degraded",
            "expected_cgroups": len(self._ops.expected()),
            "containers": containers,
            "notes": notes,
        }


def _live(entry: Enrolled) -> bool:
    """Is the entry's cgroup still there, as the same cgroup (a restart reuses the name)?"""
    try:
        return bool(entry.path) and Path(entry.path).stat().st_ino == entry.cgroup_id
    except OSError:
        return False
