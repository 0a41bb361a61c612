"""cgroup v2: where it is mounted, and which directories are ours to govern.

A cgroup's BPF id is the inode number of its directory on the cgroup2 mount;
its level is its depth in the hierarchy (the root is level 0), which is what
`bpf_get_current_ancestor_cgroup_id` counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from netlogger.errors import CgroupError, HostError
from netlogger.kernel.mounts import MOUNTINFO, Mount, of_type


@dataclass(frozen=True)
class Cgroup:
    path: Path
    id: int
    level: int


def find_mount(mountinfo: Path = MOUNTINFO) -> Mount:
    """The cgroup2 mount (hosts differ: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrids)."""
    mounts = of_type("cgroup2", mountinfo)
    if mounts:
        return mounts[0]
    raise HostError(
        "no cgroup2 mount in /proc/self/mountinfo; "
        "mount one with: mount -t cgroup2 none /sys/fs/cgroup/unified"
    )


def resolve(path: str | os.PathLike[str], mount: Mount | None = None) -> Cgroup:
    """Check that `path` is a cgroup directory on the cgroup2 mount and return it."""
    mount = mount or find_mount()
    raw = PurePosixPath(os.fspath(path))
    if not raw.is_absolute():
        raise CgroupError(
            f"cgroup path {raw} is relative; give an absolute path under {mount.path}"
        )
    if ".." in raw.parts:
        raise CgroupError(f"cgroup path {raw} contains '..'; give it without parent references")
    real = Path(os.path.realpath(raw))
    if real != mount.path and mount.path not in real.parents:
        raise CgroupError(f"cgroup path {raw} is outside the cgroup2 mount {mount.path}")
    try:
        st = real.stat()
    except FileNotFoundError:
        raise CgroupError(f"cgroup {raw} does not exist; create it with: mkdir {raw}") from None
    if st.st_dev != mount.path.stat().st_dev or not real.is_dir():
        raise CgroupError(f"{raw} is not a cgroup2 directory")
    depth = len(real.relative_to(mount.path).parts) + len(mount.root.parts) - 1
    return Cgroup(real, st.st_ino, depth)


def root(mount: Mount | None = None) -> Cgroup:
    return resolve((mount or find_mount()).path, mount)
