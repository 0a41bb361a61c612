"""Installing without a compiler: the wheel is the documented way onto a host.

One build and one fresh virtual environment for the module, as the README says to do it:
`pip wheel` from a copy of the checkout (where clang is), `pip install` of that wheel into a
new venv (its dependencies from PyPI), then `netlogger doctor` and `netlogger demo` from the
venv, in a directory outside the checkout, with a PATH that holds no compiler at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
COPY_IGNORED = shutil.ignore_patterns(
    ".git", "__pycache__", "*.egg-info", "build", "dist", "_objects", ".*_cache", ".venv"
)
COMPILER_PARTS = ("clang", "llvm", "gcc", "g++", "lld")
COMPILER_NAMES = {"cc", "c++", "cpp", "c89", "c99", "ld"}


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    env: dict[str, str]  # PATH: the venv, then every tool of this host except compilers
    cwd: Path

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, env=self.env, cwd=self.cwd, timeout=timeout
        )


def _step(args: list[str], cwd: Path, timeout: float) -> None:
    done = subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def _is_compiler(name: str) -> bool:
    return name in COMPILER_NAMES or any(part in name for part in COMPILER_PARTS)


def _tools_without_compilers(farm: Path) -> Path:
    """A directory of links to every program on PATH but the compilers and linkers."""
    farm.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            link = farm / entry.name
            if _is_compiler(entry.name) or link.exists() or not os.access(entry.path, os.X_OK):
                continue
            link.symlink_to(entry.path)
    return farm


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    source, dist, venv = root / "src", root / "dist", root / "venv"
    shutil.copytree(REPO, source, ignore=COPY_IGNORED, symlinks=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _step([*pip, "wheel", "--no-deps", ".", "-w", str(dist)], source, 600)
    (wheel,) = dist.glob("netlogger-*.whl")
    _step([sys.executable, "-m", "venv", str(venv)], root, 300)
    venv_pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    _step([*venv_pip, "install", str(wheel)], root, 900)
    shutil.rmtree(source)  # nothing may come from the checkout any more
    tools = _tools_without_compilers(root / "tools")
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{tools}",
        "HOME": str(root),
        "LANG": "C.UTF-8",
    }
    cwd = root / "elsewhere"
    cwd.mkdir()
    return Installed(wheel=wheel, venv=venv, env=env, cwd=cwd)


def test_the_wheel_carries_the_bpf_object_and_the_monitor_entry_point(
    installed: Installed,
) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        declared = wheel.read(entry_points).decode()
    assert installed.wheel.name == "netlogger-0.1.0-py3-none-any.whl"
    assert "netlogger/_objects/netlogger.bpf.o" in names
    assert "[netlogger.commands]\nmonitor = monitor.cli:cli\n" in declared


def test_no_compiler_is_on_the_path(installed: Installed) -> None:
    for tool in ("clang", "llvm-strip", "gcc", "cc", "ld"):
        assert shutil.which(tool, path=installed.env["PATH"]) is None, tool
    assert shutil.which("netlogger", path=installed.env["PATH"]) == str(
        installed.venv / "bin" / "netlogger"
    )


def test_the_venv_runs_its_own_copy(installed: Installed) -> None:
    result = installed.run("python", "-c", "from netlogger.kernel import spec; print(spec.OBJECT)")
    assert result.returncode == 0, result.stderr
    object_path = Path(result.stdout.strip())
    assert object_path.is_relative_to(installed.venv)
    assert object_path.name == "netlogger.bpf.o" and object_path.stat().st_size > 0


def test_installed_doctor_passes_without_a_compiler(installed: Installed) -> None:
    result = installed.run("netlogger", "doctor", "--json")
    assert result.returncode == 0, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["trial load"]["status"] == "ok"
    assert checks["features"]["detail"].startswith("all ")


def test_installed_demo_runs_without_a_compiler(installed: Installed) -> None:
    result = installed.run("netlogger", "demo", "--no-color")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "demo-agent/demo" in line]
    verdicts = [line.split()[1] for line in lines]
    assert verdicts == ["ALLOW", "DENY", "DENY", "ALLOW", "DENY", "DENY", "DENY", "BYPASS*", "DENY"]
    assert result.stdout.rstrip().endswith("done")


def test_installed_monitor_command_is_mounted(installed: Installed) -> None:
    result = installed.run("netlogger", "monitor", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("init", "up", "down", "status", "agent-env"):
        assert f"  {command} " in result.stdout
