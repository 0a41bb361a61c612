"""A pin root that cannot be made is a one-line `error:`, for real causes.

`netlogger run` is driven as people run it; the faults are real: a bpf
filesystem that cannot be mounted (in a private mount namespace where
/sys/fs is an empty tmpfs), a pin root under a pinned map, a pin root on no
bpf filesystem.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netlogger.errors import KernelError
from netlogger.kernel import cgroup, loader
from tests.fixtures import unique

REPO = Path(__file__).parents[2]

# Inside a private mount namespace: keep the cgroup mounts, hide the rest of
# /sys/fs (bpffs and its mount point /sys/fs/bpf) under an empty tmpfs.
HIDE_BPFFS = """set -e
mount --rbind /sys/fs/cgroup "$KEEP"
mount -t tmpfs -o size=64k tmpfs /sys/fs
mkdir /sys/fs/cgroup
mount --move "$KEEP" /sys/fs/cgroup
exec "$@"
"""


def netlogger_run(
    tmp_path: Path, scope: cgroup.Cgroup, pin_root: Path, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text("policies:\n  default: {}\n")
    return subprocess.run(
        [
            *prefix,
            sys.executable,
            "-m",
            "netlogger",
            "run",
            "--policy",
            str(policy),
            "--scope",
            str(scope.path),
            "--pin-root",
            str(pin_root),
            "--control-socket",
            str(tmp_path / "control.sock"),
            "--sink",
            "console",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "KEEP": str(tmp_path / "keep")},
    )


def test_bpffs_that_cannot_be_mounted(tmp_path: Path, scope: cgroup.Cgroup) -> None:
    (tmp_path / "keep").mkdir()
    pin_root = Path("/sys/fs/bpf") / unique("nltest")
    hide = ("unshare", "--mount", "--propagation", "private", "sh", "-c", HIDE_BPFFS, "sh")
    result = netlogger_run(tmp_path, scope, pin_root, prefix=hide)
    assert (result.returncode, result.stderr) == (
        1,
        "error: KernelError: mount the bpf filesystem at /sys/fs/bpf: ENOENT (No such file "
        "or directory); mount it there yourself, or give a --pin-root on a mounted bpf "
        "filesystem\n",
    )
    assert not pin_root.exists()  # nothing leaked into the real /sys/fs/bpf


def test_pin_root_under_a_pinned_map(tmp_path: Path, scope: cgroup.Cgroup, plane) -> None:
    pin_root = plane.pin_root / "maps" / "nl_meta" / "netlogger"
    result = netlogger_run(tmp_path, scope, pin_root)
    assert (result.returncode, result.stderr) == (
        1,
        f"error: KernelError: make pin root directory {pin_root / 'maps'}: ENOTDIR (Not a "
        "directory)\n",
    )
    with pytest.raises(KernelError, match=r"^make pin root directory .*: ENOTDIR"):
        loader.load(pin_root, scope)


def test_pin_root_on_no_bpf_filesystem(tmp_path: Path, scope: cgroup.Cgroup) -> None:
    result = netlogger_run(tmp_path, scope, tmp_path / "pins")
    assert (result.returncode, result.stderr) == (
        2,
        f"error: UsageError: pin root {tmp_path / 'pins'} is not on a bpf filesystem; use one "
        "under /sys/fs/bpf\n",
    )
