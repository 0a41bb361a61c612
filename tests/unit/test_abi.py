"""The Python mirror (kernel/abi.py) equals the BTF of the compiled object."""

from __future__ import annotations

import ctypes
import socket
from collections.abc import Iterator

import pytest

from netlogger.kernel import abi, btf
from netlogger.kernel.spec import OBJECT


@pytest.fixture(scope="module")
def object_btf() -> Iterator[btf.Btf]:
    with btf.open_file(OBJECT) as b:
        yield b


@pytest.mark.parametrize("c_name", sorted(abi.STRUCTS))
def test_struct_matches_btf(object_btf: btf.Btf, c_name: str) -> None:
    mirror = abi.STRUCTS[c_name]
    compiled = object_btf.struct(c_name)
    assert ctypes.sizeof(mirror) == compiled.size
    assert [(m.name, m.offset, m.size) for m in compiled.members] == abi.layout(mirror)


@pytest.mark.parametrize("c_name", sorted(abi.ENUMS))
def test_enum_matches_btf(object_btf: btf.Btf, c_name: str) -> None:
    mirror, prefix = abi.ENUMS[c_name]
    assert object_btf.enum(c_name) == {prefix + m.name: m.value for m in mirror}


def test_every_abi_struct_is_mirrored(object_btf: btf.Btf) -> None:
    """A struct added to netlogger.h without a mirror fails here."""
    names = {m.name for m in object_btf.struct("nl_abi").members}
    assert "event" in names
    header = (OBJECT.parents[2] / "bpf" / "netlogger.h").read_text()
    declared = {line.split()[1] for line in header.splitlines() if line.startswith("struct nl_")}
    assert declared == set(abi.STRUCTS)
    enums = {line.split()[1] for line in header.splitlines() if line.startswith("enum nl_")}
    assert enums == set(abi.ENUMS)


def test_unpacker_has_no_implicit_padding() -> None:
    assert abi.unpacker(abi.Event).size == ctypes.sizeof(abi.Event) == 136


def test_constants_match_header() -> None:
    header = (OBJECT.parents[2] / "bpf" / "netlogger.h").read_text()
    for name, value in [
        ("NL_ABI_VERSION", abi.ABI_VERSION),
        ("NL_COMM_LEN", abi.COMM_LEN),
        ("NL_MAX_LEVELS", abi.MAX_LEVELS),
        ("NL_MAX_PORT_RULES", abi.MAX_PORT_RULES),
        ("NL_DNS_PAYLOAD_MAX", abi.DNS_PAYLOAD_MAX),
        ("NL_DNS_NAME_MAX", abi.DNS_NAME_MAX),
        ("NL_DNS_SLOTS", abi.DNS_SLOTS),
        ("NL_DNS_ADDRS_MAX", abi.DNS_ADDRS_MAX),
        ("NL_DNS_QUERIES_MAX", abi.DNS_QUERIES_MAX),
        ("NL_CGROUP_NAME_LEN", abi.CGROUP_NAME_LEN),
        ("NL_FOLD_SLOTS", abi.FOLD_SLOTS),
    ]:
        assert f"#define {name} {value}" in header


def test_families_are_the_socket_values() -> None:
    assert (abi.Family.INET, abi.Family.INET6) == (socket.AF_INET, socket.AF_INET6)


def test_cidr_prefix_covers_policy_and_family() -> None:
    key = abi.CidrKey
    assert 8 * (key.addr.offset - key.policy_id.offset) == abi.CidrPrefix.BITS
