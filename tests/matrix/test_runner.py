"""The runner's verdict on what a guest said: everything but a clean pass fails the matrix.

Hermetic: these feed console lines to GuestRun, as a guest would have printed them.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.matrix import runner

DOCTOR_OK = [
    {"name": "kernel", "status": "ok", "detail": "Linux 6.1.0-57-amd64 x86_64"},
    {"name": "features", "status": "ok", "detail": "all 36 probes present"},
    {"name": "trial load", "status": "ok", "detail": "loaded and attached 5 programs"},
    {"name": "AF_PACKET", "status": "warn", "detail": "drop CAP_NET_RAW"},
]


def guest(
    pytest_lines: list[str],
    rc: int | None = 0,
    doctor: list[dict[str, str]] | None = None,
    doctor_rc: int = 0,
    done: bool = True,
    timed_out: bool = False,
) -> runner.GuestRun:
    lines = ["uname 6.1.0-57-amd64", "cgroup2 /sys/fs/cgroup"]
    lines += [f"|pytest| {line}" for line in pytest_lines]
    if rc is not None:
        lines.append(f"pytest-rc {rc} seconds 150")
    text = json.dumps(DOCTOR_OK if doctor is None else doctor, indent=2)
    lines += [f"|doctor| {line}" for line in text.splitlines()]
    lines.append(f"doctor-rc {doctor_rc}")
    if done:
        lines.append("done")
    return runner.GuestRun(lines, 200.0, timed_out)


PASSED = [
    "tests/kernel/test_decisions.py::test_denied_tcp_connect4 PASSED",
    "=== 23 passed in 158.74s ===",
]


def test_a_clean_guest_passes() -> None:
    run = guest(PASSED)
    assert run.problems() == []
    assert run.uname == "6.1.0-57-amd64"
    assert run.summary == "23 passed in 158.74s"
    assert run.doctor == DOCTOR_OK


def test_a_failing_guest_test_fails() -> None:
    run = guest(["=== 1 failed, 22 passed in 150.00s ==="], rc=1)
    assert run.problems() == [
        "the guest's pytest exited 1",
        "the guest's pytest summary is not all passed: 1 failed, 22 passed in 150.00s",
    ]


def test_a_skip_in_the_guest_fails() -> None:
    problems = guest(["=== 22 passed, 1 skipped in 150.00s ==="]).problems()
    assert problems == [
        "the guest's pytest summary is not all passed: 22 passed, 1 skipped in 150.00s"
    ]


def test_a_verifier_rejection_is_named() -> None:
    lines = [
        "E   netlogger.errors.LoadError: load netlogger.bpf.o: EACCES (Permission denied)",
        "E   verifier log (tail):",
        "=== 1 error, 22 passed in 150.00s ===",
    ]
    problems = guest(lines, rc=1).problems()
    assert "the verifier rejected a program in the guest (LoadError in the output)" in problems


def test_no_summary_fails_even_with_exit_0() -> None:
    assert guest(["collected 0 items"]).problems() == ["no pytest summary line in the guest output"]


def test_a_guest_that_never_booted_says_so() -> None:
    run = runner.GuestRun([], 12.0, False, ["Kernel panic - not syncing"])
    problems = run.problems()
    assert problems[0] == "the guest never reported `uname -r` (did it boot?)"
    assert "the guest script did not reach its end" in problems


def test_a_timeout_fails() -> None:
    problems = guest(PASSED[:1], rc=None, done=False, timed_out=True).problems()
    assert problems[0] == "the guest did not finish within 200 s"
    assert "the guest's pytest did not report an exit status" in problems


def test_doctor_complaints_fail() -> None:
    doctor = [*DOCTOR_OK, {"name": "feature: map type ringbuf", "status": "fail", "detail": "x"}]
    problems = guest(PASSED, doctor=doctor, doctor_rc=1).problems()
    assert problems == ["doctor in the guest exited 1: ['feature: map type ringbuf: x']"]
    no_doctor = runner.GuestRun([*guest(PASSED).lines[:4], "done"], 1.0, False)
    assert "no `netlogger doctor --json` output from the guest" in no_doctor.problems()


def test_the_guest_runs_in_a_private_mount_namespace_under_tcg(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz-6.1.0-57-amd64").touch()
    modules = root / "lib" / "modules" / "6.1.0-57-amd64"
    modules.mkdir(parents=True)
    (modules / "modules.dep").touch()
    kernel = runner.Kernel.at(root)
    cmd = runner.command(kernel, tmp_path, cpus=2, memory="2G")
    assert cmd[:4] == ["unshare", "--mount", "--propagation", "private"]
    vng = cmd[cmd.index("vng") :]
    assert "--disable-kvm" in vng and "--verbose" in vng
    assert vng[vng.index("--run") + 1] == str(root / "boot" / "vmlinuz-6.1.0-57-amd64")
    # The interpreter's prefix and the checkout get the cached share, unless they already sit
    # on a guest overlay (/usr, /tmp, ...): CI may clone anywhere.
    shared = (tmp_path / "fast-dirs").read_text().split()
    assert shared == [str(d) for d in runner._fast_dirs()]
    assert (str(runner.REPO) in shared) != (runner.REPO.parts[1] in ("usr", "etc", "var", "tmp"))


def test_every_guest_test_exists() -> None:
    for entry in runner.GUEST_TESTS:
        path, _, name = entry.partition("::")
        assert (runner.REPO / path).is_file(), entry
        if name:
            assert f"def {name.partition('[')[0]}(" in (runner.REPO / path).read_text(), entry
