"""Load the BPF object, attach it once to the scope cgroup, pin everything.

The lifecycle reads as libbpf-bootstrap's: open -> configure (.rodata, ring
size) -> reuse pinned maps -> load -> migrate maps whose layout changed ->
attach, or swap into pinned links -> pin. A loader that finds pinned links
swaps its programs in with bpf_link__update_program, so an enrolled cgroup is
never without a program, across crashes and upgrades alike.

Pin root layout:  <pin_root>/maps/<map name>   <pin_root>/links/<program name>
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netlogger.errors import KernelError, StateError, UsageError
from netlogger.kernel import abi, features, libbpf, mounts
from netlogger.kernel.btf import Btf
from netlogger.kernel.cgroup import Cgroup
from netlogger.kernel.maps import BpfMap, PerCpuArray
from netlogger.kernel.objinfo import BPF_LINK_TYPE_CGROUP, link_info, map_info, prog_info
from netlogger.kernel.ringbuf import RingReader

OBJECT = Path(__file__).resolve().parents[1] / "_objects" / "netlogger.bpf.o"
DEFAULT_PIN_ROOT = Path("/sys/fs/bpf/netlogger")

u32, u64 = ctypes.c_uint32, ctypes.c_uint64


@dataclass(frozen=True)
class MapSpec:
    key: Any
    value: Any
    carry: bool  # entries are carried into a new map when the layout changes


MAPS: dict[str, MapSpec] = {
    "nl_events": MapSpec(None, None, carry=False),
    "nl_enrollments": MapSpec(u64, abi.Enrollment, carry=True),
    "nl_cgroup_state": MapSpec(u64, abi.CgroupState, carry=True),
    "nl_cpu_loss": MapSpec(u32, abi.CpuLoss, carry=False),
    "nl_policies": MapSpec(u32, abi.Policy, carry=True),
    "nl_cidrs": MapSpec(abi.CidrKey, abi.CidrRules, carry=True),
    "nl_resolvers": MapSpec(abi.ResolverKey, u32, carry=True),
    "nl_levels": MapSpec(u32, abi.Levels, carry=True),
    "nl_labels": MapSpec(u64, abi.Labels, carry=True),
    "nl_reported": MapSpec(u64, abi.Reported, carry=True),
    "nl_meta": MapSpec(u32, abi.Meta, carry=False),
}

# Program name -> (section, attach type) of the cgroup hook it runs on.
PROGRAMS: dict[str, tuple[str, int]] = {
    "nl_connect4": ("cgroup/connect4", 10),
    "nl_connect6": ("cgroup/connect6", 11),
    "nl_sendmsg4": ("cgroup/sendmsg4", 14),
    "nl_sendmsg6": ("cgroup/sendmsg6", 15),
    "nl_sock_create": ("cgroup/sock_create", 2),
}


@dataclass(frozen=True)
class Settings:
    ring_bytes: int = 8 << 20
    allowed_per_sec: int = 1000  # allowed records per enrolled cgroup; 0 = no limit
    allowed_burst: int = 2000
    wakeup_bytes: int = 64 << 10  # ring bytes waiting before the kernel wakes the reader

    def __post_init__(self) -> None:
        size = self.ring_bytes
        if size < 4096 or size & (size - 1):
            raise UsageError(f"ring size {size} must be a power of two of at least 4096 bytes")
        if self.allowed_per_sec < 0 or self.allowed_burst < 1:
            raise UsageError("allowed_per_sec must be >= 0 and allowed_burst >= 1")

    def config(self) -> abi.Config:
        wakeup = min(self.wakeup_bytes, self.ring_bytes // 2)
        if not self.allowed_per_sec:
            return abi.Config(0, 0, wakeup)
        interval = 1_000_000_000 // self.allowed_per_sec
        return abi.Config(interval, (self.allowed_burst - 1) * interval, wakeup)


@dataclass
class LoadReport:
    reused: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    migrated: list[str] = field(default_factory=list)
    attached: list[str] = field(default_factory=list)
    swapped: list[str] = field(default_factory=list)


def _layout_of(ctype: Any) -> list[list[Any]]:
    if ctype is None:
        return []
    if issubclass(ctype, ctypes.Structure):
        return [list(f) for f in abi.layout(ctype)]
    return [["", 0, ctypes.sizeof(ctype)]]


def current_layout() -> dict[str, dict[str, list[list[Any]]]]:
    return {n: {"key": _layout_of(s.key), "value": _layout_of(s.value)} for n, s in MAPS.items()}


def _convert(raw: bytes, old: list[list[Any]], new_type: Any) -> bytes:
    """Re-lay one key or value by field name: new fields start at zero, gone ones drop.

    Fields of at most 8 bytes are integers and keep their value across a size change;
    longer ones are byte strings and are zero-padded, or cut only where they hold zeros.
    """
    new = {name: (off, size) for name, off, size in _layout_of(new_type)}
    out = bytearray(ctypes.sizeof(new_type))
    for name, off, size in old:
        if name.startswith("pad") or name not in new:
            continue
        new_off, new_size = new[name]
        if off + size > len(raw):
            raise StateError(f"layout record puts {name!r} past the end of a {len(raw)}-byte entry")
        chunk = raw[off : off + size]
        if size != new_size and max(size, new_size) <= 8:
            value = int.from_bytes(chunk, sys.byteorder)
            if value >= 1 << (8 * new_size):
                raise StateError(f"cannot migrate field {name!r}: {value} needs {size} bytes")
            chunk = value.to_bytes(new_size, sys.byteorder)
        elif size != new_size:
            if any(chunk[new_size:]):
                raise StateError(
                    f"cannot migrate field {name!r}: its value is longer than {new_size} bytes"
                )
            chunk = chunk[:new_size].ljust(new_size, b"\0")
        out[new_off : new_off + new_size] = chunk
    return bytes(out)


def _ensure_bpffs(pin_root: Path) -> None:
    if any(m.path == pin_root or m.path in pin_root.parents for m in mounts.of_type("bpf")):
        return
    if Path("/sys/fs/bpf") not in pin_root.parents:
        raise UsageError(
            f"pin root {pin_root} is not on a bpf filesystem; use one under /sys/fs/bpf"
        )
    subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)


class Plane:
    """The live kernel state under one pin root: typed maps, the ring, the programs.

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
            return BpfMap(name, _map_fd(obj, name), MAPS[name].key, MAPS[name].value)

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
            "nl_cpu_loss", _map_fd(obj, "nl_cpu_loss"), abi.CpuLoss
        )
        self.ring_fd = _map_fd(obj, "nl_events")
        self.ring_bytes = int(libbpf.bpf_map__max_entries(_map(obj, "nl_events")))
        self.prog_fds = {name: int(libbpf.bpf_program__fd(_prog(obj, name))) for name in PROGRAMS}

    def reader(self) -> RingReader:
        """A batch reader of this plane's ring, tuned for its fixed-size records."""
        return RingReader(self.ring_fd, self.ring_bytes, ctypes.sizeof(abi.Event))

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


def _map(obj: int, name: str) -> int:
    return int(libbpf.bpf_object__find_map_by_name(obj, name.encode()))


def _map_fd(obj: int, name: str) -> int:
    return int(libbpf.bpf_map__fd(_map(obj, name)))


def _prog(obj: int, name: str) -> int:
    return int(libbpf.bpf_object__find_program_by_name(obj, name.encode()))


def _lock(pin_root: Path) -> int:
    fd = os.open(pin_root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateError(
            f"another netlogger agent is using pin root {pin_root}; stop it, "
            "or give this one its own --pin-root"
        ) from None
    return fd


def _read_meta(pinned: dict[str, int]) -> dict[str, Any] | None:
    if "nl_meta" not in pinned:
        return None
    meta = BpfMap("nl_meta", pinned["nl_meta"], u32, abi.Meta).lookup(0)
    if meta is None or not meta.len:
        return None
    return json.loads(meta.layout[: meta.len])


def _write_meta(plane: Plane) -> None:
    text = json.dumps(current_layout(), separators=(",", ":")).encode()
    plane.meta.update(0, abi.Meta(abi.ABI_VERSION, len(text), text))


def _configure(obj: int, settings: Settings) -> None:
    libbpf.call(
        libbpf.bpf_map__set_max_entries,
        "set ring size",
        _map(obj, "nl_events"),
        settings.ring_bytes,
    )
    rodata = libbpf.call_ptr(libbpf.bpf_object__find_map_by_name, "find .rodata", obj, b".rodata")
    size = ctypes.c_size_t()
    initial = libbpf.call_ptr(
        libbpf.bpf_map__initial_value, "read .rodata", rodata, ctypes.byref(size)
    )
    data = bytearray(ctypes.string_at(initial, size.value))
    var = Btf(libbpf.bpf_object__btf(obj)).datasec(".rodata")["nl_cfg"]
    data[var.offset : var.offset + var.size] = bytes(settings.config())
    buf = (ctypes.c_char * len(data)).from_buffer(data)
    libbpf.call(libbpf.bpf_map__set_initial_value, "set .rodata", rodata, buf, len(data))


def _reusable(obj_map: int, pinned_fd: int, old: dict[str, Any] | None, name: str) -> bool:
    info = map_info(pinned_fd)
    same_shape = (info.type, info.key_size, info.value_size, info.max_entries, info.flags) == (
        libbpf.bpf_map__type(obj_map),
        libbpf.bpf_map__key_size(obj_map),
        libbpf.bpf_map__value_size(obj_map),
        libbpf.bpf_map__max_entries(obj_map),
        libbpf.bpf_map__map_flags(obj_map),
    )
    return same_shape and old is not None and old.get(name) == current_layout()[name]


def _carry(name: str, old_fd: int, new_fd: int, old: dict[str, Any] | None) -> None:
    spec = MAPS[name]
    if not spec.carry:
        return
    if old is None or name not in old:
        raise StateError(
            f"pinned map {name} has no layout record, so its entries cannot be migrated; "
            "remove the pinned state with `netlogger teardown` and enroll again"
        )
    info = map_info(old_fd)
    raw = BpfMap(name, old_fd, ctypes.c_uint8 * info.key_size, ctypes.c_uint8 * info.value_size)
    new = BpfMap(name, new_fd, spec.key, spec.value)
    for key, value in raw.items():
        k = _convert(bytes(key), old[name]["key"], spec.key)
        v = _convert(bytes(value), old[name]["value"], spec.value)
        new.update(spec.key.from_buffer_copy(k), spec.value.from_buffer_copy(v))


def _attach(plane: Plane, obj: int, scope_fd: int, stack: ExitStack) -> None:
    for name, (section, attach_type) in PROGRAMS.items():
        prog = _prog(obj, name)
        path = plane.pin_root / "links" / name
        if path.exists():
            link = libbpf.call_ptr(libbpf.bpf_link__open, f"open link {path}", bytes(path))
            plane._links.append(link)
            info = link_info(libbpf.bpf_link__fd(link))
            if (info.type, info.cgroup_id, info.attach_type) != (
                BPF_LINK_TYPE_CGROUP,
                plane.scope.id,
                attach_type,
            ):
                raise StateError(
                    f"pinned link {path} is attached to cgroup id {info.cgroup_id}, not to the "
                    f"scope {plane.scope.path}; stop the agent and run `netlogger teardown`"
                )
            libbpf.call(libbpf.bpf_link__update_program, f"update link {path}", link, prog)
            plane.report.swapped.append(name)
        else:
            what = f"attach {section} to {plane.scope.path}"
            link = libbpf.call_ptr(libbpf.bpf_program__attach_cgroup, what, prog, scope_fd)
            plane._links.append(link)
            libbpf.call(libbpf.bpf_link__pin, f"pin link {path}", link, bytes(path))
            stack.callback(path.unlink, missing_ok=True)
            plane.report.attached.append(name)


def _pin_maps(plane: Plane, obj: int, replace: list[str], stack: ExitStack) -> None:
    for name in MAPS:
        path = plane.pin_root / "maps" / name
        if name in replace:
            path.unlink()  # the old map lives on only while old programs still use it
        elif path.exists():
            continue
        libbpf.call(libbpf.bpf_obj_pin, f"pin map {path}", _map_fd(obj, name), bytes(path))
        stack.callback(path.unlink, missing_ok=True)


def _open_pinned_maps(pin_root: Path, stack: ExitStack) -> dict[str, int]:
    pinned = {}
    for name in MAPS:
        path = pin_root / "maps" / name
        if path.exists():
            pinned[name] = libbpf.call(libbpf.bpf_obj_get, f"open pinned map {path}", bytes(path))
            stack.callback(os.close, pinned[name])
    return pinned


def _plan_maps(obj: int, pinned: dict[str, int], old: dict[str, Any] | None) -> LoadReport:
    """Reuse each pinned map whose shape and layout match; mark the rest for migration."""
    report = LoadReport()
    for name in MAPS:
        if name not in pinned:
            report.created.append(name)
        elif _reusable(_map(obj, name), pinned[name], old, name):
            libbpf.call(
                libbpf.bpf_map__reuse_fd, f"reuse map {name}", _map(obj, name), pinned[name]
            )
            report.reused.append(name)
        else:
            report.migrated.append(name)
    return report


def _open_object(object_path: Path, settings: Settings) -> int:
    if not object_path.exists():
        raise KernelError(f"BPF object {object_path} is missing; build it with: pip install -e .")
    obj = libbpf.call_ptr(
        libbpf.bpf_object__open_file, f"open {object_path}", bytes(object_path), None
    )
    try:
        _configure(obj, settings)
    except BaseException:
        libbpf.bpf_object__close(obj)
        raise
    return obj


def load(
    pin_root: Path, scope: Cgroup, settings: Settings | None = None, object_path: Path = OBJECT
) -> Plane:
    """Load or take over the pinned kernel state under `pin_root`, attached at `scope`.

    On failure, whatever this call pinned is unpinned again; pinned state it
    found stays as it was.
    """
    features.require()
    _ensure_bpffs(pin_root)
    for sub in ("maps", "links"):
        (pin_root / sub).mkdir(parents=True, exist_ok=True)
    lock_fd = _lock(pin_root)
    try:
        obj = _open_object(object_path, settings or Settings())
    except BaseException:
        os.close(lock_fd)
        raise
    plane: Plane | None = None
    with ExitStack() as undo, ExitStack() as fds:
        undo.callback(
            lambda: plane.close() if plane else (libbpf.bpf_object__close(obj), os.close(lock_fd))
        )
        pinned = _open_pinned_maps(pin_root, fds)
        old = _read_meta(pinned)
        report = _plan_maps(obj, pinned, old)
        libbpf.call(libbpf.bpf_object__load, f"load {object_path.name}", obj)
        plane = Plane(pin_root, scope, obj, lock_fd)
        plane.report = report
        for name in report.migrated:
            _carry(name, pinned[name], _map_fd(obj, name), old)
        _write_meta(plane)

        scope_fd = os.open(scope.path, os.O_RDONLY | os.O_DIRECTORY)
        fds.callback(os.close, scope_fd)
        _attach(plane, obj, scope_fd, undo)
        _pin_maps(plane, obj, report.migrated, undo)
        undo.pop_all()
    return plane


def trial(cg: Cgroup, object_path: Path = OBJECT) -> list[str]:
    """Load every program and attach it to `cg` unpinned, then take it all away again."""
    features.require()
    obj = _open_object(object_path, Settings())
    links: list[int] = []
    try:
        libbpf.call(libbpf.bpf_object__load, f"load {object_path.name}", obj)
        fd = os.open(cg.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name, (section, _) in PROGRAMS.items():
                links.append(
                    libbpf.call_ptr(
                        libbpf.bpf_program__attach_cgroup,
                        f"attach {section} to {cg.path}",
                        _prog(obj, name),
                        fd,
                    )
                )
        finally:
            os.close(fd)
        return list(PROGRAMS)
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


def teardown(pin_root: Path) -> list[str]:
    """Detach every pinned link and drop every pinned map under `pin_root`."""
    if not pin_root.is_dir():
        return []
    os.close(_lock(pin_root))  # refuses while an agent holds it
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
