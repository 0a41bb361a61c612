"""The kernel matrix in CI: the kernel tests inside Debian's 6.1 kernel, under qemu (TCG).

The host kernel runs the whole suite (tests/kernel) in the same pytest session; this test
boots the guest kernel through tests/matrix/runner.py, runs the guest's cut of the suite
(runner.GUEST_TESTS) and `netlogger doctor --json` there, and fails on any guest failure,
skip, verifier rejection, missing summary, or doctor complaint. The guest's `uname -r`, its
pytest summary and the run time go into the "kernel matrix" section at the end of the
pytest output (conftest.py), pass or fail.

In CI a missing qemu, virtme-ng or guest kernel fails; elsewhere it skips.
"""

from __future__ import annotations

import os
import platform

import pytest

from netlogger.kernel import features
from tests.matrix import runner

GUEST_TIMEOUT_S = 3300  # the guest list is ~50 tests under TCG; stays below CI's 90 minutes


def _kernel_or_bail() -> runner.Kernel:
    problems = [f"{tool} is not installed" for tool in runner.missing_tools()]
    kernel = None
    try:
        kernel = runner.Kernel.from_env()
    except FileNotFoundError as exc:
        problems.append(str(exc))
    if os.geteuid() != 0:
        problems.append("the guest run needs root (unshare --mount)")
    if problems or kernel is None:
        message = "; ".join(problems) + " (source .ci/matrix-setup.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return kernel


def test_kernel_tests_pass_in_the_guest_kernel() -> None:
    kernel = _kernel_or_bail()
    run = runner.boot(kernel, ["-v", *runner.GUEST_TESTS], timeout=GUEST_TIMEOUT_S)
    runner.REPORT.extend(
        [
            f"host kernel: {platform.release()} (the whole suite ran on it in this session)",
            f"guest kernel: uname -r = {run.uname} (booted {kernel.image})",
            f"guest kernel: uname -v = {run.uname_v}",
            f"guest run: {run.seconds:.0f} s wall, TCG, {len(runner.GUEST_TESTS)} test entries",
            f"guest pytest: {run.summary}",
            *[f"  {line}" for line in run.pytest_output if "::" in line or "Error" in line],
            f"guest doctor: exit {run.doctor_rc}; "
            + "; ".join(f"{c['name']}={c['status']}" for c in run.doctor or []),
        ]
    )
    problems = run.problems()
    assert not problems, "\n".join(
        [*problems, "--- guest output ---", *run.lines, "--- console tail ---", *run.console_tail]
    )
    assert run.uname == kernel.version

    checks = {c["name"]: c for c in run.doctor or []}
    assert checks["kernel"]["detail"].startswith(f"Linux {kernel.version} ")
    assert checks["features"] == {
        "name": "features",
        "status": "ok",
        "detail": f"all {len(features.FEATURES)} probes present",
    }
    assert checks["trial load"]["status"] == "ok"
    # The guest is pure cgroup v2 (the host here is hybrid): both layouts are covered.
    assert checks["cgroup2"]["detail"] == "mounted at /sys/fs/cgroup (pure v2)"
