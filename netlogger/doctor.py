"""Can netlogger run here? Each check says ok, warn or fail, and why.

The decisive check is a trial: load every program and attach it to a
throwaway cgroup (never the root), then remove it all again.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from netlogger import coverage, privileges, resolvers, sandbox
from netlogger.errors import NetloggerError
from netlogger.kernel import cgroup, features, libbpf, loader, mounts

# The oldest kernel the kernel matrix (tests/matrix) runs the kernel tests on, in CI.
# Informational only: whether netlogger runs here is for the probes and the trial load.
TESTED_FLOOR = (6, 1)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok / warn / fail
    detail: str


def _libbpf_version() -> str:
    major = getattr(libbpf._lib, "libbpf_major_version", None)
    minor = getattr(libbpf._lib, "libbpf_minor_version", None)
    if major is None or minor is None:
        return "libbpf.so.1 (version unknown)"
    major.restype = minor.restype = ctypes.c_uint32
    return f"libbpf {major()}.{minor()}"


def _kernel() -> Check:
    release = platform.release()
    detail = f"Linux {release} {platform.machine()}"
    found = re.match(r"(\d+)\.(\d+)", release)
    if found and (int(found[1]), int(found[2])) < TESTED_FLOOR:
        floor = ".".join(map(str, TESTED_FLOOR))
        return Check(
            "kernel",
            "warn",
            f"{detail}: older than Linux {floor}, the oldest kernel CI tests; "
            "the feature probes and the trial load below decide",
        )
    return Check("kernel", "ok", detail)


def _privileges() -> Check:
    lacking = privileges.missing()
    if lacking:
        return Check("privileges", "fail", f"missing {', '.join(lacking)}; run as root")
    return Check("privileges", "ok", "CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN")


def _cgroup2() -> Check:
    try:
        mount = cgroup.find_mount()
    except NetloggerError as exc:
        return Check("cgroup2", "fail", str(exc))
    # Hybrid hosts keep v1 controllers beside cgroup2; only cgroup2 matters here.
    layout = "hybrid, beside cgroup v1" if mounts.of_type("cgroup") else "pure v2"
    return Check("cgroup2", "ok", f"mounted at {mount.path} ({layout})")


def _bpffs() -> Check:
    if any(m.path == Path("/sys/fs/bpf") for m in mounts.of_type("bpf")):
        return Check("bpffs", "ok", "mounted at /sys/fs/bpf")
    return Check("bpffs", "warn", "not mounted at /sys/fs/bpf; the agent mounts it on start")


def _btf() -> Check:
    if Path("/sys/kernel/btf/vmlinux").exists():
        return Check("kernel BTF", "ok", "/sys/kernel/btf/vmlinux (the LSM layer attaches by it)")
    return Check(
        "kernel BTF",
        "ok",
        "absent; the cgroup programs read UAPI fields only; the LSM layer needs it",
    )


def _features() -> list[Check]:
    """One failing check per missing feature, each naming the release that brought it."""
    try:
        results = features.probe_all()
    except NetloggerError as exc:
        return [Check("features", "fail", f"{type(exc).__name__}: {exc}")]
    missing = [r.feature for r in results if not r.present]
    checks = [
        Check(f"feature: {f.name}", "fail", f"missing: needs Linux {f.since} or later")
        for f in missing
    ]
    if not missing:
        checks.append(Check("features", "ok", f"all {len(results)} probes present"))
    return checks


def _layers() -> list[Check]:
    """The optional layers: which this kernel takes, and why not the others."""
    try:
        layers = features.layers()
    except NetloggerError as exc:
        return [Check("layers", "fail", f"{type(exc).__name__}: {exc}")]
    return [Check(c.name, c.status, c.detail) for c in coverage.layer_checks(layers)]


MKDIR_REFUSED = (
    "refused by this kernel: containers are enrolled at the engine's start event "
    "instead, so a new container's first connects can go out before enforcement"
)


def _cgroup_mkdir() -> Check:
    name = "cgroup_mkdir program"
    if features.CGROUP_MKDIR.probe():
        return Check(
            name,
            "ok",
            "tp_btf/cgroup_mkdir loads and attaches: selected containers are enrolled "
            "by the kernel when their cgroup is made, before their first instruction",
        )
    return Check(name, "warn", MKDIR_REFUSED)


def _trial() -> Check:
    try:
        with sandbox.cgroup(cgroup.root(), f"netlogger-doctor-{uuid.uuid4().hex[:8]}") as cg:
            programs = loader.trial(cg)
    except (NetloggerError, OSError) as exc:
        return Check("trial load", "fail", f"{type(exc).__name__}: {exc}")
    detail = f"loaded {len(programs)} programs; attached the cgroup ones to a test cgroup"
    heaviest = max(programs, key=programs.__getitem__, default=None)
    if heaviest is not None and programs[heaviest]:
        detail += (
            f"; the verifier's heaviest: {heaviest}, {programs[heaviest]:,} instructions "
            f"of its {loader.VERIFIER_BUDGET:,} budget"
        )
    return Check("trial load", "ok", detail)


def _stats() -> Check:
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    on = path.exists() and path.read_text().strip() == "1"
    return Check(
        "program run stats", "ok", "on" if on else "off; the agent turns them on while it runs"
    )


def resolver_paths(root: Path = Path("/")) -> Check:
    """Lookups the kernel never sees (see resolvers.py), in the host's files.

    A container with its own /etc has its own: `status` checks each enrolled workload.
    """
    found = resolvers.unsupported(root)
    if found:
        return Check(
            "DNS path",
            "warn",
            f"{' and '.join(found)}: answers the kernel cannot bind to the workload, so "
            "domain rules deny what they resolve and records carry no name; resolve over "
            "UDP (hosts: files dns) in enrolled workloads",
        )
    return Check("DNS path", "ok", "workloads resolve over UDP, where the kernel sees answers")


def run_checks() -> list[Check]:
    checks = [
        _kernel(),
        Check("libbpf", "ok", _libbpf_version()),
        _privileges(),
        _cgroup2(),
        _bpffs(),
        _btf(),
        *_features(),
        _cgroup_mkdir(),
    ]
    if os.geteuid() == 0 or not privileges.missing():
        checks.append(_trial())
    else:
        checks.append(Check("trial load", "fail", "skipped: needs the privileges above"))
    checks += [_stats(), resolver_paths(), *_layers()]
    return checks
