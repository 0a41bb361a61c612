"""Read struct, enum and data-section layouts out of BTF.

The loader uses it to find where loader-set constants live in .rodata; the ABI
test uses it to hold the Python mirror (abi.py) against the compiled object.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from netlogger.errors import KernelError
from netlogger.kernel import libbpf

KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 2, 3, 4, 5, 6
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 8, 9, 10, 11
KIND_DATASEC, KIND_TYPE_TAG, KIND_ENUM64 = 15, 18, 19
_MODIFIERS = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}

_u32 = ctypes.c_uint32


class _Type(ctypes.Structure):
    _fields_ = [("name_off", _u32), ("info", _u32), ("size_or_type", _u32)]


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # bytes
    size: int  # bytes


@dataclass(frozen=True)
class Struct:
    name: str
    size: int
    members: tuple[Member, ...]


class Btf:
    """A borrowed or owned `struct btf *`; only reads."""

    def __init__(self, handle: int) -> None:
        self._h = handle

    def _type(self, type_id: int) -> tuple[_Type, int]:
        ptr = libbpf.btf__type_by_id(self._h, type_id)
        if not ptr:
            raise KernelError(f"BTF type {type_id} not found")
        return _Type.from_address(ptr), ptr + ctypes.sizeof(_Type)

    def _name(self, off: int) -> str:
        raw = libbpf.btf__name_by_offset(self._h, off)
        return raw.decode() if raw else ""

    def _find(self, name: str, kinds: set[int]) -> int:
        for type_id in range(1, libbpf.btf__type_cnt(self._h)):
            t, _ = self._type(type_id)
            if (t.info >> 24) & 0x1F in kinds and self._name(t.name_off) == name:
                return type_id
        raise KernelError(f"BTF has no type named {name!r}")

    def _resolve(self, type_id: int) -> tuple[_Type, int]:
        t, extra = self._type(type_id)
        while (t.info >> 24) & 0x1F in _MODIFIERS:
            t, extra = self._type(t.size_or_type)
        return t, extra

    def size_of(self, type_id: int) -> int:
        t, extra = self._resolve(type_id)
        kind = (t.info >> 24) & 0x1F
        if kind == KIND_ARRAY:
            elem, _index, nelems = (_u32 * 3).from_address(extra)
            return self.size_of(elem) * nelems
        if kind == KIND_PTR:
            return 8
        return int(t.size_or_type)

    def struct(self, name: str) -> Struct:
        t, extra = self._type(self._find(name, {KIND_STRUCT, KIND_UNION}))
        vlen, kflag = t.info & 0xFFFF, t.info >> 31
        members = []
        for i in range(vlen):
            name_off, type_id, offset = (_u32 * 3).from_address(extra + 12 * i)
            bits = offset & 0xFFFFFF if kflag else offset
            members.append(Member(self._name(name_off), bits // 8, self.size_of(type_id)))
        return Struct(name, t.size_or_type, tuple(members))

    def enum(self, name: str) -> dict[str, int]:
        t, extra = self._type(self._find(name, {KIND_ENUM, KIND_ENUM64}))
        kind, vlen = (t.info >> 24) & 0x1F, t.info & 0xFFFF
        values = {}
        for i in range(vlen):
            if kind == KIND_ENUM:
                name_off, raw = (_u32 * 2).from_address(extra + 8 * i)
                val = ctypes.c_int32(raw).value
            else:
                name_off, lo, hi = (_u32 * 3).from_address(extra + 12 * i)
                val = lo | (hi << 32)
            values[self._name(name_off)] = val
        return values

    def datasec(self, name: str) -> dict[str, Member]:
        """Variables of a data section with their offsets (after libbpf's fixup)."""
        t, extra = self._type(self._find(name, {KIND_DATASEC}))
        out = {}
        for i in range(t.info & 0xFFFF):
            var_id, offset, size = (_u32 * 3).from_address(extra + 12 * i)
            var, _ = self._type(var_id)
            var_name = self._name(var.name_off)
            out[var_name] = Member(var_name, offset, size)
        return out


@contextmanager
def open_file(path: Path) -> Iterator[Btf]:
    handle = libbpf.call_ptr(
        libbpf.btf__parse, libbpf.Op.OPEN, f"read BTF of {path}", str(path).encode(), None
    )
    try:
        yield Btf(handle)
    finally:
        libbpf.btf__free(handle)
