"""The live kernel state under one pin root: typed maps, the ring, the programs."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netlogger.kernel import abi, libbpf, pins
from netlogger.kernel.cgroup import Cgroup
from netlogger.kernel.maps import BpfMap, PerCpuArray
from netlogger.kernel.objinfo import map_info, prog_info
from netlogger.kernel.ringbuf import RingReader
from netlogger.kernel.spec import MAPS, PROGRAMS


@dataclass
class LoadReport:
    """What a load did with the pinned state it found."""

    reused: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    migrated: list[str] = field(default_factory=list)
    attached: list[str] = field(default_factory=list)
    swapped: list[str] = field(default_factory=list)


def map_handle(obj: int, name: str) -> int:
    return int(libbpf.bpf_object__find_map_by_name(obj, name.encode()))


def map_fd(obj: int, name: str) -> int:
    return int(libbpf.bpf_map__fd(map_handle(obj, name)))


def program_handle(obj: int, name: str) -> int:
    return int(libbpf.bpf_object__find_program_by_name(obj, name.encode()))


class Plane:
    """A loaded object, its maps typed by spec.MAPS.

    Holds an exclusive lock on the pin root, so one agent drives it at a time.
    Closing it leaves every pinned link and map in place: enforcement goes on.
    """

    def __init__(self, pin_root: Path, scope: Cgroup, obj: int, lock_fd: int) -> None:
        self.pin_root = pin_root
        self.scope = scope
        self.report = LoadReport()
        self._obj = obj
        self._lock_fd = lock_fd
        self._links: list[int] = []

        def typed(name: str) -> BpfMap[Any, Any]:
            return BpfMap(name, map_fd(obj, name), MAPS[name].key, MAPS[name].value)

        self.enrollments = typed("nl_enrollments")
        self.cgroup_state = typed("nl_cgroup_state")
        self.policies = typed("nl_policies")
        self.cidrs = typed("nl_cidrs")
        self.resolvers = typed("nl_resolvers")
        self.levels = typed("nl_levels")
        self.labels = typed("nl_labels")
        self.reported = typed("nl_reported")
        self.meta = typed("nl_meta")
        self.cpu_loss = PerCpuArray[abi.CpuLoss](
            "nl_cpu_loss", map_fd(obj, "nl_cpu_loss"), abi.CpuLoss
        )
        self.ring_fd = map_fd(obj, "nl_events")
        self.ring_bytes = int(libbpf.bpf_map__max_entries(map_handle(obj, "nl_events")))
        self.prog_fds = {
            name: int(libbpf.bpf_program__fd(program_handle(obj, name))) for name in PROGRAMS
        }

    def keep_link(self, link: int) -> None:
        """Hold our handle of a link until close (the pinned link outlives it)."""
        self._links.append(link)

    def reader(self) -> RingReader:
        """A batch reader of this plane's ring, tuned for its fixed-size records."""
        return RingReader(self.ring_fd, self.ring_bytes, ctypes.sizeof(abi.Event))

    def old_ring(self) -> RingReader | None:
        """A reader of the ring a resize replaced, while it is still pinned."""
        path = pins.map_path(self.pin_root, pins.OLD_RING)
        if not path.exists():
            return None
        fd = libbpf.call(libbpf.bpf_obj_get, libbpf.Op.OPEN, f"open pinned map {path}", bytes(path))
        try:
            return RingReader(fd, map_info(fd).max_entries, ctypes.sizeof(abi.Event))
        finally:
            os.close(fd)  # the reader's mappings keep the ring

    def drop_old_ring(self) -> None:
        pins.map_path(self.pin_root, pins.OLD_RING).unlink(missing_ok=True)

    def program_stats(self) -> dict[str, tuple[int, int]]:
        """(run count, run time ns) per program; counts only while kernel stats are on."""
        out = {}
        for name, pfd in self.prog_fds.items():
            info = prog_info(pfd)
            out[name] = (info.run_cnt, info.run_time_ns)
        return out

    def close(self) -> None:
        for link in self._links:
            libbpf.bpf_link__destroy(link)  # closes our fd; the pinned link stays attached
        self._links.clear()
        if self._obj:
            libbpf.bpf_object__close(self._obj)
            self._obj = 0
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Plane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
