"""What the kernel says about a map, link or program fd (BPF_OBJ_GET_INFO_BY_FD).

Only the leading fields netlogger reads are declared; the kernel fills as
much as the buffer holds.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from netlogger.kernel import libbpf

u32, u64 = ctypes.c_uint32, ctypes.c_uint64

BPF_LINK_TYPE_CGROUP = 3


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("key_size", u32),
        ("value_size", u32),
        ("max_entries", u32),
        ("map_flags", u32),
        ("name", ctypes.c_char * 16),
    ]


class _LinkInfo(ctypes.Structure):
    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("prog_id", u32),
        ("pad", u32),
        ("cgroup_id", u64),
        ("attach_type", u32),
        ("pad2", u32),
    ]


class _ProgInfo(ctypes.Structure):
    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("skip", ctypes.c_uint8 * 56),
        ("name", ctypes.c_char * 16),
        ("skip2", ctypes.c_uint8 * 112),
        ("run_time_ns", u64),
        ("run_cnt", u64),
        ("recursion_misses", u64),
        ("verified_insns", u32),  # 5.16+; 0 where the kernel does not fill it
    ]


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


@dataclass(frozen=True)
class LinkInfo:
    type: int
    id: int
    prog_id: int
    cgroup_id: int
    attach_type: int


@dataclass(frozen=True)
class ProgInfo:
    id: int
    name: str
    run_time_ns: int
    run_cnt: int
    verified_insns: int  # instructions the verifier processed to accept it


def _fill(fd: int, info: ctypes.Structure, what: str) -> None:
    size = u32(ctypes.sizeof(info))
    libbpf.call(
        libbpf.bpf_obj_get_info_by_fd,
        libbpf.Op.QUERY,
        what,
        fd,
        ctypes.byref(info),
        ctypes.byref(size),
    )


def map_info(fd: int) -> MapInfo:
    i = _MapInfo()
    _fill(fd, i, "map info")
    return MapInfo(
        i.type, i.id, i.key_size, i.value_size, i.max_entries, i.map_flags, i.name.decode()
    )


def link_info(fd: int) -> LinkInfo:
    i = _LinkInfo()
    _fill(fd, i, "link info")
    return LinkInfo(i.type, i.id, i.prog_id, i.cgroup_id, i.attach_type)


def prog_info(fd: int) -> ProgInfo:
    i = _ProgInfo()
    _fill(fd, i, "program info")
    return ProgInfo(i.id, i.name.decode(), i.run_time_ns, i.run_cnt, i.verified_insns)
