"""Which layers cover a workload, and what `status` and `doctor` say is left open."""

from __future__ import annotations

from pathlib import Path

from netlogger import coverage

EPERM = "the kernel refuses trampoline programs: EPERM"
BOTH = {"lsm": None, "backstop": None}
NO_LSM = {"lsm": EPERM, "backstop": None}


def test_doctor_lines_name_each_layer_and_why_one_is_missing() -> None:
    checks = coverage.layer_checks(NO_LSM)
    assert [(c.name, c.status, c.detail) for c in checks] == [
        (
            "layer: LSM packet-socket denial (lsm_cgroup/socket_create)",
            "warn",
            f"unavailable: {EPERM}",
        ),
        (
            "layer: container backstop (tc on the host side of the veth)",
            "ok",
            f"available: {coverage.WHAT['backstop']}",
        ),
    ]


def test_plain_cgroup_without_lsm_has_the_packet_hole_open() -> None:
    assert coverage.covering(NO_LSM, container=False, veths=[]) == ["cgroup"]
    assert coverage.open_holes(NO_LSM, container=False, veths=[]) == [
        f"packet sockets (AF_PACKET) are not governed ({EPERM})"
    ]


def test_plain_cgroup_with_lsm_is_closed() -> None:
    assert coverage.covering(BOTH, container=False, veths=[]) == ["cgroup", "lsm"]
    assert coverage.open_holes(BOTH, container=False, veths=[]) == []


def test_container_with_backstop_is_closed_whatever_the_lsm() -> None:
    assert coverage.covering(NO_LSM, container=True, veths=["veth1"]) == ["cgroup", "backstop"]
    assert coverage.open_holes(NO_LSM, container=True, veths=["veth1"]) == []


def test_container_without_veth_says_why() -> None:
    assert coverage.open_holes(NO_LSM, container=True, veths=[]) == [
        f"packet sockets (AF_PACKET) are not governed ({EPERM})",
        "no backstop: the container has no veth (host network?)",
    ]


def test_narrow_scope_warns_about_sockets_from_outside() -> None:
    root = Path("/sys/fs/cgroup")
    assert coverage.notes(BOTH, root, root) == []
    (note,) = coverage.notes(BOTH, root / "agents", root)
    assert "sockets made outside it" in note and "not governed for plain cgroups" in note
    assert len(coverage.notes(NO_LSM, root, root)) == 1
