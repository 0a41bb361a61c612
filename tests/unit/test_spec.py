"""spec.PROGRAMS is the object's programs, each with the attach type libbpf gives its section."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netlogger.kernel import libbpf
from netlogger.kernel.spec import OBJECT, PROGRAMS


@pytest.fixture(scope="module")
def programs() -> Iterator[dict[str, tuple[str, int]]]:
    obj = libbpf.call_ptr(
        libbpf.bpf_object__open_file, libbpf.Op.OPEN, "open object", bytes(OBJECT), None
    )
    try:
        found, prog = {}, libbpf.bpf_object__next_program(obj, None)
        while prog:
            found[libbpf.bpf_program__name(prog).decode()] = (
                libbpf.bpf_program__section_name(prog).decode(),
                libbpf.bpf_program__expected_attach_type(prog),
            )
            prog = libbpf.bpf_object__next_program(obj, prog)
        yield found
    finally:
        libbpf.bpf_object__close(obj)


def test_spec_lists_every_program_of_the_object(programs: dict[str, tuple[str, int]]) -> None:
    assert set(programs) == set(PROGRAMS)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_section_and_attach_type(programs: dict[str, tuple[str, int]], name: str) -> None:
    assert programs[name] == (PROGRAMS[name].section, PROGRAMS[name].attach_type)
