"""Which container a cgroup path belongs to, from the path alone.

Engines name a container's cgroup after its id, each in its own way; reading
that back needs no engine, so records stay attributed while the engine is
slow, down, or not Docker at all. The deepest component that names a
container wins, so a task in a sub-cgroup of a container (systemd inside it,
an `init.scope`) is still that container's.

    docker, cgroupfs driver       /docker/<id>   (or <--cgroup-parent>/<id>)
    docker, systemd driver        /system.slice/docker-<id>.scope
    podman (libpod), systemd      /machine.slice/libpod-<id>.scope
                                  (rootless: below user@UID.service)
    podman (libpod), cgroupfs     /libpod_parent/libpod-<id>
    containerd / nerdctl          /system.slice/nerdctl-<id>.scope, /<namespace>/<id>
    CRI (kubelet), systemd        /kubepods.slice/.../kubepods-<qos>-pod<uid>.slice/
                                  cri-containerd-<id>.scope (crio-<id>, docker-<id>)
    CRI (kubelet), cgroupfs       /kubepods/<qos>/pod<uid>/<id>

`libpod-conmon-<id>.scope` is podman's monitor process, not the container.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

_ID = r"(?P<id>[0-9a-f]{64})"
# Leaf name -> runtime, for names that say who made them.
_NAMED = [
    (re.compile(rf"docker-{_ID}\.scope"), "docker"),
    (re.compile(rf"libpod-{_ID}(\.scope)?"), "podman"),
    (re.compile(rf"cri-containerd-{_ID}\.scope"), "containerd"),
    (re.compile(rf"nerdctl-{_ID}\.scope"), "containerd"),
    (re.compile(rf"crio-{_ID}\.scope"), "cri-o"),
]
_BARE = re.compile(_ID)
_POD = re.compile(
    r"pod(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
)


@dataclass(frozen=True)
class PathIdentity:
    container_id: str
    runtime: (
        str  # docker / podman / containerd / cri-o / kubernetes / "" when the path does not say
    )
    pod_uid: str = ""  # kubelet pods only, dashes restored


def _bare_runtime(parents: list[str]) -> str:
    """Who made a bare-id directory, from the directory above it."""
    parent = parents[-1] if parents else ""
    if parent == "docker":
        return "docker"
    if parent.startswith("libpod"):
        return "podman"
    if any(p == "kubepods" or p.startswith("pod") for p in parents):
        return "kubernetes"
    return ""


def parse(path: str | PurePosixPath) -> PathIdentity | None:
    """The container `path` (a cgroup path, mount-relative or not) belongs to, if it says."""
    parts = [p for p in PurePosixPath(path).parts if p != "/"]
    for depth in range(len(parts) - 1, -1, -1):
        name, parents = parts[depth], parts[:depth]
        pod = next((m for p in parents if (m := _POD.search(p))), None)
        pod_uid = pod["uid"].replace("_", "-") if pod else ""
        for pattern, runtime in _NAMED:
            found = pattern.fullmatch(name)
            if found:
                return PathIdentity(found["id"], "kubernetes" if pod else runtime, pod_uid)
        found = _BARE.fullmatch(name)
        if found:
            return PathIdentity(found["id"], _bare_runtime(parents), pod_uid)
    return None
