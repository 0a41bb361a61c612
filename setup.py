"""Compiles bpf/ into the one object shipped inside the package, before packaging.

A host that runs netlogger needs libbpf.so.1 only; clang is a build-time tool.

Each bpf/*.bpf.c is its own translation unit, compiled alone, and libbpf's
static linker (the one `bpftool gen object` runs, called here through
libbpf.so.1 so the build needs no bpftool) joins them into
netlogger/_objects/netlogger.bpf.o. Maps and the .rodata constants are defined
once, in bpf/maps.bpf.c; the other units see them `extern` through
bpf/maps.bpf.h, and the linker resolves each to that definition (and refuses
a declaration whose map shape differs).

Adding a program concept: write bpf/<concept>.bpf.c (it is picked up here by
its name), include the headers it uses, define no global another unit needs
(maps go to maps.bpf.h + maps.bpf.c), then name its programs in
netlogger/kernel/spec.py PROGRAMS.
"""

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
# maps.bpf.c first: libbpf 1.1's linker mislays the .maps entries a unit declares
# `extern` before the unit that defines them is added (bpf/dns.bpf.c sorts before it).
SOURCES = sorted((ROOT / "bpf").glob("*.bpf.c"), key=lambda p: (p.name != "maps.bpf.c", p.name))
OBJECT = ROOT / "netlogger" / "_objects" / "netlogger.bpf.o"
BUILD_PACKAGES = "clang libbpf-dev libbpf1 linux-libc-dev"


def clang_command() -> list[str]:
    """clang for one bpf/ unit; tests/unit/test_bpf_sources.py compiles with it too."""
    missing = [] if shutil.which("clang") else ["clang"]
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        missing.append("libbpf headers")
    if missing:
        raise SystemExit(
            f"error: building the BPF object needs {', '.join(missing)}; "
            f"install them with: apt-get install {BUILD_PACKAGES}"
        )
    arch_include = subprocess.run(
        ["gcc", "-print-multiarch"], capture_output=True, text=True, check=False
    ).stdout.strip()
    cmd = ["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror"]
    if arch_include:
        cmd.append(f"-I/usr/include/{arch_include}")
    return cmd


def link(units: list[Path], out: Path) -> None:
    """libbpf's static linker: units -> one object. It keeps BTF and drops DWARF."""
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError:
        raise SystemExit(
            "error: linking the BPF object needs libbpf.so.1: apt-get install libbpf1"
        ) from None
    lib.bpf_linker__new.restype = ctypes.c_void_p
    lib.bpf_linker__new.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.bpf_linker__add_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    lib.bpf_linker__finalize.argtypes = [ctypes.c_void_p]
    lib.bpf_linker__free.argtypes = [ctypes.c_void_p]
    linker = lib.bpf_linker__new(bytes(out), None)
    if not linker:
        raise SystemExit(f"error: cannot create {out}")
    try:
        for unit in units:
            if lib.bpf_linker__add_file(linker, bytes(unit), None) < 0:
                raise SystemExit(f"error: linking {unit.name} failed (libbpf said why, above)")
        if lib.bpf_linker__finalize(linker) < 0:
            raise SystemExit(f"error: linking {out.name} failed (libbpf said why, above)")
    finally:
        lib.bpf_linker__free(linker)


def compile_bpf() -> None:
    cmd = clang_command()
    OBJECT.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        units = []
        for source in SOURCES:
            units.append(Path(tmp) / source.name.replace(".c", ".o"))
            subprocess.run([*cmd, "-c", str(source), "-o", str(units[-1])], check=True)
        link(units, OBJECT)


class BuildWithBpf(build_py):
    def run(self) -> None:
        compile_bpf()
        super().run()


if __name__ == "__main__":  # setuptools runs it so; a test imports it for clang_command
    setup(cmdclass={"build_py": BuildWithBpf})
