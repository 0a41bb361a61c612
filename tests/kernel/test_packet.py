"""Packet sockets (lsm_cgroup/socket_create), on whichever kernel runs the tests.

Every test has two outcomes and no skip: on a kernel that takes the LSM layer
the sockets are denied with their exact records; on one that refuses it the
layer is absent from the plane, `doctor` says it is unavailable and why, and
the sockets open (the hole the container backstop and the docs account for).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

from netlogger import coverage, doctor, sandbox
from netlogger.kernel import features, loader, pins
from netlogger.kernel.plane import Plane
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.record import Record
from tests.kernel.conftest import POLICY

EPERM = errno.EPERM
PROGRAM = "nl_packet_socket"
# kind -> (family, l4_proto) as the record names them
KINDS = {
    "raw": ("packet", "raw"),
    "dgram": ("packet", "dgram"),
    "obsolete": ("packet", "packet"),
    "xdp": ("xdp", "raw"),
}


def lsm_refused(plane: Plane) -> bool:
    """True where the kernel refuses the layer, after checking that it says so, and why."""
    why = plane.layers["lsm"]
    assert why == features.layers()["lsm"]  # the loader decided by the probe
    links = pins.link_path(plane.pin_root, PROGRAM)
    if why is None:
        assert PROGRAM in plane.prog_fds and links.exists()
        return False
    assert PROGRAM not in plane.prog_fds and not links.exists()
    checks = {c.name: c for c in doctor._layers()}
    check = checks[f"layer: {coverage.TITLES['lsm']}"]
    assert (check.status, check.detail) == ("warn", f"unavailable: {why}")
    assert why.startswith(("the kernel ", "the BPF LSM ")), why
    return True


def check_denied(rec: Record, kind: str, w, cg, action: str = "denied") -> None:
    family, l4 = KINDS[kind]
    assert (rec.event_name, rec.action, rec.reason) == (
        "ebpf.egress.sock_create",
        action,
        "packet_socket" if action != "bypassed" else "bypass",
    )
    assert (rec.family, rec.l4_proto, rec.no_dst, rec.dst_ip) == (family, l4, True, None)
    assert (rec.pid, rec.comm, rec.uid) == (w.pid, "nl-workload", os.geteuid())
    assert rec.cgroup_id == str(cg.id)


def test_packet_sockets_denied_in_enrolled_cgroup(plane, enrolled, spawn, read) -> None:
    cg = enrolled("a")
    w = spawn(cg)
    results = {kind: w("packet_socket", kind=kind) for kind in KINDS}
    if lsm_refused(plane):
        assert results == dict.fromkeys(KINDS, 0) and read() == []
        return
    assert results == dict.fromkeys(KINDS, EPERM)
    records = read()
    assert len(records) == len(KINDS), records
    for kind, rec in zip(KINDS, records, strict=True):
        check_denied(rec, kind, w, cg)
        assert (rec.mode, rec.would_deny, rec.task_cgroup_id) == ("enforce", False, str(cg.id))


def test_packet_sockets_that_differ_are_never_folded_together(plane, enrolled, spawn, read) -> None:
    """One after another within microseconds, folding on: an AF_XDP raw socket is no repeat
    of an AF_PACKET one (the fold key holds the family), so each attempt is its record."""
    cg = enrolled("a")
    assert plane.folds.lookup(cg.id) is not None  # folding is on for the cgroup
    w = spawn(cg)
    results = w("packet_sockets", kinds=list(KINDS))
    if lsm_refused(plane):
        assert results == [0] * len(KINDS) and read() == []
        return
    assert results == [EPERM] * len(KINDS)
    records = read()
    assert [r.repeat_count for r in records] == [None] * len(KINDS), records
    for kind, rec in zip(KINDS, records, strict=True):
        check_denied(rec, kind, w, cg)


def test_packet_sockets_denied_in_child_cgroup(plane, enrolled, spawn, read) -> None:
    cg = enrolled("a")
    with sandbox.cgroup(cg, "child") as child:
        w = spawn(child)
        results = [w("packet_socket", kind=k) for k in ("raw", "dgram")]
        if lsm_refused(plane):
            assert results == [0, 0]
            return
        assert results == [EPERM, EPERM]
        records = read()
        assert len(records) == 2
        for kind, rec in zip(("raw", "dgram"), records, strict=True):
            check_denied(rec, kind, w, cg)
            assert rec.task_cgroup_id == str(child.id)


def test_audit_allows_packet_sockets_and_records_would_deny(plane, enrolled, spawn, read) -> None:
    cg = enrolled("a", mode="audit")
    w = spawn(cg)
    results = [w("packet_socket", kind=k) for k in ("raw", "dgram")]
    assert results == [0, 0]
    if lsm_refused(plane):
        assert read() == []
        return
    records = read()
    assert len(records) == 2
    for kind, rec in zip(("raw", "dgram"), records, strict=True):
        check_denied(rec, kind, w, cg, action="allowed")
        assert (rec.mode, rec.would_deny) == ("audit", True)


def test_bypass_allows_packet_sockets_and_records_bypassed(
    plane, enrolled, enforcer, spawn, read
) -> None:
    cg = enrolled("a")
    enforcer.bypass(cg.id, 60)
    w = spawn(cg)
    assert w("packet_socket", kind="raw") == 0
    if lsm_refused(plane):
        assert read() == []
        return
    (rec,) = read()
    check_denied(rec, "raw", w, cg, action="bypassed")
    assert (rec.mode, rec.would_deny) == ("bypass", True)


def test_unenrolled_cgroup_opens_packet_sockets(plane, scope, enrolled, spawn, read) -> None:
    enrolled("a")
    with sandbox.cgroup(scope, "b") as other:
        w = spawn(other)
        assert [w("packet_socket", kind=k) for k in ("raw", "dgram")] == [0, 0]
        lsm_refused(plane)
        assert read() == []


def test_packet_sockets_stay_denied_with_the_loader_killed(
    tmp_path: Path, pin_root, scope, spawn
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    with sandbox.cgroup(scope, "a") as cg:
        args = [str(pin_root), str(scope.path), str(cg.path), str(policy_file)]
        holder = subprocess.Popen(
            [sys.executable, "-m", "tests.kernel.hold_plane", *args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[2],
        )
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
        w = spawn(cg)
        results = [w("packet_socket", kind=k) for k in ("raw", "dgram")]
        with loader.loaded(pin_root, scope) as plane:  # to read the ring the killed one left
            if lsm_refused(plane):
                assert results == [0, 0]
                return
            assert results == [EPERM, EPERM]
            decoder = Decoder(lambda r: None, lambda p: "default")
            with plane.reader() as ring:
                records = decoder.decode_all(ring.drain())
        assert [(r.action, r.reason, r.l4_proto) for r in records] == [
            ("denied", "packet_socket", "raw"),
            ("denied", "packet_socket", "dgram"),
        ]


def test_socket_made_outside_the_enrolled_cgroup_stays_denied_after_a_move(
    scope, enrolled, spawn, read
) -> None:
    """Made in a not-enrolled cgroup of the scope, used from an enrolled one: denied.

    The programs run for every socket of the scope; the policy is the calling task's.
    """
    cg = enrolled("a")
    with sandbox.cgroup(scope, "b") as other:
        w = spawn(other)
        assert w("keep_socket") == 0
        assert w("join_cgroup", path=str(cg.path)) == 0
        assert w("send_kept", addr="198.18.0.9", port=7) == EPERM
        (rec,) = read()
        assert (rec.event_name, rec.action, rec.reason, rec.dst_ip, rec.dst_port) == (
            "ebpf.egress.sendmsg",
            "denied",
            "default_deny",
            "198.18.0.9",
            "7",
        )
        assert rec.cgroup_id == rec.task_cgroup_id == str(cg.id)
