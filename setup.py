"""Compiles bpf/ into the object shipped inside the package, before packaging.

A host that runs netlogger needs libbpf.so.1 only; clang is a build-time tool.
"""

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
SOURCE = ROOT / "bpf" / "netlogger.bpf.c"
OBJECT = ROOT / "netlogger" / "_objects" / "netlogger.bpf.o"
BUILD_PACKAGES = "clang llvm libbpf-dev linux-libc-dev"


def compile_bpf() -> None:
    missing = [tool for tool in ("clang", "llvm-strip") if shutil.which(tool) is None]
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        missing.append("libbpf headers")
    if missing:
        raise SystemExit(
            f"error: building the BPF object needs {', '.join(missing)}; "
            f"install them with: apt-get install {BUILD_PACKAGES}"
        )
    OBJECT.parent.mkdir(exist_ok=True)
    arch_include = subprocess.run(
        ["gcc", "-print-multiarch"], capture_output=True, text=True, check=False
    ).stdout.strip()
    cmd = ["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror"]
    if arch_include:
        cmd.append(f"-I/usr/include/{arch_include}")
    subprocess.run([*cmd, "-c", str(SOURCE), "-o", str(OBJECT)], check=True)
    # Keep BTF (.BTF, .BTF.ext), drop DWARF: the loader and the ABI check need BTF only.
    subprocess.run(["llvm-strip", "-g", str(OBJECT)], check=True)


class BuildWithBpf(build_py):
    def run(self) -> None:
        compile_bpf()
        super().run()


setup(cmdclass={"build_py": BuildWithBpf})
