"""Container ids read back from the cgroup paths each engine and driver makes."""

from __future__ import annotations

import pytest

from netlogger.pipeline.cgroup_path import PathIdentity, parse

ID = "3f4e1c2b" * 8
POD = "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # docker, cgroupfs driver: default parent, --cgroup-parent, host mount prefix
        (f"/docker/{ID}", PathIdentity(ID, "docker")),
        (f"/sys/fs/cgroup/unified/docker/{ID}", PathIdentity(ID, "docker")),
        (f"/nltest-1234/{ID}", PathIdentity(ID, "")),
        # docker, systemd driver; a task in a sub-cgroup of the container
        (f"/system.slice/docker-{ID}.scope", PathIdentity(ID, "docker")),
        (f"/system.slice/docker-{ID}.scope/init.scope", PathIdentity(ID, "docker")),
        (f"/docker/{ID}/sub/leaf", PathIdentity(ID, "docker")),
        # podman: rootful systemd, rootless systemd, cgroupfs
        (f"/machine.slice/libpod-{ID}.scope", PathIdentity(ID, "podman")),
        (
            f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container",
            PathIdentity(ID, "podman"),
        ),
        (f"/libpod_parent/libpod-{ID}", PathIdentity(ID, "podman")),
        (f"/libpod_parent/{ID}", PathIdentity(ID, "podman")),
        # containerd: nerdctl (systemd), plain namespace (cgroupfs)
        (f"/system.slice/nerdctl-{ID}.scope", PathIdentity(ID, "containerd")),
        (f"/default/{ID}", PathIdentity(ID, "")),
        # CRI: kubelet with the systemd driver (underscored pod uid) and cgroupfs
        (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            f"{POD.replace('-', '_')}.slice/cri-containerd-{ID}.scope",
            PathIdentity(ID, "kubernetes", POD),
        ),
        (
            f"/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/crio-{ID}.scope",
            PathIdentity(ID, "kubernetes", POD),
        ),
        (f"/kubepods/besteffort/pod{POD}/{ID}", PathIdentity(ID, "kubernetes", POD)),
    ],
)
def test_container_paths(path: str, expected: PathIdentity) -> None:
    assert parse(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/system.slice/ssh.service",
        "/user.slice/user-1000.slice/session-3.scope",
        f"/machine.slice/libpod-conmon-{ID}.scope",  # podman's monitor, not the container
        f"/docker/{ID[:63]}",  # one digit short
        f"/docker/{ID.upper()}",  # engines write lowercase hex
        f"/system.slice/docker-{ID}.scope.bak",
        "/kubepods/besteffort/pod" + POD,  # the pod, not a container of it
    ],
)
def test_paths_that_name_no_container(path: str) -> None:
    assert parse(path) is None
