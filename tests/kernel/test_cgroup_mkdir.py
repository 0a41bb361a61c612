"""The cgroup_mkdir program enrolls an expected cgroup when it is made, before any task is in it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from netlogger import sandbox
from netlogger.enforce import Enforcer, Expected
from netlogger.kernel import cgroup, features, loader, mounts
from tests.fixtures import unique


def test_probe_finds_the_program_on_this_kernel(plane: loader.Plane) -> None:
    # CI's kernels (the host's 6.18, the matrix's 6.1) all have it: absent is a failure here.
    assert features.CGROUP_MKDIR.probe()
    assert plane.tracing == {"nl_cgroup_mkdir": "attached"}
    assert (plane.pin_root / "links" / "nl_cgroup_mkdir").exists()


def test_expected_cgroup_is_enrolled_at_mkdir(scope, enforcer: Enforcer, spawn, read) -> None:
    name = unique("ctr")
    enforcer.expect(name, Expected(scope.path / name, "default", None, "a1", "p1", "c" * 64))
    with sandbox.cgroup(scope, name) as cg:
        # Nobody but the kernel has written anything since mkdir.
        (entry,) = [e for e in enforcer.enrolled() if e.cgroup_id == cg.id]
        assert (entry.level, entry.policy, entry.agent, entry.project, entry.container_id) == (
            cg.level,
            "default",
            "a1",
            "p1",
            "c" * 64,
        )
        assert entry.mode == "enforce" and entry.path == str(cg.path)
        assert enforcer.plane.levels.lookup(0).mask & (1 << cg.level)
        assert enforcer.plane.cgroup_state.lookup(cg.id) is not None
        pending = enforcer.expected()[name]
        assert (pending.cgroup_id, pending.enrolled) == (cg.id, 1)
        w = spawn(cg)
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == errno.EPERM
        (rec,) = read()
        assert (rec.action, rec.cgroup_id, rec.reason) == ("denied", str(cg.id), "default_deny")


def test_recreated_cgroup_is_enrolled_again_until_unexpected(scope, enforcer: Enforcer) -> None:
    name = unique("ctr")
    enforcer.expect(name, Expected(scope.path / name))
    with sandbox.cgroup(scope, name) as first:
        first_id = first.id
    enforcer.unenroll(first_id)
    with sandbox.cgroup(scope, name) as second:
        assert second.id != first_id
        assert [e.cgroup_id for e in enforcer.enrolled()] == [second.id]
    enforcer.unenroll(second.id)
    enforcer.unexpect(name)
    with sandbox.cgroup(scope, name):
        assert enforcer.enrolled() == []


def test_other_names_and_cgroups_outside_the_scope_are_left_alone(
    scope, enforcer: Enforcer
) -> None:
    name = unique("ctr")
    enforcer.expect(name, Expected(scope.path / name))
    with (
        sandbox.cgroup(scope, unique("other")),
        sandbox.cgroup(cgroup.root(), unique("nltest-outside")) as outside,
        sandbox.cgroup(outside, name),
    ):
        assert enforcer.enrolled() == []
        assert enforcer.expected()[name].enrolled == 0


def test_cgroup_v1_directories_of_the_same_name_are_left_alone(scope, enforcer: Enforcer) -> None:
    """A hybrid host's v1 hierarchies number cgroups on their own: their ids must not enroll."""
    v1 = [m.path for m in mounts.of_type("cgroup")]
    name = unique("ctr")
    enforcer.expect(name, Expected(scope.path / name))
    made: list[Path] = []
    try:
        for hierarchy in v1:  # none on a pure-v2 kernel (the matrix guest): nothing to make
            made.append(hierarchy / scope.path.name)
            made[-1].mkdir()
            (made[-1] / name).mkdir()
        assert enforcer.enrolled() == []
    finally:
        for path in made:
            (path / name).rmdir()
            path.rmdir()
    assert os.path.exists(scope.path)


def test_pinned_mkdir_link_is_swapped_without_a_gap(pin_root, scope, policies) -> None:
    with loader.loaded(pin_root, scope) as first:
        assert first.report.attached.count("nl_cgroup_mkdir") == 1
    with loader.loaded(pin_root, scope) as second:
        assert "nl_cgroup_mkdir" in second.report.swapped
        enforcer = Enforcer(second, policies)
        enforcer.apply_policies(policies)
        name = unique("ctr")
        enforcer.expect(name, Expected(scope.path / name))
        with sandbox.cgroup(scope, name) as cg:
            assert [e.cgroup_id for e in enforcer.enrolled()] == [cg.id]
            # Exactly one program wrote it: the old link is gone.
            assert enforcer.expected()[name].enrolled == 1
