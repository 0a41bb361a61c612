"""Enrichers: ordered steps that fill in what ring records cannot carry.

The pump runs each batch through its enrichers in order and knows them only
by this protocol. Attribution comes first (which agent, project and container
decided), so later steps (DNS names) can rely on it. Whoever changes an
enrollment calls `forget` for that cgroup on every enricher.

Attribution comes from the labels the agent pinned beside each enrollment, so
it survives agent restarts and needs no engine; when those name no container,
from the task's cgroup path (`cgroup_path.parse`). `attribution` says where it
came from: `engine` (labels the container engine gave, live or cached),
`static` (the config or `netlogger enroll --cgroup`), `cgroup_path`, or why it
is empty (`cgroup_not_enrolled`, `enrolled_without_labels`).

Process detail: the executable (/proc/<pid>/exe) and parent pid
(/proc/<pid>/stat) of the deciding process, read when its first record
arrives and cached per pid (a new comm means an exec or a reused pid, and is
read again). A process that exited before its record was read has neither:
the kernel record does not carry them, and reading them there would cost
every decision a path walk.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from netlogger.kernel import abi
from netlogger.pipeline import cgroup_path
from netlogger.pipeline.decisions import to_enrich
from netlogger.pipeline.record import Record, RingItem

_PROCESS_CACHE = 65536  # pids remembered before the cache starts over
_WALK_LIMIT = 10_000  # cgroups looked at below an enrolled one to find a task's


class Enricher(Protocol):
    def enrich(self, items: Sequence[RingItem]) -> None:
        """Fill in fields of `items` in place: of each record, or of what `to_enrich`
        yields for a Decisions batch (its records share what an enricher adds)."""

    def forget(self, cgroup_id: int) -> None:
        """Drop what is cached about `cgroup_id`: its enrollment changed."""


@dataclass(frozen=True)
class ContainerFlags:
    """What the container watcher knows of a container beyond its labels."""

    escape: str | None = None  # how it can get around enforcement (escape.summary)
    policy_reason: str | None = None  # why its policy is not the one it asked for


NO_FLAGS = ContainerFlags()


@dataclass(frozen=True)
class Attribution:
    agent: str
    project: str
    container_id: str
    source: str  # engine / static / cgroup_path, or why all three are empty
    flags: ContainerFlags = NO_FLAGS


def _source(labels: abi.Labels) -> str:
    return "engine" if labels.source == abi.Source.ENGINE else "static"


def attribution_of(labels: abi.Labels | None, task_path: str = "") -> Attribution:
    """Who an enrolled cgroup is; `task_path` is the deciding task's cgroup, when known."""
    if labels is None:
        return Attribution("", "", "", "cgroup_not_enrolled")
    agent, project = labels.agent.decode(), labels.project.decode()
    container = labels.container_id.decode()
    if container:
        return Attribution(agent, project, container, _source(labels))
    found = cgroup_path.parse(task_path or labels.path.decode())
    if found:
        return Attribution(agent, project, found.container_id, "cgroup_path")
    if agent or project:
        return Attribution(agent, project, "", _source(labels))
    return Attribution("", "", "", "enrolled_without_labels")


@dataclass(frozen=True)
class Process:
    comm: str
    exe: str | None
    ppid: int | None


class AttributionEnricher:
    """Agent, project and container of each record, and where that came from."""

    def __init__(
        self,
        labels: Callable[[int], abi.Labels | None],
        flags: Callable[[str], ContainerFlags | None] = lambda _id: None,
        names: Mapping[str, str] | None = None,
        proc: Path = Path("/proc"),
    ) -> None:
        """The container's name is not in the labels (the kernel keeps ids): it comes from
        `names`, which whoever enrolls a container fills (it is empty for a container
        enrolled by an earlier agent run until the watcher lists it again)."""
        self._labels = labels
        self._flags = flags
        self._names: Mapping[str, str] = names if names is not None else {}
        self._proc = proc
        self._cache: dict[tuple[str, str], tuple[Attribution, str | None]] = {}

    def forget(self, cgroup_id: int) -> None:
        key = str(cgroup_id)
        for cached in [k for k in self._cache if k[0] == key]:
            del self._cache[cached]

    def _task_path(self, rec: Record, enrolled: str) -> str:
        """The deciding task's cgroup, when it sits below the enrolled one (`enrolled`).

        Found by its id (the directory's inode) below the enrolled cgroup, so a
        process that has exited since still has it; else from /proc/<pid>/cgroup.
        """
        if rec.task_cgroup_id == rec.cgroup_id:
            return ""
        wanted, seen = int(rec.task_cgroup_id), 0
        for top, dirs, _files in os.walk(enrolled) if enrolled else ():
            for d in dirs:
                path = os.path.join(top, d)
                with contextlib.suppress(OSError):
                    if os.stat(path).st_ino == wanted:
                        return path
            seen += len(dirs)
            if seen > _WALK_LIMIT:
                break
        try:
            text = (self._proc / str(rec.pid) / "cgroup").read_text()
        except OSError:
            return ""
        return next((ln[3:] for ln in text.splitlines() if ln.startswith("0::")), "")

    def _who(self, rec: RingItem) -> tuple[Attribution, str | None]:
        # A DNS answer names no task: it is the enrolled cgroup's.
        task = rec.task_cgroup_id if isinstance(rec, Record) else rec.cgroup_id
        key = (rec.cgroup_id, task)
        known = self._cache.get(key)
        if known is None:
            labels = self._labels(int(rec.cgroup_id))
            below = labels.path.decode() if labels is not None and not labels.container_id else ""
            found = self._task_path(rec, below) if below and isinstance(rec, Record) else ""
            who = attribution_of(labels, found)
            flags = self._flags(who.container_id) if who.container_id else None
            if flags:
                who = Attribution(who.agent, who.project, who.container_id, who.source, flags)
            known = self._cache[key] = (who, self._names.get(who.container_id) or None)
        return known

    def enrich(self, items: Sequence[RingItem]) -> None:
        for item in to_enrich(items):
            who, item.container_name = self._who(item)
            item.agent, item.project, item.container_id = who.agent, who.project, who.container_id
            item.attribution = who.source
            if isinstance(item, Record):
                item.escape, item.policy_reason = who.flags.escape, who.flags.policy_reason


class ProcessEnricher:
    """Executable and parent pid of each record's process, while it is there to ask."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._processes: dict[int, Process] = {}

    def forget(self, cgroup_id: int) -> None:
        pass  # keyed by process, not by enrollment

    def _process(self, pid: int, comm: str) -> Process:
        known = self._processes.get(pid)
        if known is not None and known.comm == comm:
            return known
        base = self._proc / str(pid)
        try:
            exe: str | None = os.readlink(base / "exe")
        except OSError:
            exe = None
        try:
            stat = (base / "stat").read_text()
            ppid: int | None = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            ppid = None
        if len(self._processes) >= _PROCESS_CACHE:
            self._processes.clear()
        self._processes[pid] = found = Process(comm, exe, ppid)
        return found

    def enrich(self, items: Sequence[RingItem]) -> None:
        for item in to_enrich(items):
            if isinstance(item, Record) and item.pid:
                process = self._process(item.pid, item.comm)
                item.exe, item.ppid = process.exe, process.ppid
