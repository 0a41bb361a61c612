"""The CLI as people run it: doctor, demo, and refusals without privileges."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from netlogger import coverage
from netlogger.kernel import features

NETLOGGER = ["python3", "-m", "netlogger"]
REPO = Path(__file__).parents[2]


def run(*args: str, prefix: tuple[str, ...] = (), **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, *NETLOGGER, *args], capture_output=True, text=True, cwd=REPO, timeout=120, **kw
    )


def leftovers() -> tuple[set[str], set[str], set[str]]:
    from netlogger.kernel import cgroup

    pins = {p.name for p in Path("/sys/fs/bpf").iterdir()}
    cgroups = {p.name for p in cgroup.find_mount().path.iterdir() if p.is_dir()}
    netns = set(Path("/run/netns").iterdir()) if Path("/run/netns").exists() else set()
    return pins, cgroups, {p.name for p in netns}


def test_doctor_reports_a_usable_host() -> None:
    result = run("doctor", "--json")
    assert result.returncode == 0, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["trial load"]["status"] == "ok"
    assert checks["features"]["detail"].startswith("all ")
    lsm = checks["layer: LSM packet-socket denial (lsm_cgroup/socket_create)"]
    why = features.layers()["lsm"]
    if why is None:
        assert (lsm["status"], lsm["detail"]) == ("ok", f"available: {coverage.WHAT['lsm']}")
    else:  # this host kind (6.18): "the kernel refuses trampoline programs: EPERM"
        assert (lsm["status"], lsm["detail"]) == ("warn", f"unavailable: {why}")
    backstop = checks["layer: container backstop (tc on the host side of the veth)"]
    assert (backstop["status"], backstop["detail"]) == (
        "ok",
        f"available: {coverage.WHAT['backstop']}",
    )
    mkdir = checks["cgroup_mkdir program"]
    assert mkdir["status"] == "ok" and "enrolled by the kernel" in mkdir["detail"]


def test_demo_shows_each_verdict_and_cleans_up() -> None:
    before = leftovers()
    result = run("demo", "--no-color")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    lines = [line for line in out.splitlines() if "demo-agent/demo" in line]
    verdicts = [line.split()[1] for line in lines]
    assert verdicts == ["ALLOW", "DENY", "DENY", "ALLOW", "DENY", "DENY", "DENY", "BYPASS*", "DENY"]
    assert "rule peer-https" in lines[0]
    assert "resolver_not_allowed" in lines[2]
    assert "raw_socket" in lines[5]
    assert "bypass (would deny)" in lines[7]
    # The domain rule: one name admitted as its answer arrives, the other resolved but denied.
    dns = [
        [p.strip() for p in line.split("  ") if p.strip()]
        for line in out.splitlines()
        if "demo-dns/demo" in line and " sendmsg " not in line  # the queries themselves
    ]
    assert [(p[1], p[2], p[-2], p[-1]) for p in dns] == [
        ("DNS", "answer", "198.19.0.10 ttl 600", "admitted 1 demo-domain from 198.18.0.53"),
        ("ALLOW", "connect", "198.19.0.10:443 (allowed.demo.test)", "rule demo-domain"),
        ("DNS", "answer", "198.19.0.20 ttl 600", "not_matched from 198.18.0.53"),
        ("DENY", "connect", "198.19.0.20:443 (blocked.demo.test)", "unresolved_ip"),
    ]
    assert out.rstrip().endswith("done")
    assert leftovers() == before


# The kernel checks capabilities, not uid 0: an empty capability set is what an
# unprivileged user has. (A real non-root uid cannot reach this interpreter,
# which lives under root's 0700 home on these machines.)
NO_CAPS = ("setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--ambient-caps", "-all")


def test_demo_without_privileges_names_the_capabilities() -> None:
    result = run("demo", prefix=NO_CAPS)
    assert result.returncode == 1
    assert result.stderr == (
        "error: PrivilegeError: missing CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN; run netlogger as "
        "root or grant these capabilities (see deploy/netlogger.service)\n"
    )


def test_demo_missing_one_capability_names_it() -> None:
    result = run(
        "demo", prefix=("setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin")
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: PrivilegeError: missing CAP_NET_ADMIN;")
    assert len(result.stderr.splitlines()) == 1


def test_doctor_without_privileges_fails_naming_them() -> None:
    result = run("doctor", prefix=NO_CAPS)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "error: NotUsable: privileges: missing CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN; run as root"
    )


@pytest.mark.parametrize(
    "path,message",
    [
        ("/sys/fs/cgroup/../../etc", "contains '..'"),
        ("/tmp", "is outside the cgroup2 mount"),
        ("relative/path", "is relative"),
    ],
)
def test_cgroup_paths_outside_the_mount_are_refused(path: str, message: str) -> None:
    from netlogger.errors import CgroupError
    from netlogger.kernel import cgroup

    with pytest.raises(CgroupError, match=message):
        cgroup.resolve(path)
