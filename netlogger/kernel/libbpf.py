"""The libbpf symbols netlogger calls, through ctypes, and nothing more.

libbpf >= 1.0 reports failure as a negative errno (int functions) or NULL with
errno set (pointer functions); `call` and `call_ptr` turn both into our
KernelError tree in one place, `error_for`. The caller says what it was doing
(an `Op` and the words for people), and the Op, not the wording, picks the
error type. libbpf's own log goes to the
`netlogger.libbpf` logger; the last lines are kept so a load failure can
carry the verifier's reasoning.
"""

from __future__ import annotations

import collections
import ctypes
import enum
import errno as errnos
import logging
import os
from collections.abc import Callable
from typing import Any

from netlogger.errors import (
    CAPABILITY_HINT,
    AttachError,
    KernelError,
    LoadError,
    MapError,
    NotSupportedError,
    PrivilegeError,
)

log = logging.getLogger("netlogger.libbpf")

c_int, c_uint, c_uint32, c_uint64 = ctypes.c_int, ctypes.c_uint, ctypes.c_uint32, ctypes.c_uint64
c_size_t, c_char_p, c_void_p = ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p


def _load() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        raise NotSupportedError("libbpf.so.1 (apt-get install libbpf1)", "5.10") from exc


_lib = _load()
_libc = ctypes.CDLL(None, use_errno=True)


def _bind(name: str, restype: Any, *argtypes: Any) -> Any:
    fn = getattr(_lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


# Opaque libbpf handles.
Object = c_void_p
Map = c_void_p
Program = c_void_p
Link = c_void_p
Btf = c_void_p

bpf_object__open_file = _bind("bpf_object__open_file", Object, c_char_p, c_void_p)
bpf_object__load = _bind("bpf_object__load", c_int, Object)
bpf_object__close = _bind("bpf_object__close", None, Object)
bpf_object__find_map_by_name = _bind("bpf_object__find_map_by_name", Map, Object, c_char_p)
bpf_object__find_program_by_name = _bind(
    "bpf_object__find_program_by_name", Program, Object, c_char_p
)
bpf_object__btf = _bind("bpf_object__btf", Btf, Object)

bpf_map__fd = _bind("bpf_map__fd", c_int, Map)
bpf_map__set_max_entries = _bind("bpf_map__set_max_entries", c_int, Map, c_uint32)
bpf_map__reuse_fd = _bind("bpf_map__reuse_fd", c_int, Map, c_int)
bpf_map__set_initial_value = _bind("bpf_map__set_initial_value", c_int, Map, c_void_p, c_size_t)
bpf_map__initial_value = _bind("bpf_map__initial_value", c_void_p, Map, ctypes.POINTER(c_size_t))
bpf_map__type = _bind("bpf_map__type", c_uint, Map)
bpf_map__key_size = _bind("bpf_map__key_size", c_uint32, Map)
bpf_map__value_size = _bind("bpf_map__value_size", c_uint32, Map)
bpf_map__max_entries = _bind("bpf_map__max_entries", c_uint32, Map)
bpf_map__map_flags = _bind("bpf_map__map_flags", c_uint32, Map)

bpf_program__fd = _bind("bpf_program__fd", c_int, Program)
bpf_program__section_name = _bind("bpf_program__section_name", c_char_p, Program)
bpf_program__expected_attach_type = _bind("bpf_program__expected_attach_type", c_uint, Program)
bpf_object__next_program = _bind("bpf_object__next_program", Program, Object, Program)
bpf_program__name = _bind("bpf_program__name", c_char_p, Program)
bpf_program__attach_cgroup = _bind("bpf_program__attach_cgroup", Link, Program, c_int)
bpf_program__attach = _bind("bpf_program__attach", Link, Program)
bpf_program__set_autoload = _bind("bpf_program__set_autoload", c_int, Program, ctypes.c_bool)

bpf_link__open = _bind("bpf_link__open", Link, c_char_p)
bpf_link__pin = _bind("bpf_link__pin", c_int, Link, c_char_p)
bpf_link__update_program = _bind("bpf_link__update_program", c_int, Link, Program)
bpf_link__destroy = _bind("bpf_link__destroy", c_int, Link)
bpf_link__fd = _bind("bpf_link__fd", c_int, Link)

bpf_obj_get = _bind("bpf_obj_get", c_int, c_char_p)
bpf_obj_pin = _bind("bpf_obj_pin", c_int, c_int, c_char_p)
bpf_obj_get_info_by_fd = _bind(
    "bpf_obj_get_info_by_fd", c_int, c_int, c_void_p, ctypes.POINTER(c_uint32)
)
bpf_map_create = _bind(
    "bpf_map_create", c_int, c_uint, c_char_p, c_uint32, c_uint32, c_uint32, c_void_p
)  # opts: a MapCreateOpts pointer or None


class ProgLoadOpts(ctypes.Structure):
    """struct bpf_prog_load_opts (libbpf >= 1.0), up to the verifier log fields."""

    _fields_ = [
        ("sz", c_size_t), ("attempts", c_int), ("expected_attach_type", c_uint),
        ("prog_btf_fd", c_uint32), ("prog_flags", c_uint32), ("prog_ifindex", c_uint32),
        ("kern_version", c_uint32), ("attach_btf_id", c_uint32), ("attach_prog_fd", c_uint32),
        ("attach_btf_obj_fd", c_uint32), ("fd_array", c_void_p), ("func_info", c_void_p),
        ("func_info_cnt", c_uint32), ("func_info_rec_size", c_uint32), ("line_info", c_void_p),
        ("line_info_cnt", c_uint32), ("line_info_rec_size", c_uint32), ("log_level", c_uint32),
        ("log_size", c_uint32), ("log_buf", c_void_p),
    ]  # fmt: skip


class MapCreateOpts(ctypes.Structure):
    """struct bpf_map_create_opts (libbpf >= 1.0)."""

    _fields_ = [
        ("sz", c_size_t), ("btf_fd", c_uint32), ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32), ("btf_vmlinux_value_type_id", c_uint32),
        ("inner_map_fd", c_uint32), ("map_flags", c_uint32), ("map_extra", c_uint64),
        ("numa_node", c_uint32), ("map_ifindex", c_uint32),
    ]  # fmt: skip


bpf_prog_load = _bind(
    "bpf_prog_load", c_int, c_uint, c_char_p, c_char_p, c_void_p, c_size_t,
    ctypes.POINTER(ProgLoadOpts),
)  # fmt: skip


class TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts (libbpf >= 0.7)."""

    _fields_ = [
        ("sz", c_size_t), ("data_in", c_void_p), ("data_out", c_void_p),
        ("data_size_in", c_uint32), ("data_size_out", c_uint32), ("ctx_in", c_void_p),
        ("ctx_out", c_void_p), ("ctx_size_in", c_uint32), ("ctx_size_out", c_uint32),
        ("retval", c_uint32), ("repeat", c_int), ("duration", c_uint32), ("flags", c_uint32),
        ("cpu", c_uint32), ("batch_size", c_uint32),
    ]  # fmt: skip


bpf_prog_test_run_opts = _bind("bpf_prog_test_run_opts", c_int, c_int, ctypes.POINTER(TestRunOpts))
bpf_link_create = _bind("bpf_link_create", c_int, c_int, c_int, c_uint, c_void_p)
bpf_map_update_elem = _bind("bpf_map_update_elem", c_int, c_int, c_void_p, c_void_p, c_uint64)
bpf_map_lookup_elem = _bind("bpf_map_lookup_elem", c_int, c_int, c_void_p, c_void_p)
bpf_map_delete_elem = _bind("bpf_map_delete_elem", c_int, c_int, c_void_p)
bpf_map_get_fd_by_id = _bind("bpf_map_get_fd_by_id", c_int, c_uint32)
bpf_map_get_next_key = _bind("bpf_map_get_next_key", c_int, c_int, c_void_p, c_void_p)
bpf_raw_tracepoint_open = _bind("bpf_raw_tracepoint_open", c_int, c_char_p, c_int)
libbpf_find_vmlinux_btf_id = _bind("libbpf_find_vmlinux_btf_id", c_int, c_char_p, c_uint)
bpf_enable_stats = _bind("bpf_enable_stats", c_int, c_uint)

btf__parse = _bind("btf__parse", Btf, c_char_p, c_void_p)
btf__free = _bind("btf__free", None, Btf)
btf__type_cnt = _bind("btf__type_cnt", c_uint32, Btf)
btf__type_by_id = _bind("btf__type_by_id", c_void_p, Btf, c_uint32)
btf__name_by_offset = _bind("btf__name_by_offset", c_char_p, Btf, c_uint32)

libbpf_find_vmlinux_btf_id = _bind("libbpf_find_vmlinux_btf_id", c_int, c_char_p, c_uint)


class TcHook(ctypes.Structure):
    """struct bpf_tc_hook."""

    _fields_ = [
        ("sz", c_size_t),
        ("ifindex", c_int),
        ("attach_point", c_uint),
        ("parent", c_uint32),
    ]


class TcOpts(ctypes.Structure):
    """struct bpf_tc_opts."""

    _fields_ = [
        ("sz", c_size_t), ("prog_fd", c_int), ("flags", c_uint32), ("prog_id", c_uint32),
        ("handle", c_uint32), ("priority", c_uint32),
    ]  # fmt: skip


BPF_TC_INGRESS = 1
BPF_TC_F_REPLACE = 1
bpf_tc_hook_create = _bind("bpf_tc_hook_create", c_int, ctypes.POINTER(TcHook))
bpf_tc_attach = _bind("bpf_tc_attach", c_int, ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts))
bpf_tc_detach = _bind("bpf_tc_detach", c_int, ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts))
bpf_tc_query = _bind("bpf_tc_query", c_int, ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts))

libbpf_probe_bpf_map_type = _bind("libbpf_probe_bpf_map_type", c_int, c_uint, c_void_p)
libbpf_num_possible_cpus = _bind("libbpf_num_possible_cpus", c_int)

# The baseline consumer that bench/ compares the batch drain against.
RingSampleFn = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
ring_buffer__new = _bind("ring_buffer__new", c_void_p, c_int, RingSampleFn, c_void_p, c_void_p)
ring_buffer__consume = _bind("ring_buffer__consume", c_int, c_void_p)
ring_buffer__free = _bind("ring_buffer__free", None, c_void_p)

# libbpf_set_print wants a printf-style callback; vsnprintf renders its va_list.
_PrintFn = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
_libbpf_set_print = _bind("libbpf_set_print", c_void_p, _PrintFn)
_vsnprintf = _libc.vsnprintf
_vsnprintf.restype = c_int
_vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]

_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
recent_warnings: collections.deque[str] = collections.deque(maxlen=60)


def _print(level: int, fmt: bytes, args: int) -> int:
    buf = ctypes.create_string_buffer(2048)
    _vsnprintf(buf, len(buf), fmt, args)
    text = buf.value.decode(errors="replace").rstrip("\n")
    if level == 0:
        recent_warnings.extend(text.splitlines())
    log.log(_LEVELS.get(level, logging.DEBUG), "%s", text)
    return 0


_print_cb = _PrintFn(_print)  # module-level: the callback must outlive every libbpf call
_libbpf_set_print(_print_cb)

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_STATS_RUN_TIME = 0


class Op(enum.Enum):
    """What a caller was doing when the kernel or libbpf said no."""

    OPEN = "open"  # an object file, BTF, a pinned map or link
    CONFIGURE = "configure"  # ring size, .rodata, map reuse: before load
    LOAD = "load"  # the verifier's turn
    ATTACH = "attach"  # attach a program, open or swap a pinned link
    PIN = "pin"  # pin a map or link, make the pin root
    MOUNT = "mount"  # mount the bpf filesystem
    MAP = "map"  # read or write map entries
    QUERY = "query"  # object info, CPU count
    RUN = "run"  # run a program (BPF_PROG_TEST_RUN)


# The one errno -> error map: an errno that means "not allowed" wins, whatever
# the operation; otherwise the operation names the error type.
ERRNO_ERRORS: dict[int, type[KernelError]] = {
    errnos.EPERM: PrivilegeError,
    errnos.EACCES: PrivilegeError,
}
OP_ERRORS: dict[Op, type[KernelError]] = {
    Op.OPEN: KernelError,
    Op.CONFIGURE: KernelError,
    Op.LOAD: LoadError,
    Op.ATTACH: AttachError,
    Op.PIN: KernelError,
    Op.MOUNT: KernelError,
    Op.MAP: MapError,
    Op.QUERY: KernelError,
    Op.RUN: KernelError,
}


def error_for(err: int, op: Op, what: str, hint: str = "") -> KernelError:
    """`what` names the object and the operation, for people; `hint` what to do next."""
    reason = f"{what}: {errnos.errorcode.get(err, str(err))} ({os.strerror(err)})"
    cls = ERRNO_ERRORS.get(err, OP_ERRORS[op])
    if cls is PrivilegeError:
        return PrivilegeError(f"{reason}; {CAPABILITY_HINT}", err)
    if hint:
        reason = f"{reason}; {hint}"
    if cls is LoadError:
        return LoadError(reason, err, "\n".join(list(recent_warnings)[-25:]))
    return cls(reason, err)


def raise_for_errno(err: int, op: Op, what: str, hint: str = "") -> None:
    raise error_for(err, op, what, hint)


def call(fn: Callable[..., int], op: Op, what: str, *args: Any) -> int:
    """Call an int-returning libbpf function; negative results raise."""
    if op is Op.LOAD:
        recent_warnings.clear()
    ret = fn(*args)
    if ret < 0:
        raise_for_errno(-ret, op, what)  # libbpf >= 1.0 returns -errno
    return ret


def call_ptr(fn: Callable[..., int | None], op: Op, what: str, *args: Any) -> int:
    """Call a pointer-returning libbpf function; NULL raises with errno."""
    ptr = fn(*args)
    if not ptr:
        raise_for_errno(ctypes.get_errno() or errnos.EINVAL, op, what)
    assert ptr is not None
    return ptr


def possible_cpus() -> int:
    return call(libbpf_num_possible_cpus, Op.QUERY, "count possible CPUs")
