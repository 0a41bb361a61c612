"""The container watch's rules, hermetic: policy choice, escapes, expected cgroup names."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from netlogger.config.model import Containers
from netlogger.container_watch import choose_policy
from netlogger.containers import (
    NAME_GRACE_S,
    ContainerNames,
    cgroup_name,
    expected_cgroup,
    systemd_slice_dir,
)
from netlogger.escape import assess, summary
from netlogger.kernel.mounts import Mount
from netlogger.privileges import CAP_NET_ADMIN, CAP_NET_RAW

SPEC = Containers()
KNOWN = {"default", "strict"}
ID = "ab" * 32


@pytest.mark.parametrize(
    ("labels", "policy", "reason"),
    [
        ({}, "default", None),
        ({"dev.clawker.policy": "strict"}, "strict", None),
        ({"dev.clawker.policy": "nope"}, "_deny_all", "unknown_policy"),
        ({"dev.clawker.policy": ""}, "_deny_all", "malformed_policy"),
        ({"dev.clawker.policy": "_deny_all"}, "_deny_all", "malformed_policy"),
        ({"dev.clawker.policy": "x" * 32}, "_deny_all", "malformed_policy"),
        ({"dev.clawker.policy": "a\nb"}, "_deny_all", "malformed_policy"),
    ],
)
def test_policy_label_fails_closed(labels: dict[str, str], policy: str, reason: str) -> None:
    choice = choose_policy(SPEC, labels, KNOWN)
    assert (choice.policy, choice.reason) == (policy, reason)
    assert bool(choice.detail) == bool(reason)


def test_escapes_from_configuration_and_from_effective_capabilities() -> None:
    def kinds(host: dict[str, object], cap_eff: int | None = None) -> str | None:
        return summary(assess({"HostConfig": host}, cap_eff))

    assert kinds({}) == "cap_net_raw"  # Docker's default set holds NET_RAW
    assert kinds({"CapDrop": ["NET_RAW"]}) is None
    assert kinds({"CapDrop": ["ALL"], "CapAdd": ["CAP_NET_ADMIN"]}) == "cap_net_admin"
    assert kinds({"Privileged": True}) == "privileged,cap_net_raw,cap_net_admin"
    assert kinds({"CapDrop": ["NET_RAW"], "NetworkMode": "host"}) == "host_network"
    joined = assess({"HostConfig": {"CapDrop": ["ALL"], "NetworkMode": f"container:{ID}"}})
    assert [(e.kind, e.detail) for e in joined] == [
        ("shared_netns", f"joins the network namespace of {ID[:12]}")
    ]
    # Running: what the kernel checks wins over what was asked (a non-root user holds none).
    assert kinds({}, cap_eff=0) is None
    assert kinds({"CapDrop": ["ALL"]}, cap_eff=1 << CAP_NET_RAW | 1 << CAP_NET_ADMIN) == (
        "cap_net_raw,cap_net_admin"
    )


def test_expected_cgroup_per_driver() -> None:
    mount = Mount(Path("/sys/fs/cgroup/unified"), PurePosixPath("/"))
    assert cgroup_name(ID, "cgroupfs") == ID
    assert cgroup_name(ID, "systemd") == f"docker-{ID}.scope"
    attrs = {"Id": ID, "HostConfig": {"CgroupParent": ""}}
    assert expected_cgroup(attrs, "cgroupfs", mount) == (ID, mount.path / "docker" / ID)
    assert expected_cgroup(attrs, "systemd", mount) == (
        f"docker-{ID}.scope",
        mount.path / "system.slice" / f"docker-{ID}.scope",
    )
    nested = {"Id": ID, "HostConfig": {"CgroupParent": "/ci/jobs"}}
    assert expected_cgroup(nested, "cgroupfs", mount)[1] == mount.path / "ci/jobs" / ID
    assert systemd_slice_dir("a-b-c.slice") == PurePosixPath("a.slice/a-b.slice/a-b-c.slice")
    assert systemd_slice_dir("-.slice") == PurePosixPath()


def test_a_container_name_outlives_its_enrollment_by_the_grace_only() -> None:
    now = [0.0]
    names = ContainerNames(clock=lambda: now[0])
    names.update({"a" * 64: "web", "b" * 64: "db", "c" * 64: "cache"})
    assert names.trim({"a" * 64, "b" * 64, "c" * 64}) == []
    assert names.trim({"a" * 64}) == []  # b and c leave now
    now[0] = NAME_GRACE_S - 1
    assert names.trim({"a" * 64, "c" * 64}) == []  # c is back: its clock starts again
    now[0] = NAME_GRACE_S
    assert names.trim({"a" * 64}) == ["b" * 64]
    assert names == {"a" * 64: "web", "c" * 64: "cache"}
    now[0] = 2 * NAME_GRACE_S - 1  # c left again at NAME_GRACE_S
    assert names.trim({"a" * 64}) == []
    now[0] = 2 * NAME_GRACE_S
    assert names.trim({"a" * 64}) == ["c" * 64]
    assert names == {"a" * 64: "web"}
