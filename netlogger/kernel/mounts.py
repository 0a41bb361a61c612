"""Mounts of a filesystem type, from /proc/self/mountinfo, and the bpf filesystem's own."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from netlogger.errors import UsageError

MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class Mount:
    path: Path  # where it is mounted in this mount namespace
    root: PurePosixPath  # which part of the filesystem the mount shows


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return field.encode().decode("unicode_escape")


def of_type(fstype: str, mountinfo: Path = MOUNTINFO) -> list[Mount]:
    found = []
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == fstype:
            fields = left.split(" ")
            found.append(Mount(Path(_unescape(fields[4])), PurePosixPath(_unescape(fields[3]))))
    return found


BPFFS = Path("/sys/fs/bpf")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
BPF_FS_MAGIC = 0xCAFE4A11


def on_bpffs(path: Path) -> bool:
    """Whether `path`, or where it would be made, is on a bpf filesystem.

    Asks statfs of its nearest existing ancestor rather than mountinfo, which
    still lists a mount that a later one hides."""
    while not path.exists():
        path = path.parent
    buf = (ctypes.c_long * 16)()  # struct statfs begins with f_type
    if _libc.statfs(bytes(path), buf) != 0:
        return False
    return buf[0] & 0xFFFFFFFF == BPF_FS_MAGIC


def ensure_bpffs(pin_root: Path) -> None:
    """Mount the bpf filesystem at /sys/fs/bpf when a pin root there finds none."""
    if on_bpffs(pin_root):
        return
    if BPFFS not in pin_root.parents:
        raise UsageError(f"pin root {pin_root} is not on a bpf filesystem; use one under {BPFFS}")
    if _libc.mount(b"bpf", bytes(BPFFS), b"bpf", 0, None) != 0:
        # Imported here: cgroup paths (and so `policy check`) need mounts, not libbpf.
        from netlogger.kernel import libbpf

        libbpf.raise_for_errno(
            ctypes.get_errno(),
            libbpf.Op.MOUNT,
            f"mount the bpf filesystem at {BPFFS}",
            "mount it there yourself, or give a --pin-root on a mounted bpf filesystem",
        )
