"""A pinned map whose layout changed is migrated by field name, never silently reused.

No older release exists to make old pinned state, so these tests write it the
way an older agent would have: entries in an older layout, and the layout
record (nl_meta) that says so. That simulated older layout is the only fake.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import struct

import pytest

from netlogger.errors import StateError
from netlogger.kernel import abi, libbpf, loader, migrate
from netlogger.kernel.maps import BpfMap
from netlogger.kernel.objinfo import map_info

# An older nl_enrollment: same 16 bytes, fields in another order.
OLD_ENROLLMENT = [["policy_id", 0, 4], ["mode", 4, 1], ["pad", 5, 3], ["bypass_until_ns", 8, 8]]
BPF_MAP_TYPE_ARRAY = 2


def record_old_layout(
    pin_root, name: str, key: list, value: list, version: int = abi.ABI_VERSION
) -> None:
    """Write the pinned layout record as an older agent would have left it."""
    layout = migrate.current_layout()
    layout[name] = {"key": key, "value": value}
    text = json.dumps(layout).encode()
    fd = libbpf.call(
        libbpf.bpf_obj_get, libbpf.Op.OPEN, "open", bytes(pin_root / "maps" / "nl_meta")
    )
    try:
        BpfMap("nl_meta", fd, ctypes.c_uint32, abi.Meta).update(
            0, abi.Meta(version, len(text), text)
        )
    finally:
        os.close(fd)


def pinned_map_id(pin_root, name: str) -> int:
    fd = libbpf.call(libbpf.bpf_obj_get, libbpf.Op.OPEN, "open", bytes(pin_root / "maps" / name))
    try:
        return map_info(fd).id
    finally:
        os.close(fd)


def test_same_size_new_layout_is_migrated(pin_root, scope, enrolled, spawn, plane, policies):
    cg = enrolled("a")
    w = spawn(cg)
    policy_id = policies.policies["default"].id
    old_bytes = struct.pack("=IB3xQ", policy_id, abi.Mode.ENFORCE, 0)
    raw = BpfMap("nl_enrollments", plane.enrollments.fd, ctypes.c_uint64, ctypes.c_uint8 * 16)
    raw.update(cg.id, (ctypes.c_uint8 * 16).from_buffer_copy(old_bytes))
    old_id = pinned_map_id(pin_root, "nl_enrollments")
    plane.close()
    record_old_layout(pin_root, "nl_enrollments", [["", 0, 8]], OLD_ENROLLMENT)

    with loader.loaded(pin_root, scope) as again:
        assert again.report.migrated == ["nl_enrollments"]
        entry = again.enrollments.lookup(cg.id)
        assert (entry.policy_id, entry.mode, entry.bypass_until_ns) == (policy_id, 0, 0)
        assert pinned_map_id(pin_root, "nl_enrollments") != old_id
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == errno.EPERM

    with loader.loaded(pin_root, scope) as third:  # migrated state is reused from now on
        assert third.report.migrated == []


def test_smaller_old_value_is_migrated(pin_root, scope, enrolled, plane):
    cg = enrolled("a")
    mask = plane.levels.lookup(0).mask
    assert mask == 1 << cg.level
    plane.close()

    path = pin_root / "maps" / "nl_levels"
    path.unlink()
    fd = libbpf.call(
        libbpf.bpf_map_create,
        libbpf.Op.MAP,
        "create",
        BPF_MAP_TYPE_ARRAY,
        b"nl_levels",
        4,
        4,
        1,
        None,
    )
    try:
        BpfMap("old", fd, ctypes.c_uint32, ctypes.c_uint32).update(0, mask)
        libbpf.call(libbpf.bpf_obj_pin, libbpf.Op.PIN, "pin", fd, bytes(path))
    finally:
        os.close(fd)
    record_old_layout(pin_root, "nl_levels", [["", 0, 4]], [["mask", 0, 4]])
    with loader.loaded(pin_root, scope) as again:
        assert again.report.migrated == ["nl_levels"]
        assert again.levels.lookup(0).mask == mask


def test_pinned_maps_without_layout_record_are_refused(pin_root, scope, plane):
    plane.meta.update(0, abi.Meta())
    plane.close()
    before = sorted(p.name for p in (pin_root / "maps").iterdir())
    with pytest.raises(StateError, match="has no layout record"):
        loader.load(pin_root, scope)
    assert sorted(p.name for p in (pin_root / "maps").iterdir()) == before


def test_abi_1_families_and_writers_are_upgraded(pin_root, scope, enrolled, spawn, plane):
    """ABI 1 keyed families as 4/6 and had no writer tag (its pad is now `writer`)."""
    w = spawn(enrolled("a"))
    v1 = {abi.Family.INET: 4, abi.Family.INET6: 6}
    for bpf_map in (plane.cidrs, plane.resolvers):
        for key, value in list(bpf_map.items()):
            bpf_map.delete(key)
            key.family = v1[key.family]
            bpf_map.update(key, value)
    assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=443) == errno.EPERM
    plane.close()
    old_rules = [["count", 0, 4], ["pad", 4, 4], ["rules", 8, ctypes.sizeof(abi.CidrRules) - 8]]
    layout = migrate.current_layout()["nl_cidrs"]
    record_old_layout(pin_root, "nl_cidrs", layout["key"], old_rules, version=1)

    with loader.loaded(pin_root, scope) as again:  # no policy applied: migration alone
        assert sorted(again.report.migrated) == ["nl_cidrs", "nl_resolvers"]
        assert {k.family for k, _ in again.cidrs.items()} == {abi.Family.INET, abi.Family.INET6}
        assert {k.family for k, _ in again.resolvers.items()} == {abi.Family.INET}
        assert {v.writer for _, v in again.cidrs.items()} == {abi.Writer.POLICY}
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=443) == errno.EINPROGRESS
        assert w("sendto", family=4, addr="198.18.0.53", port=53) == 0
