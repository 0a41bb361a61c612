"""Mounts of a filesystem type, from /proc/self/mountinfo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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
