"""Policies and enrollments -> map entries, all or nothing.

Every change is validated before the first map write, and a write that fails
halfway restores what was there, so a rejected command changes no map.

A cgroup's sequence never repeats: unenrolling retires its state (sequence,
counters, what was reported, labels) instead of deleting it, and enrolling it
again continues from there. So records of a new enrollment can never pass for
records of an old one, in the file or in recovery after a crash. Retired state
is forgotten once its cgroup is gone, whose id the kernel never hands out again.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netlogger.errors import UsageError
from netlogger.kernel import abi
from netlogger.kernel.cgroup import Cgroup
from netlogger.kernel.maps import BpfMap
from netlogger.kernel.plane import Plane
from netlogger.policy.compile import CompiledPolicy, PolicySet

_MODES = {"enforce": abi.Mode.ENFORCE, "audit": abi.Mode.AUDIT}


def boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class Target:
    """A cgroup to enroll, and who it is."""

    cgroup: Cgroup
    policy: str = "default"
    mode: str | None = None  # None: the policy's own mode
    agent: str = ""
    project: str = ""
    container_id: str = ""
    container_name: str = ""  # the engine's name; records and the audit trail show it
    from_engine: bool = False  # who it is came from the container engine


@dataclass(frozen=True)
class Enrolled:
    """An enrolled cgroup as the maps describe it."""

    cgroup_id: int
    path: str
    level: int
    policy: str
    mode: str  # enforce / audit / bypass (while a bypass window is open)
    bypass_left_s: float  # 0 when no bypass window is open
    agent: str
    project: str
    container_id: str
    seq: int
    throttled: int
    ringbuf_lost: int
    source: str  # static / engine: who said who it is


@dataclass(frozen=True)
class Expected:
    """A cgroup the engine is about to make, and who will run in it."""

    # Where the cgroup directory is expected, for people (the kernel matches the name);
    # None: not known yet, and the entry the kernel makes has no path until the agent's.
    path: Path | None
    policy: str = "default"
    mode: str | None = None
    agent: str = ""
    project: str = ""
    container_id: str = ""
    container_name: str = ""  # not for the kernel: records name it from the first packet


def _text(value: str, field: Any, name: str) -> bytes:
    raw = value.encode()
    limit = field.size - 1
    if len(raw) > limit:
        raise UsageError(f"{name} {value!r} is longer than {limit} bytes")
    return raw


def _labels(who: Target | Expected, path: Path | None, level: int) -> abi.Labels:
    from_engine = isinstance(who, Expected) or who.from_engine
    return abi.Labels(
        level=level,
        source=abi.Source.ENGINE if from_engine else abi.Source.STATIC,
        policy=_text(who.policy, abi.Labels.policy, "policy name"),
        agent=_text(who.agent, abi.Labels.agent, "agent"),
        project=_text(who.project, abi.Labels.project, "project"),
        container_id=_text(who.container_id, abi.Labels.container_id, "container id"),
        path=_text(str(path) if path else "", abi.Labels.path, "cgroup path"),
    )


def _pending_key(name: str) -> abi.PendingKey:
    return abi.PendingKey(_text(name, abi.PendingKey.name, "cgroup name"))


@contextmanager
def _restoring(snapshot: list[tuple[BpfMap[Any, Any], Any, Any]]) -> Iterator[None]:
    """On failure, put back each (map, key, old value or None) in reverse order."""
    try:
        yield
    except BaseException:
        for bpf_map, key, old in reversed(snapshot):
            if old is None:
                bpf_map.delete(key)
            else:
                bpf_map.update(key, old)
        raise


class Enforcer:
    def __init__(self, plane: Plane, policies: PolicySet) -> None:
        self.plane = plane
        self.policies = policies

    # -- policies ---------------------------------------------------------

    def apply_policies(
        self, policies: PolicySet, moves: Mapping[int, str | None] | None = None
    ) -> None:
        """Make the kernel hold exactly `policies`, switching enrolled cgroups without a window.

        It owns nl_policies, nl_resolvers and the nl_cidrs entries tagged
        Writer.POLICY; other writers' nl_cidrs entries stay as they are. A
        changed policy has a new id (compile.py), so: (1) every entry of the new
        set is written beside the old ones, (2) each enrollment whose policy
        changed moves to the new id in one map write, (3) once every program run
        that may have read an old id has ended, entries no longer wanted go. A
        cgroup is decided by its old policy, complete, up to its one write and by
        its new one, complete, from it on: never by a mix, never by an empty
        policy. Entries that did not change are not written.
        `moves`: cgroup id -> the policy the caller enrolls it under next (moved
        there now), or None for one the caller unenrolls next (left as it is).
        """
        moves = moves or {}
        enrolled = {
            e.cgroup_id: moves.get(e.cgroup_id) or e.policy
            for e in self.enrolled()
            if e.cgroup_id not in moves or moves[e.cgroup_id] is not None
        }
        in_use = set(enrolled.values()) - set(policies.policies)
        if in_use:
            raise UsageError(
                f"policies {', '.join(sorted(in_use))} are still used by enrolled cgroups; "
                "unenroll them first or keep the policies"
            )
        p = self.plane
        wanted = self._entries(policies)
        keep = {(m.name, bytes(_key_obj(m, k))) for m, k, _ in wanted}
        stale = [(m, k) for m, k in self._owned() if (m.name, bytes(_key_obj(m, k))) not in keep]
        undo: list[tuple[BpfMap[Any, Any], Any, Any]] = []
        with _restoring(undo):
            for bpf_map, key, value in wanted:
                old = bpf_map.lookup(key)
                if old is None or bytes(old) != bytes(value):
                    undo.append((bpf_map, key, old))
                    bpf_map.update(key, value)
            for cg, name in enrolled.items():
                moved = self._moved(p.enrollments.lookup(cg), policies.policies[name])
                if moved is not None:
                    undo.append((p.enrollments, cg, p.enrollments.lookup(cg)))
                    p.enrollments.update(cg, moved)
            if stale:
                p.wait_for_programs()  # a hook that read an old policy id is done with it
            for bpf_map, key in stale:
                undo.append((bpf_map, key, bpf_map.lookup(key)))
                bpf_map.delete(key)
        self.policies = policies

    def _moved(self, current: abi.Enrollment | None, new: CompiledPolicy) -> abi.Enrollment | None:
        """The enrollment under `new`, or None when it already is.

        A mode that followed the old policy's follows the new one's; an override stays.
        """
        if current is None or current.policy_id == new.id:
            return None
        old = self.policies.by_id().get(current.policy_id)
        mode = new.mode if old is not None and current.mode == old.mode else current.mode
        return abi.Enrollment(current.bypass_until_ns, new.id, mode)

    def _entries(self, policies: PolicySet) -> list[tuple[BpfMap[Any, Any], Any, Any]]:
        p = self.plane
        out: list[tuple[BpfMap[Any, Any], Any, Any]] = []
        for compiled in policies.policies.values():
            out.append((p.policies, compiled.id, abi.Policy(compiled.flags)))
            out += [(p.cidrs, key, rules) for key, rules in compiled.cidrs]
            out += [(p.resolvers, key, ctypes.c_uint32(rid)) for key, rid in compiled.resolvers]
            out += [(p.domains, key, value) for key, value in compiled.domains]
            out += [(p.domain_ports, key, rules) for key, rules in compiled.domain_ports]
        return out

    def _owned(self) -> Iterator[tuple[BpfMap[Any, Any], Any]]:
        """Every entry in the kernel the applier wrote, this run or an earlier one."""
        p = self.plane
        for bpf_map in (p.policies, p.resolvers, p.domains, p.domain_ports):
            for key in list(bpf_map.keys()):
                yield bpf_map, key
        for key, rules in p.cidrs.items():
            if rules.writer == abi.Writer.POLICY:
                yield p.cidrs, key

    # -- enrollment -------------------------------------------------------

    def check(self, target: Target, policies: PolicySet | None = None) -> None:
        """Refuse `target` as `enroll` would under `policies`, writing nothing."""
        self._entry(target, policies or self.policies)

    def _enrollment(
        self, policy: str, mode: str | None, policies: PolicySet | None = None
    ) -> abi.Enrollment:
        policies = policies or self.policies
        compiled = policies.policies.get(policy)
        if compiled is None:
            known = ", ".join(sorted(policies.named())) or "none"
            raise UsageError(f"no policy named {policy!r} (known: {known})")
        if mode is not None and mode not in _MODES:
            raise UsageError(f"mode {mode!r} is not one of: enforce, audit")
        return abi.Enrollment(0, compiled.id, _MODES[mode] if mode else compiled.mode)

    def _entry(self, target: Target, policies: PolicySet) -> tuple[abi.Labels, abi.Enrollment]:
        enrollment = self._enrollment(target.policy, target.mode, policies)
        labels = _labels(target, target.cgroup.path, target.cgroup.level)
        scope = self.plane.scope.path
        if target.cgroup.path != scope and scope not in target.cgroup.path.parents:
            raise UsageError(
                f"{target.cgroup.path} is outside the agent's scope {scope}: the "
                "programs never run there; widen the scope or move the workload"
            )
        if target.cgroup.level >= abi.MAX_LEVELS:
            raise UsageError(f"{target.cgroup.path} is deeper than {abi.MAX_LEVELS} levels")
        return labels, enrollment

    def enroll(self, target: Target) -> Enrolled:
        labels, enrollment = self._entry(target, self.policies)
        p, cg = self.plane, target.cgroup.id
        # Sets first: an answer arriving the moment the cgroup is enrolled has
        # somewhere to go. A failed enroll leaves them empty; unenroll drops them.
        p.add_dns_sets(cg)
        undo: list[tuple[BpfMap[Any, Any], Any, Any]] = []
        with _restoring(undo):
            if p.cgroup_state.insert_new(cg, abi.CgroupState()):
                undo.append((p.cgroup_state, cg, None))
            if p.folds.insert_new(cg, abi.Folds()):
                undo.append((p.folds, cg, None))
            undo.append((p.labels, cg, p.labels.lookup(cg)))
            p.labels.update(cg, labels)
            undo.append((p.enrollments, cg, p.enrollments.lookup(cg)))
            p.enrollments.update(cg, enrollment)
            undo.append((p.levels, 0, p.levels.lookup(0)))
            self._update_levels()
        return self.get(cg)

    def expect(self, name: str, target: Expected) -> None:
        """Have the kernel enroll the cgroup v2 directory `name` below the scope when it is made.

        The cgroup_mkdir program consumes nothing: the entry stays, so a restarted
        container's new cgroup is enrolled the same way, until `unexpect`.
        """
        labels = _labels(target, target.path, 0)  # the kernel sets the level
        enrollment = self._enrollment(target.policy, target.mode)
        key = _pending_key(name)
        old = self.plane.pending.lookup(key)  # keeps what the kernel counted
        done = (old.cgroup_id, old.enrolled) if old is not None else (0, 0)
        self.plane.pending.update(key, abi.Pending(self.plane.scope.id, *done, enrollment, labels))

    def unexpect(self, name: str) -> None:
        self.plane.pending.delete(_pending_key(name))

    def expected(self) -> dict[str, abi.Pending]:
        return {k.name.decode(): v for k, v in self.plane.pending.items()}

    def unenroll(self, cgroup_id: int) -> Enrolled:
        """Stop governing the cgroup; its state is retired, so its sequence goes on."""
        before = self.get(cgroup_id)
        self.plane.enrollments.delete(cgroup_id)
        self._update_levels()
        self.plane.drop_dns_sets(cgroup_id)  # a governed cgroup's sets go with it
        return before

    def forget(self, cgroup_id: int) -> None:
        """Drop every entry of a cgroup that is gone (enrolled or retired)."""
        p = self.plane
        if p.enrollments.delete(cgroup_id):
            self._update_levels()
        p.flush_folds()  # its last repeats reach the ring before its entry goes
        for bpf_map in (p.labels, p.folds, p.cgroup_state, p.reported):
            bpf_map.delete(cgroup_id)
        p.drop_dns_sets(cgroup_id)

    def gone(self) -> list[int]:
        """Ids of enrolled or retired cgroups whose cgroup no longer exists."""
        out = []
        for cg, labels in self.plane.labels.items():
            path = labels.path.decode()
            if not path:
                # Made by the cgroup_mkdir program before the agent knew the path: the
                # container watch writes it (or unenrolls) at the start event.
                alive = self.plane.enrollments.lookup(cg) is not None
            else:
                try:
                    alive = os.stat(path).st_ino == cg
                except OSError:
                    alive = False
            if not alive:
                out.append(cg)
        return out

    def bypass(self, cgroup_id: int, seconds: float) -> Enrolled:
        """Let everything through for `seconds`; the kernel closes the window itself."""
        if not 0 < seconds <= 7 * 86400:
            raise UsageError("a bypass lasts more than 0 seconds and at most 7 days")
        return self._set_bypass(cgroup_id, boottime_ns() + int(seconds * 1e9), keep_mode=True)

    def enforce(self, cgroup_id: int) -> Enrolled:
        """Close any bypass window and enforce (leaves audit too)."""
        return self._set_bypass(cgroup_id, 0, keep_mode=False)

    def _set_bypass(self, cgroup_id: int, until_ns: int, keep_mode: bool) -> Enrolled:
        current = self.plane.enrollments.lookup(cgroup_id)
        if current is None:
            raise UsageError(f"cgroup id {cgroup_id} is not enrolled; enroll it first")
        mode = current.mode if keep_mode else abi.Mode.ENFORCE
        self.plane.enrollments.update(cgroup_id, abi.Enrollment(until_ns, current.policy_id, mode))
        return self.get(cgroup_id)

    def _update_levels(self) -> None:
        # The cgroup_mkdir program may add a level between our read and our write:
        # a second pass puts back any bit the write took away.
        for _ in range(2):
            mask = 0
            for cg, _ in self.plane.enrollments.items():
                labels = self.plane.labels.lookup(cg)
                if labels is not None:
                    mask |= 1 << labels.level
            self.plane.levels.update(0, abi.Levels(mask))

    # -- reading ----------------------------------------------------------

    def get(self, cgroup_id: int) -> Enrolled:
        for item in self._enrolled(lambda cg: cg == cgroup_id):
            return item
        raise UsageError(f"cgroup id {cgroup_id} is not enrolled")

    def enrolled(self) -> list[Enrolled]:
        return list(self._enrolled(lambda _cg: True))

    def _enrolled(self, wanted: Callable[[int], bool]) -> Iterator[Enrolled]:
        p, now = self.plane, boottime_ns()
        for cg, en in p.enrollments.items():
            if not wanted(cg):
                continue
            labels = p.labels.lookup(cg) or abi.Labels()
            state = p.cgroup_state.lookup(cg) or abi.CgroupState()
            left = max(0.0, (en.bypass_until_ns - now) / 1e9)
            mode = "bypass" if left else abi.Mode(en.mode).name.lower()
            yield Enrolled(
                cg,
                labels.path.decode(),
                labels.level,
                labels.policy.decode(),
                mode,
                left,
                labels.agent.decode(),
                labels.project.decode(),
                labels.container_id.decode(),
                state.seq,
                state.throttled,
                state.ringbuf_lost,
                abi.Source(labels.source).name.lower(),
            )


def _key_obj(bpf_map: BpfMap[Any, Any], key: Any) -> Any:
    return key if isinstance(key, ctypes.Structure | ctypes.Array) else bpf_map.key_type(key)
