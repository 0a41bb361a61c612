"""File-system faults caused for real, under directories the test made.

Each helper undoes its mount on the way out, pass or fail.
"""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `path`: a disk that fills up."""
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "nltest", str(path))
    try:
        yield path
    finally:
        _run("umount", "-l", str(path))


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """`directory` read-only for paths opened, renamed or created through it from now on.

    A read-only bind mount of the directory over itself: files already open stay
    writable (they hold the mount below), as after a `mount -o remount,ro` that a
    writer kept from taking effect at once; everything by path gets EROFS.
    """
    _run("mount", "--bind", str(directory), str(directory))
    try:
        _run("mount", "-o", "remount,bind,ro", str(directory))
        yield
    finally:
        _run("umount", str(directory))


def fill(directory: Path) -> Path:
    """Write a filler file in `directory` until its file system is full."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
    return filler


def free(filler: Path, nbytes: int | None = None) -> None:
    """Give back `nbytes` of the filler's space, or all of it."""
    if nbytes is None:
        filler.unlink()
        return
    with filler.open("r+b") as f:
        f.truncate(max(0, filler.stat().st_size - nbytes))
