"""What a reload would change: the running config against the one just validated.

`reload` applies policies, static enrollments and sinks. Everything else is
fixed while the agent runs, and a reload that changes it is refused whole,
saying why, rather than applied in part:

- `scope`, `pin_root`, `control_socket`, `metrics`, `state_dir` and `containers`
  are what the running agent is bound to (its attach point, pins, sockets and
  engine watch);
- `limits` are compiled into the programs (read-only data fixed at load), so
  they change only with new programs: a restart, which loads them and swaps
  them into the pinned links with no moment unenforced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from netlogger.config.model import Config, Sink, StaticEnrollment

RESTART_ONLY = ("scope", "pin_root", "control_socket", "metrics", "state_dir", "containers")


@dataclass
class Changes:
    restart: list[str] = field(default_factory=list)  # why the reload is refused, one per key
    policies: list[str] = field(default_factory=list)  # names added, changed or removed
    sinks_added: list[Sink] = field(default_factory=list)
    sinks_removed: list[Sink] = field(default_factory=list)
    enroll_set: list[StaticEnrollment] = field(default_factory=list)  # new or changed
    enroll_removed: list[StaticEnrollment] = field(default_factory=list)

    def summary(self) -> dict[str, list[str]]:
        return {
            "policies": self.policies,
            "sinks_added": [_sink_name(s) for s in self.sinks_added],
            "sinks_removed": [_sink_name(s) for s in self.sinks_removed],
            "enrolled": [e.cgroup for e in self.enroll_set],
            "unenrolled": [e.cgroup for e in self.enroll_removed],
        }


def _sink_name(sink: Sink) -> str:
    detail = getattr(sink, "path", None) or getattr(sink, "endpoint", None)
    return f"{type(sink).__struct_config__.tag}:{detail}" if detail else "console"


def _text(value: object) -> str:
    return msgspec.json.encode(value).decode()


def changes(old: Config, new: Config) -> Changes:
    out = Changes()
    for key in RESTART_ONLY:
        before, after = getattr(old, key), getattr(new, key)
        if before != after:
            out.restart.append(
                f"{key} changed ({_text(before)} -> {_text(after)}): the running agent is "
                "bound to it; restart the agent (enforcement stays pinned across a restart)"
            )
    for limit in msgspec.structs.fields(old.limits):
        before, after = getattr(old.limits, limit.name), getattr(new.limits, limit.name)
        if before != after:
            out.restart.append(
                f"limits.{limit.name} changed ({before} -> {after}): limits are compiled into "
                "the programs when they load; restart the agent, which swaps the new programs "
                "into the pinned links with no moment unenforced"
            )
    names = sorted(set(old.policies) | set(new.policies))
    out.policies = [n for n in names if old.policies.get(n) != new.policies.get(n)]
    out.sinks_added = [s for s in new.sinks if s not in old.sinks]
    out.sinks_removed = [s for s in old.sinks if s not in new.sinks]
    before_enroll = {e.cgroup: e for e in old.enroll}
    after_enroll = {e.cgroup: e for e in new.enroll}
    out.enroll_set = [e for path, e in after_enroll.items() if before_enroll.get(path) != e]
    out.enroll_removed = [e for path, e in before_enroll.items() if path not in after_enroll]
    return out
