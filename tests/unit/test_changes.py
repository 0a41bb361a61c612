"""What a reload would change, and what it refuses to change without a restart."""

from __future__ import annotations

import msgspec

from netlogger.config.changes import changes
from netlogger.config.model import Config


def config(**kw: object) -> Config:
    return msgspec.convert(kw, Config)


BASE = {
    "sinks": [{"type": "console"}, {"type": "jsonl", "path": "/tmp/a.jsonl"}],
    "policies": {"a": {}, "b": {"allow": [{"cidr": "10.0.0.0/8"}]}},
    "enroll": [
        {"cgroup": "/sys/fs/cgroup/x", "policy": "a"},
        {"cgroup": "/sys/fs/cgroup/y", "policy": "b"},
    ],
}


def test_nothing_changed_is_nothing_to_do() -> None:
    plan = changes(config(**BASE), config(**BASE))
    assert plan.summary() == {
        "policies": [],
        "sinks_added": [],
        "sinks_removed": [],
        "enrolled": [],
        "unenrolled": [],
    }
    assert plan.restart == []


def test_policies_enrollments_and_sinks_are_diffed_item_by_item() -> None:
    new = dict(BASE)
    new["sinks"] = [{"type": "console"}, {"type": "jsonl", "path": "/tmp/b.jsonl"}]
    new["policies"] = {"a": {}, "b": {"allow": [{"cidr": "10.0.0.0/16"}]}, "c": {}}
    new["enroll"] = [{"cgroup": "/sys/fs/cgroup/y", "policy": "c"}]
    plan = changes(config(**BASE), config(**new))
    assert plan.summary() == {
        "policies": ["b", "c"],
        "sinks_added": ["jsonl:/tmp/b.jsonl"],
        "sinks_removed": ["jsonl:/tmp/a.jsonl"],
        "enrolled": ["/sys/fs/cgroup/y"],
        "unenrolled": ["/sys/fs/cgroup/x"],
    }


def test_limits_and_bindings_are_refused_with_the_reason() -> None:
    new = dict(BASE, limits={"ring_size": "16MiB", "allowed_per_sec": 10}, pin_root="/x")
    restart = changes(config(**BASE), config(**new)).restart
    assert restart == [
        'pin_root changed ("/sys/fs/bpf/netlogger" -> "/x"): the running agent is bound to it; '
        "restart the agent (enforcement stays pinned across a restart)",
        "limits.ring_size changed (8MiB -> 16MiB): limits are compiled into the programs when "
        "they load; restart the agent, which swaps the new programs into the pinned links with "
        "no moment unenforced",
        "limits.allowed_per_sec changed (1000 -> 10): limits are compiled into the programs when "
        "they load; restart the agent, which swaps the new programs into the pinned links with "
        "no moment unenforced",
    ]
