"""Typed access to a BPF map by file descriptor.

Keys and values are the ctypes mirrors of abi.py (or plain c_uint32/c_uint64
for scalar keys, which come back as ints). The map does not own its fd.
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Iterator
from typing import Any, Generic, TypeVar, cast

from netlogger.errors import MapError
from netlogger.kernel import libbpf

K = TypeVar("K")
V = TypeVar("V")

BPF_ANY, BPF_NOEXIST, BPF_EXIST = libbpf.BPF_ANY, libbpf.BPF_NOEXIST, libbpf.BPF_EXIST


def _out(obj: Any) -> Any:
    return obj.value if isinstance(obj, ctypes.c_uint32 | ctypes.c_uint64) else obj


class BpfMap(Generic[K, V]):
    def __init__(self, name: str, fd: int, key_type: Any, value_type: Any) -> None:
        self.name = name
        self.fd = fd
        self.key_type = key_type
        self.value_type = value_type

    def _key(self, key: Any) -> Any:
        return key if isinstance(key, self.key_type) else self.key_type(key)

    def lookup(self, key: K) -> V | None:
        value = self.value_type()
        ret = libbpf.bpf_map_lookup_elem(self.fd, ctypes.byref(self._key(key)), ctypes.byref(value))
        if ret == -errno.ENOENT:
            return None
        if ret < 0:
            libbpf.raise_for_errno(-ret, libbpf.Op.MAP, f"map {self.name}: lookup")
        return cast(V, _out(value))  # V names what value_type reads as (see _out)

    def update(self, key: K, value: V, flags: int = BPF_ANY) -> None:
        val = value if isinstance(value, self.value_type) else self.value_type(value)
        libbpf.call(
            libbpf.bpf_map_update_elem,
            libbpf.Op.MAP,
            f"map {self.name}: update",
            self.fd,
            ctypes.byref(self._key(key)),
            ctypes.byref(val),
            flags,
        )

    def insert_new(self, key: K, value: V) -> bool:
        """Create the entry unless it exists; True when this call created it."""
        try:
            self.update(key, value, BPF_NOEXIST)
        except MapError as exc:
            if exc.errno == errno.EEXIST:
                return False
            raise
        return True

    def delete(self, key: K) -> bool:
        ret = libbpf.bpf_map_delete_elem(self.fd, ctypes.byref(self._key(key)))
        if ret == -errno.ENOENT:
            return False
        if ret < 0:
            libbpf.raise_for_errno(-ret, libbpf.Op.MAP, f"map {self.name}: delete")
        return True

    def keys(self) -> Iterator[K]:
        prev: Any = None
        while True:
            nxt = self.key_type()
            ret = libbpf.bpf_map_get_next_key(
                self.fd, ctypes.byref(prev) if prev is not None else None, ctypes.byref(nxt)
            )
            if ret == -errno.ENOENT:
                return
            if ret < 0:
                libbpf.raise_for_errno(-ret, libbpf.Op.MAP, f"map {self.name}: iterate")
            yield _out(nxt)
            prev = nxt

    def items(self) -> Iterator[tuple[K, V]]:
        for key in list(self.keys()):
            value = self.lookup(key)
            if value is not None:  # deleted while we walked
                yield key, value


class PerCpuArray(Generic[V]):
    """Slot 0 of a per-CPU array, one value per possible CPU."""

    def __init__(self, name: str, fd: int, value_type: Any) -> None:
        self.name = name
        self.fd = fd
        self.value_type = value_type
        self.cpus = libbpf.possible_cpus()

    def values(self) -> list[V]:
        buf = (self.value_type * self.cpus)()  # values are 8-byte multiples: no per-CPU padding
        libbpf.call(
            libbpf.bpf_map_lookup_elem,
            libbpf.Op.MAP,
            f"map {self.name}: lookup",
            self.fd,
            ctypes.byref(ctypes.c_uint32(0)),
            ctypes.byref(buf),
        )
        return list(buf)
