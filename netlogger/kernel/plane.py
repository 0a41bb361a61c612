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
from netlogger.kernel.spec import INNER_MAPS, MAPS, PROGRAMS, wanted


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


def create_inner(outer: str) -> int:
    """A new, empty inner map for `outer` (spec.INNER_MAPS); the caller closes the fd."""
    spec = INNER_MAPS[outer]
    return libbpf.call(
        libbpf.bpf_map_create,
        libbpf.Op.MAP,
        f"create an inner map of {outer}",
        spec.map_type,
        None,
        ctypes.sizeof(spec.key),
        ctypes.sizeof(spec.value),
        spec.entries,
        None,
    )


def open_inner(map_id: int) -> int:
    """An fd of the inner map with this id (an outer map's value); the caller closes it."""
    return libbpf.call(libbpf.bpf_map_get_fd_by_id, libbpf.Op.OPEN, "open an inner map", map_id)


class Plane:
    """A loaded object, its maps typed by spec.MAPS.

    Holds an exclusive lock on the pin root, so one agent drives it at a time.
    Closing it leaves every pinned link and map in place: enforcement goes on.
    """

    def __init__(
        self, pin_root: Path, scope: Cgroup, obj: int, lock_fd: int, layers: dict[str, str | None]
    ) -> None:
        self.pin_root = pin_root
        self.scope = scope
        self.layers = layers  # layer -> None when loaded, else why this kernel refuses it
        self.report = LoadReport()
        self._obj = obj
        self._lock_fd = lock_fd
        self._links: list[int] = []
        self.tracing: dict[str, str] = {}  # tracing program -> "attached" or why not

        def typed(name: str) -> BpfMap[Any, Any]:
            return BpfMap(name, map_fd(obj, name), MAPS[name].key, MAPS[name].value)

        self.enrollments = typed("nl_enrollments")
        self.cgroup_state = typed("nl_cgroup_state")
        self.policies = typed("nl_policies")
        self.cidrs = typed("nl_cidrs")
        self.resolvers = typed("nl_resolvers")
        self.levels = typed("nl_levels")
        self.folds = typed("nl_folds")
        self.labels = typed("nl_labels")
        self.reported = typed("nl_reported")
        self.pending = typed("nl_pending")
        self.meta = typed("nl_meta")
        self.veths = typed("nl_veths")
        self.cpu_loss = PerCpuArray[abi.CpuLoss](
            "nl_cpu_loss", map_fd(obj, "nl_cpu_loss"), abi.CpuLoss
        )
        self.domains = typed("nl_domains")
        self.domain_ports = typed("nl_domain_ports")
        self.dns_admitted = typed("nl_dns_admitted")
        self.dns_queries = typed("nl_dns_queries")
        self.dns_ring_fd = map_fd(obj, "nl_dns_events")
        self.dns_ring_bytes = int(libbpf.bpf_map__max_entries(map_handle(obj, "nl_dns_events")))
        self.ring_fd = map_fd(obj, "nl_events")
        self.ring_bytes = int(libbpf.bpf_map__max_entries(map_handle(obj, "nl_events")))
        self.prog_fds = {
            name: int(libbpf.bpf_program__fd(program_handle(obj, name)))
            for name in PROGRAMS
            if wanted(name, layers)
        }
        self.prog_fds = {n: fd for n, fd in self.prog_fds.items() if fd >= 0}  # loaded ones

    def flush_folds(self) -> None:
        """Write every folded repeat not yet in a record to the ring (bpf/emit.bpf.c)."""
        for cg, _ in self.folds.items():
            # A test packet: an Ethernet header's worth of zeros, then the cgroup id.
            packet = ctypes.create_string_buffer(bytes(abi.Flush.CTX_OFF) + bytes(abi.FlushCtx(cg)))
            opts = libbpf.TestRunOpts(
                sz=ctypes.sizeof(libbpf.TestRunOpts),
                data_in=ctypes.addressof(packet),
                data_size_in=len(packet.raw),
            )
            libbpf.call(
                libbpf.bpf_prog_test_run_opts,
                libbpf.Op.RUN,
                f"run nl_flush_folds for cgroup id {cg}",
                self.prog_fds["nl_flush_folds"],
                ctypes.byref(opts),
            )

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

    def dns_reader(self) -> RingReader:
        """A batch reader of the DNS ring (variable-size nl_dns_event records)."""
        return RingReader(self.dns_ring_fd, self.dns_ring_bytes)

    def add_dns_sets(self, cgroup_id: int) -> None:
        """Give an enrolled cgroup its own admitted-address and query LRUs (kept if present)."""
        for outer in (self.dns_admitted, self.dns_queries):
            if outer.lookup(cgroup_id) is not None:
                continue
            fd = create_inner(outer.name)
            try:
                outer.update(cgroup_id, fd)
            finally:
                os.close(fd)

    def wait_for_programs(self) -> None:
        """Return once every program run that had begun before the call has ended.

        A hook that read an enrollment just before it changed may still be deciding by
        the old policy, whose entries must stay until it is done. The kernel waits so
        (synchronize_rcu) after each syscall write to a map-in-map: here key 0 of
        nl_dns_queries, which names no cgroup, is written and removed. Both writes
        succeed: newer kernels wait only after one that does.
        """
        fd = create_inner(self.dns_queries.name)
        try:
            self.dns_queries.update(0, fd)
        finally:
            os.close(fd)
        self.dns_queries.delete(0)

    def drop_dns_sets(self, cgroup_id: int) -> None:
        for outer in (self.dns_admitted, self.dns_queries):
            outer.delete(cgroup_id)

    def admitted(self, cgroup_id: int) -> dict[tuple[int, bytes], abi.DnsSlots]:
        """(family, address bytes) -> slots, of one cgroup's admitted set."""
        inner_id = self.dns_admitted.lookup(cgroup_id)
        if inner_id is None:
            return {}
        fd = open_inner(inner_id)
        try:
            inner: BpfMap[abi.DnsAddrKey, abi.DnsSlots] = BpfMap(
                "admitted", fd, abi.DnsAddrKey, abi.DnsSlots
            )
            size = {abi.Family.INET: 4, abi.Family.INET6: 16}
            return {(k.family, bytes(k.addr)[: size[k.family]]): v for k, v in inner.items()}
        finally:
            os.close(fd)

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
