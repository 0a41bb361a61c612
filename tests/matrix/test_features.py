"""Feature probes against the running kernel: the host's, and each kernel the matrix boots.

Every probe must answer "present" on a kernel at least as new as the release the feature
came with (a kernel test fails, it does not skip, when the kernel should have it). A probe
that no kernel can pass shows that a missing feature is named by `doctor`, by the CLI and
by the loader; a real helper that came after 6.1 shows the same for a true gap on the 6.1
guest while the host has it.
"""

from __future__ import annotations

import platform
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from netlogger import doctor, sandbox
from netlogger.cli import cli
from netlogger.errors import NotSupportedError
from netlogger.kernel import cgroup, features, loader

SOCK_ADDR = features.PROG_CGROUP_SOCK_ADDR

# Not a real feature: helper id 2**31 - 1 exists in no kernel. It stands in for "a feature
# this kernel lacks" on every kernel, so the reporting path is tested everywhere.
IMPOSSIBLE = features.Feature(
    "deliberately impossible test probe (helper #2147483647)",
    "never",
    features._helper(SOCK_ADDR, 2**31 - 1),
)
# A real helper that Linux 6.2 added (bpf_cgrp_storage_get, id 210): the 6.1 guest lacks it,
# the host has it. netlogger does not use it; it shows doctor naming a true gap.
CGRP_STORAGE = features.Feature(
    "helper cgrp_storage_get in cgroup_sock_addr", "6.2", features._helper(SOCK_ADDR, 210)
)


def release(text: str = platform.release()) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", text)
    assert match, text
    return int(match[1]), int(match[2])


def test_every_probe_answers_present_on_a_new_enough_kernel() -> None:
    results = features.probe_all()
    assert len(results) == len(features.FEATURES)
    missing = [r.feature for r in results if not r.present]
    should_have = [f.name for f in missing if release() >= release(f.since)]
    assert should_have == [], f"Linux {platform.release()} should have these: {should_have}"
    if missing:
        pytest.skip(f"older than the feature: {[f'{f.name} ({f.since})' for f in missing]}")


def test_helper_probe_refuses_a_helper_the_program_type_may_not_call() -> None:
    # skb_load_bytes (26) exists on every kernel here but not for cgroup socket programs.
    # libbpf 1.1's probe calls it supported on 6.2+ (new verifier wording); ours must not.
    for prog_type in (features.PROG_CGROUP_SOCK_ADDR, features.PROG_CGROUP_SOCK):
        assert not features._helper(prog_type, 26)()
        assert features._helper(prog_type, 123)()  # get_current_ancestor_cgroup_id


def test_a_real_newer_helper_is_named_exactly_when_the_kernel_lacks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    present = CGRP_STORAGE.probe()
    assert present == (release() >= (6, 2)), platform.release()
    monkeypatch.setattr(features, "FEATURES", [CGRP_STORAGE])
    checks = doctor._features()
    if present:
        assert [(c.name, c.status) for c in checks] == [("features", "ok")]
    else:
        assert [(c.name, c.status, c.detail) for c in checks] == [
            (f"feature: {CGRP_STORAGE.name}", "fail", "missing: needs Linux 6.2 or later")
        ]


@pytest.fixture
def impossible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "FEATURES", [*features.FEATURES, IMPOSSIBLE])


@pytest.fixture
def scope() -> Iterator[cgroup.Cgroup]:
    with sandbox.cgroup(cgroup.root(), f"nlmatrix-{uuid.uuid4().hex[:8]}") as cg:
        yield cg


def test_doctor_names_the_missing_feature_and_fails(impossible: None) -> None:
    checks = {c.name: c for c in doctor.run_checks()}
    named = checks[f"feature: {IMPOSSIBLE.name}"]
    assert (named.status, named.detail) == ("fail", "missing: needs Linux never or later")
    assert "features" not in checks  # no "all present" line beside a missing one
    assert checks["trial load"].status == "fail"
    assert IMPOSSIBLE.name in checks["trial load"].detail
    # Only the impossible probe is missing: every real one passed on this kernel.
    assert [n for n, c in checks.items() if n.startswith("feature: ")] == [named.name]


def test_cli_doctor_exits_1_naming_it(impossible: None) -> None:
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 1
    assert IMPOSSIBLE.name in result.output
    assert f"error: NotUsable: feature: {IMPOSSIBLE.name}" in result.output


def test_loader_refuses_before_touching_anything(impossible: None, scope: cgroup.Cgroup) -> None:
    pin_root = Path("/sys/fs/bpf") / f"nlmatrix-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotSupportedError) as raised:
        loader.load(pin_root, scope)
    assert (raised.value.feature, raised.value.minimum) == (IMPOSSIBLE.name, "never")
    assert f"{IMPOSSIBLE.name} is not supported by this kernel" in str(raised.value)
    assert not pin_root.exists()
    with pytest.raises(NotSupportedError, match=re.escape(IMPOSSIBLE.name)):
        loader.trial(scope)


@pytest.mark.parametrize(
    ("release_", "status"),
    [("6.1.0-57-amd64", "ok"), ("6.18.44", "ok"), ("5.15.0-91-generic", "warn")],
)
def test_doctor_warns_below_the_tested_floor(
    monkeypatch: pytest.MonkeyPatch, release_: str, status: str
) -> None:
    monkeypatch.setattr(platform, "release", lambda: release_)
    check = doctor._kernel()
    assert (check.name, check.status) == ("kernel", status)
    assert check.detail.startswith(f"Linux {release_} ")
    if status == "warn":
        assert "older than Linux 6.1, the oldest kernel CI tests" in check.detail
