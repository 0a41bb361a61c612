"""Pinned maps across agent versions: reuse what still fits, carry the rest over.

nl_meta records the ABI version and the layout (field names, offsets, sizes)
every pinned map was written with. A map whose shape and layout both match is
reused as it is; any other is recreated and its entries carried over by field
name, plus the rewrites an older ABI version needs (UPGRADES).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netlogger.errors import StateError
from netlogger.kernel import abi, libbpf
from netlogger.kernel.maps import BpfMap
from netlogger.kernel.objinfo import map_info
from netlogger.kernel.plane import LoadReport, open_inner
from netlogger.kernel.spec import MAPS, u32, u64

Layout = dict[str, dict[str, list[list[Any]]]]


def _families_to_af(key: Any, _value: Any) -> None:
    key.family = {4: abi.Family.INET, 6: abi.Family.INET6}.get(key.family, key.family)


# ABI version an entry was written under -> map -> rewrite of a carried (key,
# value), on top of the field-by-name re-layout. ABI 1 keyed families as 4/6.
UPGRADES: dict[int, dict[str, Callable[[Any, Any], None]]] = {
    1: {"nl_cidrs": _families_to_af, "nl_resolvers": _families_to_af},
}


@dataclass(frozen=True)
class Recorded:
    """What nl_meta says the pinned maps were written with."""

    version: int
    layout: Layout

    def upgrades(self, name: str) -> list[Callable[[Any, Any], None]]:
        steps = range(self.version, abi.ABI_VERSION)
        return [UPGRADES[v][name] for v in steps if name in UPGRADES.get(v, {})]


def _layout_of(ctype: Any) -> list[list[Any]]:
    if ctype is None:
        return []
    if issubclass(ctype, ctypes.Structure):
        return [list(f) for f in abi.layout(ctype)]
    return [["", 0, ctypes.sizeof(ctype)]]


def current_layout() -> Layout:
    return {n: {"key": _layout_of(s.key), "value": _layout_of(s.value)} for n, s in MAPS.items()}


def convert(raw: bytes, old: list[list[Any]], new_type: Any) -> bytes:
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


def read_record(pinned: dict[str, int]) -> Recorded | None:
    if "nl_meta" not in pinned:
        return None
    meta = BpfMap[int, abi.Meta]("nl_meta", pinned["nl_meta"], u32, abi.Meta).lookup(0)
    if meta is None or not meta.len:
        return None
    return Recorded(meta.abi_version, json.loads(meta.layout[: meta.len]))


def write_record(meta: BpfMap[int, abi.Meta]) -> None:
    text = json.dumps(current_layout(), separators=(",", ":")).encode()
    meta.update(0, abi.Meta(abi.ABI_VERSION, len(text), text))


def _reusable(obj_map: int, pinned_fd: int, old: Recorded | None, name: str) -> bool:
    info = map_info(pinned_fd)
    same_shape = (info.type, info.key_size, info.value_size, info.max_entries, info.flags) == (
        libbpf.bpf_map__type(obj_map),
        libbpf.bpf_map__key_size(obj_map),
        libbpf.bpf_map__value_size(obj_map),
        libbpf.bpf_map__max_entries(obj_map),
        libbpf.bpf_map__map_flags(obj_map),
    )
    return (
        same_shape
        and old is not None
        and old.layout.get(name) == current_layout()[name]
        and not old.upgrades(name)
    )


def plan(obj_maps: dict[str, int], pinned: dict[str, int], old: Recorded | None) -> LoadReport:
    """Reuse each pinned map whose shape and layout match; mark the rest for migration."""
    out = LoadReport()
    for name in MAPS:
        if name not in pinned:
            out.created.append(name)
        elif _reusable(obj_maps[name], pinned[name], old, name):
            libbpf.call(
                libbpf.bpf_map__reuse_fd,
                libbpf.Op.CONFIGURE,
                f"reuse pinned map {name}",
                obj_maps[name],
                pinned[name],
            )
            out.reused.append(name)
        else:
            out.migrated.append(name)
    return out


def _carry_inner(name: str, old_fd: int, new_fd: int) -> None:
    """The same inner maps, live contents and all, under a new outer map."""
    old: BpfMap[int, int] = BpfMap(name, old_fd, u64, u32)
    new: BpfMap[int, int] = BpfMap(name, new_fd, u64, u32)
    for cgroup_id, inner_id in old.items():
        fd = open_inner(inner_id)
        try:
            new.update(cgroup_id, fd)
        finally:
            os.close(fd)


def carry(name: str, old_fd: int, new_fd: int, old: Recorded | None) -> None:
    """Copy the entries of the pinned map `old_fd` into the new map, re-laid."""
    spec = MAPS[name]
    if not spec.carry:
        return
    if old is None or name not in old.layout:
        raise StateError(
            f"pinned map {name} has no layout record, so its entries cannot be migrated; "
            "remove the pinned state with `netlogger teardown` and enroll again"
        )
    if spec.of_maps:
        _carry_inner(name, old_fd, new_fd)
        return
    info = map_info(old_fd)
    Raw = ctypes.Array[ctypes.c_uint8]
    raw = BpfMap[Raw, Raw](
        name, old_fd, ctypes.c_uint8 * info.key_size, ctypes.c_uint8 * info.value_size
    )
    new = BpfMap[Any, Any](name, new_fd, spec.key, spec.value)  # MapSpec's types, any per map
    upgrades = old.upgrades(name)
    for key, value in raw.items():
        k = spec.key.from_buffer_copy(convert(bytes(key), old.layout[name]["key"], spec.key))
        v = spec.value.from_buffer_copy(
            convert(bytes(value), old.layout[name]["value"], spec.value)
        )
        for upgrade in upgrades:
            upgrade(k, v)
        new.update(k, v)
