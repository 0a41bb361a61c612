"""Load the BPF object, attach it once to the scope cgroup, pin everything.

The lifecycle reads as libbpf-bootstrap's: open -> configure (.rodata, ring
size) -> reuse pinned maps -> load -> migrate maps whose layout changed ->
attach, or swap into pinned links -> pin. A loader that finds pinned links
swaps its programs in with bpf_link__update_program, so an enrolled cgroup is
never without a program, across crashes and upgrades alike.

What the object holds is spec.py; the pin root is pins.py; carrying pinned
maps across versions is migrate.py; the loaded result is plane.Plane.

Programs of a layer (features.LAYERS) the kernel refuses are not loaded at
all (autoload off before load), so the rest load wherever the floor holds;
`Plane.layers` says which are in and why the others are not.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from netlogger.errors import KernelError, StateError, UsageError
from netlogger.kernel import abi, features, libbpf, migrate, pins
from netlogger.kernel.btf import Btf
from netlogger.kernel.cgroup import Cgroup
from netlogger.kernel.libbpf import Op
from netlogger.kernel.objinfo import BPF_LINK_TYPE_CGROUP, link_info, prog_info
from netlogger.kernel.plane import Plane, map_fd, map_handle, program_handle
from netlogger.kernel.spec import MAPS, OBJECT, PROGRAMS, TRACING, wanted

# The feature each tracing program needs: without it the object loads without the program.
TRACING_FEATURES = {"nl_cgroup_mkdir": features.CGROUP_MKDIR}


@dataclass(frozen=True)
class Settings:
    ring_bytes: int = 8 << 20
    allowed_per_sec: int = 1000  # allowed records per enrolled cgroup; 0 = no limit
    allowed_burst: int = 2000
    wakeup_bytes: int = 64 << 10  # ring bytes waiting before the kernel wakes the reader
    dns_ring_bytes: int = 2 << 20
    # An admitted address lives for its TTL, clamped: the floor covers resolvers that
    # answer with TTL 0 (dnsmasq for hosts-file names) and a connect soon after.
    dns_ttl_floor_s: int = 60
    dns_ttl_cap_s: int = 3600
    fold_window_ns: int = 10_000_000  # fold a decision repeated this soon after its record; 0 = off

    def __post_init__(self) -> None:
        for size in (self.ring_bytes, self.dns_ring_bytes):
            if size < 4096 or size & (size - 1):
                raise UsageError(f"ring size {size} must be a power of two of at least 4096 bytes")
        if not 0 <= self.dns_ttl_floor_s <= self.dns_ttl_cap_s:
            raise UsageError("the DNS TTL floor must be >= 0 and at most the cap")
        if self.allowed_per_sec < 0 or self.allowed_burst < 1:
            raise UsageError("allowed_per_sec must be >= 0 and allowed_burst >= 1")
        if self.fold_window_ns < 0:
            raise UsageError("fold_window_ns must be >= 0")

    def config(self) -> abi.Config:
        wakeup = min(self.wakeup_bytes, self.ring_bytes // 2)
        ttl = (self.dns_ttl_floor_s * 1_000_000_000, self.dns_ttl_cap_s * 1_000_000_000)
        fold = self.fold_window_ns
        if not self.allowed_per_sec:
            return abi.Config(0, 0, wakeup, *ttl, fold)
        interval = 1_000_000_000 // self.allowed_per_sec
        return abi.Config(interval, (self.allowed_burst - 1) * interval, wakeup, *ttl, fold)


def _configure(obj: int, settings: Settings) -> None:
    for ring, ring_size in (
        ("nl_events", settings.ring_bytes),
        ("nl_dns_events", settings.dns_ring_bytes),
    ):
        libbpf.call(
            libbpf.bpf_map__set_max_entries,
            Op.CONFIGURE,
            f"set {ring} size",
            map_handle(obj, ring),
            ring_size,
        )
    rodata = libbpf.call_ptr(
        libbpf.bpf_object__find_map_by_name, Op.CONFIGURE, "find .rodata", obj, b".rodata"
    )
    size = ctypes.c_size_t()
    initial = libbpf.call_ptr(
        libbpf.bpf_map__initial_value, Op.CONFIGURE, "read .rodata", rodata, ctypes.byref(size)
    )
    data = bytearray(ctypes.string_at(initial, size.value))
    var = Btf(libbpf.bpf_object__btf(obj)).datasec(".rodata")["nl_cfg"]
    data[var.offset : var.offset + var.size] = bytes(settings.config())
    buf = (ctypes.c_char * len(data)).from_buffer(data)
    libbpf.call(
        libbpf.bpf_map__set_initial_value, Op.CONFIGURE, "set .rodata", rodata, buf, len(data)
    )


def _select_programs(obj: int, layers: dict[str, str | None]) -> None:
    """Turn off the programs of layers this kernel refuses, so they cannot fail the load."""
    for name in PROGRAMS:
        if not wanted(name, layers):
            libbpf.call(
                libbpf.bpf_program__set_autoload,
                Op.CONFIGURE,
                f"leave out {name}",
                program_handle(obj, name),
                False,
            )


def _open_object(object_path: Path, settings: Settings, layers: dict[str, str | None]) -> int:
    if not object_path.exists():
        raise KernelError(f"BPF object {object_path} is missing; build it with: pip install -e .")
    obj = libbpf.call_ptr(
        libbpf.bpf_object__open_file,
        Op.OPEN,
        f"open object {object_path}",
        bytes(object_path),
        None,
    )
    try:
        _configure(obj, settings)
        _select_programs(obj, layers)
    except BaseException:
        libbpf.bpf_object__close(obj)
        raise
    return obj


def _attach_cgroup(obj: int, name: str, cg_path: Path, cg_fd: int) -> int:
    what = f"attach {PROGRAMS[name].section} to {cg_path}"
    return libbpf.call_ptr(
        libbpf.bpf_program__attach_cgroup, Op.ATTACH, what, program_handle(obj, name), cg_fd
    )


def _swap(plane: Plane, obj: int, name: str, path: Path) -> None:
    """Put this object's program into the pinned link at `path`, in one step."""
    link = libbpf.call_ptr(
        libbpf.bpf_link__open, Op.ATTACH, f"open pinned link {path}", bytes(path)
    )
    plane.keep_link(link)
    info = link_info(libbpf.bpf_link__fd(link))
    if (info.type, info.cgroup_id, info.attach_type) != (
        BPF_LINK_TYPE_CGROUP,
        plane.scope.id,
        PROGRAMS[name].attach_type,
    ):
        raise StateError(
            f"pinned link {path} is attached to cgroup id {info.cgroup_id}, not to the "
            f"scope {plane.scope.path}; stop the agent and run `netlogger teardown`"
        )
    libbpf.call(
        libbpf.bpf_link__update_program,
        Op.ATTACH,
        f"swap {name} into pinned link {path}",
        link,
        program_handle(obj, name),
    )


def _choose_tracing(obj: int) -> dict[str, str]:
    """Before load: leave out each tracing program this kernel refuses; say why."""
    refused = {}
    for name in TRACING:
        if not TRACING_FEATURES[name].probe():
            libbpf.bpf_program__set_autoload(program_handle(obj, name), False)
            refused[name] = f"refused by this kernel ({PROGRAMS[name].section})"
    return refused


def _attach_tracing(plane: Plane, obj: int, refused: dict[str, str], undo: ExitStack) -> None:
    """Attach each tracing program, then move its pin to the new link and drop the old.

    Tracing links cannot swap programs in place: for a moment old and new both
    run, which is harmless (they write the same entries), and there is no gap.
    """
    plane.tracing.update(refused)
    for name in TRACING:
        if name in refused:
            continue
        path = pins.link_path(plane.pin_root, name)
        link = libbpf.call_ptr(
            libbpf.bpf_program__attach,
            Op.ATTACH,
            f"attach {PROGRAMS[name].section}",
            program_handle(obj, name),
        )
        plane.keep_link(link)
        old = libbpf.bpf_link__open(bytes(path)) if path.exists() else None
        if old:
            path.unlink()
        libbpf.call(libbpf.bpf_link__pin, Op.PIN, f"pin link {name} at {path}", link, bytes(path))
        if old:
            libbpf.bpf_link__destroy(old)  # no pin, no fd: the old program detaches
            plane.report.swapped.append(name)
        else:
            undo.callback(path.unlink, missing_ok=True)
            plane.report.attached.append(name)
        plane.tracing[name] = "attached"


def _scope_programs(layers: dict[str, str | None]) -> list[str]:
    """The programs this kernel takes that attach to the scope cgroup."""
    return [n for n, p in PROGRAMS.items() if p.on_scope and wanted(n, layers)]


def _attach(plane: Plane, obj: int, scope_fd: int, undo: ExitStack) -> None:
    # A refused layer's link pinned under an earlier kernel stays as it is.
    for name in _scope_programs(plane.layers):
        path = pins.link_path(plane.pin_root, name)
        if path.exists():
            _swap(plane, obj, name, path)
            plane.report.swapped.append(name)
            continue
        link = _attach_cgroup(obj, name, plane.scope.path, scope_fd)
        plane.keep_link(link)
        libbpf.call(libbpf.bpf_link__pin, Op.PIN, f"pin link {name} at {path}", link, bytes(path))
        undo.callback(path.unlink, missing_ok=True)
        plane.report.attached.append(name)


def load(
    pin_root: Path, scope: Cgroup, settings: Settings | None = None, object_path: Path = OBJECT
) -> Plane:
    """Load or take over the pinned kernel state under `pin_root`, attached at `scope`.

    On failure, whatever this call pinned is unpinned again; pinned state it
    found stays as it was.
    """
    features.require()
    layers = features.layers()
    lock_fd = pins.prepare(pin_root)
    try:
        obj = _open_object(object_path, settings or Settings(), layers)
    except BaseException:
        os.close(lock_fd)
        raise
    plane: Plane | None = None

    def release() -> None:
        if plane:
            plane.close()
        else:
            libbpf.bpf_object__close(obj)
            os.close(lock_fd)

    with ExitStack() as undo, ExitStack() as fds:
        undo.callback(release)
        pinned = pins.open_maps(pin_root, fds)
        old = migrate.read_record(pinned)
        plan = migrate.plan({n: map_handle(obj, n) for n in MAPS}, pinned, old)
        refused = _choose_tracing(obj)
        libbpf.call(libbpf.bpf_object__load, Op.LOAD, f"load {object_path.name}", obj)
        plane = Plane(pin_root, scope, obj, lock_fd, layers)
        plane.report = plan
        for name in plan.migrated:
            migrate.carry(name, pinned[name], map_fd(obj, name), old)
        migrate.write_record(plane.meta)
        for cgroup_id, _ in plane.enrollments.items():
            plane.add_dns_sets(cgroup_id)  # enrolled before DNS sets existed
            # nl_folds is not carried: after a layout change, folding goes on from empty.
            plane.folds.insert_new(cgroup_id, abi.Folds())

        scope_fd = os.open(scope.path, os.O_RDONLY | os.O_DIRECTORY)
        fds.callback(os.close, scope_fd)
        _attach(plane, obj, scope_fd, undo)
        _attach_tracing(plane, obj, refused, undo)
        pins.pin_maps(pin_root, {n: map_fd(obj, n) for n in MAPS}, plan.migrated, undo)
        undo.pop_all()
    return plane


# What one program may make the verifier process (BPF_COMPLEXITY_LIMIT_INSNS, since 5.2).
VERIFIER_BUDGET = 1_000_000


def trial(cg: Cgroup, object_path: Path = OBJECT) -> dict[str, int]:
    """Load every program this kernel takes, attach the scope ones to `cg` unpinned, then
    take it all away again. Returns, per program loaded, how many instructions the
    verifier processed to accept it (VERIFIER_BUDGET at most; 0 before Linux 5.16)."""
    features.require()
    layers = features.layers()
    obj = _open_object(object_path, Settings(), layers)
    links: list[int] = []
    try:
        refused = _choose_tracing(obj)  # loaded if the kernel takes them, attached by load()
        libbpf.call(libbpf.bpf_object__load, Op.LOAD, f"load {object_path.name}", obj)
        fd = os.open(cg.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in _scope_programs(layers):
                links.append(_attach_cgroup(obj, name, cg.path, fd))
        finally:
            os.close(fd)
        return {
            name: prog_info(libbpf.bpf_program__fd(program_handle(obj, name))).verified_insns
            for name in PROGRAMS
            if wanted(name, layers) and name not in refused
        }
    finally:
        for link in links:
            libbpf.bpf_link__destroy(link)
        libbpf.bpf_object__close(obj)


@contextmanager
def loaded(pin_root: Path, scope: Cgroup, settings: Settings | None = None) -> Iterator[Plane]:
    plane = load(pin_root, scope, settings)
    try:
        yield plane
    finally:
        plane.close()
