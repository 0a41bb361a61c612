"""`netlogger reload` and SIGHUP: the config again, applied as one change or not at all.

Every check that can refuse runs before the first map write: the whole config
(the one validation `run` and `policy check` use; ConfigError with every
problem located), keys only a restart can change (config/changes.py), each
static enrollment, and the new sinks (built, not yet fed). Then the policies
switch (Enforcer.apply_policies: a cgroup is never decided by a mix of old and
new rules nor by an empty policy), static enrollments follow, and the sink
lanes are swapped. What did not change is not touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from netlogger.audit import Action, Actor, why
from netlogger.config.changes import changes
from netlogger.config.check import Checked, validate
from netlogger.config.model import Sink as SinkSpec
from netlogger.config.model import StaticEnrollment
from netlogger.control.commands import Commands
from netlogger.enforce import Enforcer, Target
from netlogger.errors import NetloggerError, UsageError
from netlogger.kernel import cgroup
from netlogger.pipeline.fanout import Fanout
from netlogger.policy.compile import PolicySet
from netlogger.sinks.base import Sink

log = logging.getLogger("netlogger.reload")

Built = list[tuple[SinkSpec, Sink]]


@dataclass(frozen=True)
class Origin:
    """What `run` validated, and so what a reload validates again."""

    config_file: Path | None = None
    policy_file: Path | None = None
    flags: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> Checked:
        return validate(self.config_file, self.policy_file, self.flags)


class Names:
    """Every policy and rule id this agent applied, for the decoder.

    The ring may still hold records decided under a policy a reload replaced.
    """

    def __init__(self, policies: PolicySet) -> None:
        self._policies: dict[int, str] = {}
        self._rules: dict[int, str] = {}
        self.remember(policies)

    def remember(self, policies: PolicySet) -> None:
        self._policies |= {p.id: p.name for p in policies.policies.values()}
        self._rules |= {rid: info.name for rid, info in policies.rules.items()}

    def policy(self, policy_id: int) -> str:
        return self._policies.get(policy_id, f"unknown({policy_id})")

    def rule(self, rule_id: int) -> str | None:
        return self._rules.get(rule_id)


def static_target(e: StaticEnrollment) -> Target:
    return Target(cgroup.resolve(e.cgroup), e.policy, e.mode, e.agent, e.project, e.container)


def build_sinks(specs: list[SinkSpec], build: Callable[[SinkSpec], Sink]) -> Built:
    """All of them, or none: a sink that fails to build shuts down those built before it."""
    built: Built = []
    try:
        for spec in specs:
            built.append((spec, build(spec)))
    except BaseException:
        shutdown(built)
        raise
    return built


def shutdown(sinks: Built) -> None:
    """Flush and shut down each; one that fails is logged and the rest go on."""
    for _, sink in sinks:
        try:
            sink.force_flush()
            sink.shutdown()
        except Exception as exc:
            log.warning("cannot shut down sink %s: %s", sink.name, exc)


class Reloader:
    def __init__(
        self,
        origin: Origin,
        checked: Checked,
        sinks: Built,
        build: Callable[[SinkSpec], Sink],
        names: Names,
        enforcer: Enforcer,
        fanout: Fanout,
        commands: Commands,
    ) -> None:
        self.origin = origin
        self.checked = checked
        self.sinks = sinks  # the agent's own list, kept current: it shuts them down at stop
        self._build = build
        self._names = names
        self._enforcer = enforcer
        self._fanout = fanout
        self._commands = commands

    def policies(self) -> dict[str, Any]:
        """The policies in force, as the config states them (for `policy test`)."""
        policies: dict[str, Any] = msgspec.to_builtins(self.checked.config.policies)
        return policies

    def reload(self, actor: Actor) -> dict[str, list[str]]:
        """Validate and apply the config again, for `actor`; done or refused, the audit
        trail gets a `reload` record after the enrollments it made."""
        target = f"config {self.origin.config_file}" if self.origin.config_file else "flags"
        try:
            summary = self._apply(actor)
        except NetloggerError as exc:
            self._commands.record(Action("reload", actor, target, None, None, why(exc)))
            raise
        self._commands.record(Action("reload", actor, target, None, None))
        log.warning("reloaded %s: %s", self.origin.config_file or "the flags", summary)
        return summary

    def _apply(self, actor: Actor) -> dict[str, list[str]]:
        with self._commands.changing:
            checked = self.origin.validate()
            plan = changes(self.checked.config, checked.config)
            if plan.restart:
                raise UsageError("reload changed nothing: " + "; ".join(plan.restart))
            targets = [static_target(e) for e in plan.enroll_set]
            for target in targets:
                self._enforcer.check(target, checked.policies)
            removed = {e.cgroup for e in plan.enroll_removed}
            leaving = [e.cgroup_id for e in self._enforcer.enrolled() if e.path in removed]
            moves: dict[int, str | None] = dict.fromkeys(leaving)
            moves |= {t.cgroup.id: t.policy for t in targets}
            added = build_sinks(list(plan.sinks_added), self._build)
            try:
                self._names.remember(checked.policies)
                self._enforcer.apply_policies(checked.policies, moves)
            except BaseException:
                shutdown(added)
                raise
            # A cgroup that leaves can meet a deny between its old policy's removal just
            # now and its unenrollment next: it fails closed, and is governed no longer.
            for cgroup_id in leaving:
                self._commands.unenroll(cgroup_id, actor)
            for target in targets:
                self._commands.enroll(target, actor)
            gone = [pair for pair in self.sinks if pair[0] in plan.sinks_removed]
            self._fanout.update([sink for _, sink in added], [sink for _, sink in gone])
            shutdown(gone)
            self.sinks[:] = [pair for pair in self.sinks if pair not in gone] + added
            self.checked = checked
        return plan.summary()

    def on_signal(self) -> None:
        """SIGHUP: reload, and say on stderr how it went (nobody waits for a reply)."""
        try:
            self.reload(Actor.agent("reload"))
        except NetloggerError as exc:
            log.error("reload refused, nothing changed: %s: %s", type(exc).__name__, exc)
