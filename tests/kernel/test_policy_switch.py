"""A policy switch, one map write at a time: never a deny, never a mix.

`apply_policies` is stepped through every map write it makes (each update and
delete of the policy, prefix, resolver and enrollment maps), and after each one
real connect()s from the enrolled cgroup ask the kernel. Until the
enrollment's one write every verdict is the old policy's, from it on every
verdict is the new one's: no step shows default-deny for what both allow, and
no step shows the two policies' rules mixed.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

from netlogger import sandbox
from netlogger.config.check import check_source
from netlogger.config.source import parse
from netlogger.enforce import Enforcer, Target
from netlogger.kernel.maps import BpfMap
from netlogger.kernel.plane import Plane

OLD = """
policies:
  p:
    allow:
      - {cidr: 198.18.0.0/24, ports: [6000, 7000], name: wide}
"""
NEW = """
policies:
  p:
    allow:
      - {cidr: 198.18.0.2/32, ports: ["5990-6010"], name: narrow}
      - {cidr: 198.18.0.0/16, ports: [9000], name: other}
"""
# destination -> (allowed by OLD, allowed by NEW)
DESTS = {
    ("198.18.0.2", 6000): (True, True),
    ("198.18.0.2", 6005): (False, True),
    ("198.18.0.5", 7000): (True, False),
    ("198.18.7.1", 9000): (False, True),
    ("198.18.0.2", 22): (False, False),
}


def verdicts(w: Any) -> dict[tuple[str, int], bool]:
    return {
        (addr, port): w("connect", family=4, type="udp", addr=addr, port=port) != errno.EPERM
        for addr, port in DESTS
    }


@pytest.mark.parametrize("direction", ["old-to-new", "new-to-old"])
def test_every_map_write_of_a_switch_keeps_one_whole_policy(
    plane, scope, spawn, monkeypatch: pytest.MonkeyPatch, direction: str
) -> None:
    first, second = (OLD, NEW) if direction == "old-to-new" else (NEW, OLD)
    before = check_source(parse(first, "before.yaml")).policies
    after = check_source(parse(second, "after.yaml")).policies
    want = {d: allowed[0 if first is OLD else 1] for d, allowed in DESTS.items()}
    then = {d: allowed[1 if first is OLD else 0] for d, allowed in DESTS.items()}

    enforcer = Enforcer(plane, before)
    enforcer.apply_policies(before)
    with sandbox.cgroup(scope, "switch") as cg:
        enforcer.enroll(Target(cg, "p"))
        w = spawn(cg)
        assert verdicts(w) == want

        steps: list[tuple[str, str, bool, dict[tuple[str, int], bool]]] = []
        switched = False
        update, delete = BpfMap.update, BpfMap.delete

        waiting = False  # the barrier's own writes are not the switch's

        def step(m: BpfMap[Any, Any], op: str) -> None:
            nonlocal switched
            if waiting:
                return
            switched = switched or (m.name == "nl_enrollments" and op == "update")
            steps.append((m.name, op, switched, verdicts(w)))

        def stepped_update(self: BpfMap[Any, Any], key: Any, value: Any, flags: int = 0) -> None:
            update(self, key, value, flags)
            step(self, "update")

        def stepped_delete(self: BpfMap[Any, Any], key: Any) -> bool:
            found = delete(self, key)
            step(self, "delete")
            return found

        wait = Plane.wait_for_programs

        def stepped_wait(self: Plane) -> None:
            nonlocal waiting
            waiting = True
            wait(self)
            waiting = False
            steps.append(("programs", "wait", switched, verdicts(w)))

        monkeypatch.setattr(BpfMap, "update", stepped_update)
        monkeypatch.setattr(BpfMap, "delete", stepped_delete)
        monkeypatch.setattr(Plane, "wait_for_programs", stepped_wait)
        enforcer.apply_policies(after)
        monkeypatch.undo()

        ops = [(name, op) for name, op, _, _ in steps]
        assert ops.count(("nl_enrollments", "update")) == 1  # the switch is one write
        assert ("nl_policies", "delete") in ops and ("nl_cidrs", "delete") in ops  # old ones go
        assert ops.index(("nl_enrollments", "update")) > max(
            i for i, o in enumerate(ops) if o[1] == "update" and o[0] != "nl_enrollments"
        )  # every new entry is in place before it
        # and no old entry goes before every hook that may have read the old id is done
        first_delete = min(i for i, o in enumerate(ops) if o[1] == "delete")
        assert ops.index(("nl_enrollments", "update")) < ops.index(("programs", "wait"))
        assert ops.index(("programs", "wait")) < first_delete
        for name, op, done, seen in steps:
            assert seen == (then if done else want), (name, op, done)
        assert verdicts(w) == then
