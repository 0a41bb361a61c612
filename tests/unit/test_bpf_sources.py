"""bpf/ holds up as units: each header stands alone and defines nothing global."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from netlogger.kernel.spec import AttachType

ROOT = Path(__file__).parents[2]
HEADERS = sorted((ROOT / "bpf").glob("*.h"))


def _setup() -> ModuleType:
    spec = importlib.util.spec_from_file_location("netlogger_setup", ROOT / "setup.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLANG = _setup().clang_command()
# Compiled alone, a header's inline functions have no caller by definition.
HEADER_ALONE = [*CLANG, "-Wno-unused-function", "-x", "c"]


def test_there_are_headers_to_check() -> None:
    assert {h.name for h in HEADERS} >= {"netlogger.h", "maps.bpf.h", "emit.bpf.h", "decide.bpf.h"}


@pytest.mark.parametrize("header", HEADERS, ids=lambda h: h.name)
def test_header_includes_what_it_uses(header: Path) -> None:
    result = subprocess.run(
        [*HEADER_ALONE, "-fsyntax-only", str(header)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("header", HEADERS, ids=lambda h: h.name)
def test_header_defines_no_global(header: Path, tmp_path: Path) -> None:
    """A map or constant defined in a header would be defined again by each unit."""
    obj = tmp_path / "header.o"
    subprocess.run([*HEADER_ALONE, "-c", str(header), "-o", str(obj)], check=True)
    defined = subprocess.run(
        ["llvm-nm", "--defined-only", str(obj)], capture_output=True, text=True, check=True
    ).stdout
    assert defined == ""


def test_attach_types_are_the_uapi_values(tmp_path: Path) -> None:
    source = tmp_path / "attach.c"
    source.write_text(
        "#include <linux/bpf.h>\n"
        + "".join(f'_Static_assert(BPF_{t.name} == {t.value}, "{t.name}");\n' for t in AttachType)
    )
    result = subprocess.run([*CLANG, "-fsyntax-only", str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
