"""The pin root: where pinned maps and links live, who holds it, how it goes away.

Layout:  <pin_root>/maps/<map name>   <pin_root>/links/<program name>

A ring of another size cannot be reused; the replaced one stays pinned as
maps/nl_events_old until the agent has delivered what it still holds.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import ExitStack
from pathlib import Path

from netlogger.errors import StateError
from netlogger.kernel import libbpf, mounts
from netlogger.kernel.spec import MAPS

OLD_RING = "nl_events_old"  # bpffs refuses dots in names


def map_path(pin_root: Path, name: str) -> Path:
    return pin_root / "maps" / name


def link_path(pin_root: Path, name: str) -> Path:
    return pin_root / "links" / name


def prepare(pin_root: Path) -> int:
    """Make the pin root on a bpf filesystem and lock it; returns the lock fd."""
    mounts.ensure_bpffs(pin_root)
    for sub in ("maps", "links"):
        try:
            (pin_root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            libbpf.raise_for_errno(
                exc.errno or 0, libbpf.Op.PIN, f"make pin root directory {exc.filename}"
            )
    return lock(pin_root)


def holder(pin_root: Path, locks: Path = Path("/proc/locks")) -> int | None:
    """The pid holding the agent's lock on `pin_root` (an flock), if /proc/locks names one."""
    st = os.stat(pin_root)
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in locks.read_text().splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 4242 00:2a:17 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == want:
            return int(fields[4])
    return None


def lock(pin_root: Path, purpose: str = "run") -> int:
    fd = os.open(pin_root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = holder(pin_root)
        agent = f"the netlogger agent with pid {pid}" if pid else "another netlogger agent"
        if purpose == "teardown":
            stop = f"`kill -TERM {pid}`" if pid else "SIGTERM"
            raise StateError(
                f"{agent} holds pin root {pin_root}: teardown would pull enforcement from "
                f"under it; stop it first ({stop}), then run teardown again"
            ) from None
        raise StateError(
            f"{agent} is using pin root {pin_root}; stop it, or give this one its own --pin-root"
        ) from None
    return fd


def open_maps(pin_root: Path, stack: ExitStack) -> dict[str, int]:
    """fds of the pinned maps spec.MAPS names (closed by `stack`)."""
    pinned = {}
    for name in MAPS:
        path = map_path(pin_root, name)
        if path.exists():
            pinned[name] = libbpf.call(
                libbpf.bpf_obj_get, libbpf.Op.OPEN, f"open pinned map {path}", bytes(path)
            )
            stack.callback(os.close, pinned[name])
    return pinned


def pin_maps(pin_root: Path, fds: dict[str, int], replace: list[str], undo: ExitStack) -> None:
    """Pin each map not pinned yet, and each in `replace` in place of its old pin."""
    for name, fd in fds.items():
        path = map_path(pin_root, name)
        if name in replace:
            old_ring = map_path(pin_root, OLD_RING)
            if name == "nl_events" and not old_ring.exists():
                path.rename(old_ring)  # unread records: the agent delivers them first
            else:
                path.unlink()  # the old map lives on only while old programs still use it
        elif path.exists():
            continue
        libbpf.call(libbpf.bpf_obj_pin, libbpf.Op.PIN, f"pin map {name} at {path}", fd, bytes(path))
        undo.callback(path.unlink, missing_ok=True)


def teardown(pin_root: Path) -> list[str]:
    """Detach every pinned link and drop every pinned map under `pin_root`."""
    if not pin_root.is_dir():
        return []
    os.close(lock(pin_root, "teardown"))  # refuses while an agent holds it
    removed = []
    for sub in ("links", "maps"):  # links first: programs go before the maps they use
        directory = pin_root / sub
        if directory.is_dir():
            for path in sorted(directory.iterdir()):
                path.unlink()
                removed.append(f"{sub}/{path.name}")
            directory.rmdir()
    pin_root.rmdir()
    return removed
