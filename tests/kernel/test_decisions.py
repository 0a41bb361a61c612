"""Each hook and address family, against the real kernel: errno and exact record."""

from __future__ import annotations

import errno
import os
from typing import Any

from netlogger.pipeline.record import Record

EPERM, EINPROGRESS = errno.EPERM, errno.EINPROGRESS


def only(records: list[Record]) -> Record:
    assert len(records) == 1, records
    return records[0]


def check_common(rec: Record, workload: Any, cg: Any, task_cg: Any = None) -> None:
    assert rec.pid == workload.pid
    assert rec.tid == workload.pid
    assert rec.comm == "nl-workload"
    assert rec.uid == os.geteuid() and rec.gid == os.getegid()
    assert rec.cgroup_id == str(cg.id)
    assert rec.task_cgroup_id == str((task_cg or cg).id)
    assert rec.policy == "default"


def test_allowed_tcp_connect4(enrolled, spawn, read) -> None:
    cg = enrolled("a", agent="a1", project="p1")
    w = spawn(cg)
    assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=443) == EINPROGRESS
    rec = only(read())
    assert (rec.event_name, rec.action, rec.mode, rec.reason) == (
        "ebpf.egress.connect",
        "allowed",
        "enforce",
        "rule",
    )
    assert (rec.dst_ip, rec.dst_port, rec.rule) == ("198.18.0.2", "443", "lab-tcp")
    assert (rec.l4_proto, rec.l4_proto_code) == ("stream", 1)
    assert (rec.ipv6, rec.ipv4_mapped, rec.nat64, rec.no_dst, rec.would_deny) == (
        False,
        False,
        False,
        False,
        False,
    )
    assert rec.identity != "0" and rec.sock_cookie > 0 and rec.seq == 0
    check_common(rec, w, cg)


def test_allowed_connect_completes_a_handshake(enrolled, spawn, read, net) -> None:
    w = spawn(enrolled("a"))
    assert w("listen", addr=net.local4, port=8000) == 0
    assert w("connect_established", addr=net.local4, port=8000) == 0
    rec = only(read())
    assert (rec.action, rec.dst_ip, rec.dst_port, rec.rule) == (
        "allowed",
        net.local4,
        "8000",
        "lab-tcp",
    )


def test_denied_tcp_connect4(enrolled, spawn, read) -> None:
    cg = enrolled("a")
    w = spawn(cg)
    assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EPERM
    rec = only(read())
    assert (rec.event_name, rec.action, rec.reason, rec.rule, rec.identity) == (
        "ebpf.egress.connect",
        "denied",
        "default_deny",
        None,
        "0",
    )
    assert (rec.dst_ip, rec.dst_port, rec.l4_proto) == ("198.18.0.2", "22", "stream")
    check_common(rec, w, cg)


def test_protocol_is_part_of_the_rule(enrolled, spawn, read) -> None:
    w = spawn(enrolled("a"))
    assert w("connect", family=4, type="udp", addr="198.18.0.2", port=443) == EPERM
    assert w("connect", family=4, type="udp", addr="198.18.0.2", port=5000) == 0
    denied, allowed = read()
    assert (denied.action, denied.l4_proto, denied.reason) == ("denied", "dgram", "default_deny")
    assert (allowed.action, allowed.rule, allowed.l4_proto_code) == ("allowed", "lab-udp", 2)


def test_port_range_bounds(enrolled, spawn, read) -> None:
    w = spawn(enrolled("a"))
    results = [
        w("connect", family=4, type="tcp", addr="198.18.0.2", port=p)
        for p in (7999, 8000, 8100, 8101)
    ]
    assert results == [EPERM, EINPROGRESS, EINPROGRESS, EPERM]
    assert [r.action for r in read()] == ["denied", "allowed", "allowed", "denied"]


def test_denied_sendto4(enrolled, spawn, read) -> None:
    cg = enrolled("a")
    w = spawn(cg)
    assert w("sendto", family=4, addr="198.18.0.2", port=6000) == EPERM
    rec = only(read())
    assert (rec.event_name, rec.action, rec.reason) == (
        "ebpf.egress.sendmsg",
        "denied",
        "default_deny",
    )
    assert (rec.dst_ip, rec.dst_port, rec.l4_proto) == ("198.18.0.2", "6000", "dgram")
    check_common(rec, w, cg)


def test_allowed_sendto4(enrolled, spawn, read) -> None:
    w = spawn(enrolled("a"))
    assert w("sendto", family=4, addr="198.18.0.2", port=5000) == 0
    rec = only(read())
    assert (rec.event_name, rec.action, rec.rule) == ("ebpf.egress.sendmsg", "allowed", "lab-udp")


def test_connect6_native(enrolled, spawn, read, net) -> None:
    cg = enrolled("a")
    w = spawn(cg)
    assert w("connect", family=6, type="tcp", addr=net.peer6, port=443) == EINPROGRESS
    assert w("connect", family=6, type="tcp", addr=net.peer6, port=444) == EPERM
    allowed, denied = read()
    assert (allowed.action, allowed.rule, allowed.dst_ip, allowed.ipv6) == (
        "allowed",
        "lab6",
        net.peer6,
        True,
    )
    assert (denied.action, denied.reason, denied.dst_ip, denied.dst_port) == (
        "denied",
        "default_deny",
        net.peer6,
        "444",
    )
    assert not denied.ipv4_mapped and not denied.nat64
    check_common(denied, w, cg)


def test_sendto6_native_denied(enrolled, spawn, read, net) -> None:
    w = spawn(enrolled("a"))
    assert w("sendto", family=6, addr=net.peer6, port=9999) == EPERM
    rec = only(read())
    assert (rec.event_name, rec.action, rec.dst_ip, rec.ipv6) == (
        "ebpf.egress.sendmsg",
        "denied",
        net.peer6,
        True,
    )


def test_ipv4_rules_do_not_leak_through_ipv6_any(enrolled, spawn, read) -> None:
    """fd00:18::/64 allows 443; an IPv4 address outside the IPv4 rules stays denied."""
    w = spawn(enrolled("a"))
    assert w("connect", family=6, type="tcp", addr="::ffff:198.18.1.9", port=443) == EPERM
    assert only(read()).reason == "default_deny"


def test_ipv4_mapped_forms_are_decided_as_ipv4(enrolled, spawn, read) -> None:
    w = spawn(enrolled("a"))
    assert w("connect", family=6, type="tcp", addr="::ffff:198.18.0.2", port=22) == EPERM
    assert w("sendto", family=6, addr="::ffff:198.18.0.2", port=6000) == EPERM
    assert w("connect", family=6, type="tcp", addr="::ffff:198.18.0.2", port=443) == EINPROGRESS
    denied_connect, denied_send, allowed = read()
    for rec in (denied_connect, denied_send):
        assert (rec.action, rec.dst_ip, rec.ipv6, rec.ipv4_mapped) == (
            "denied",
            "198.18.0.2",
            True,
            True,
        )
    assert denied_send.event_name == "ebpf.egress.sendmsg"
    assert (allowed.action, allowed.rule, allowed.dst_ip) == ("allowed", "lab-tcp", "198.18.0.2")


def test_nat64_form_is_decided_as_ipv4(enrolled, spawn, read) -> None:
    w = spawn(enrolled("a"))
    assert w("connect", family=6, type="tcp", addr="64:ff9b::c612:2", port=22) == EPERM
    assert w("connect", family=6, type="tcp", addr="64:ff9b::c612:2", port=443) == EINPROGRESS
    denied, allowed = read()
    assert (denied.action, denied.nat64, denied.dst_ip, denied.ipv4_mapped) == (
        "denied",
        True,
        "64:ff9b::c612:2",
        False,
    )
    assert (allowed.action, allowed.rule) == ("allowed", "lab-tcp")


def test_raw_socket_denied(enrolled, spawn, read) -> None:
    cg = enrolled("a")
    w = spawn(cg)
    assert w("socket", family=4, kind="raw") == EPERM
    assert w("socket", family=6, kind="raw") == EPERM
    v4, v6 = read()
    for rec in (v4, v6):
        assert (rec.event_name, rec.action, rec.reason) == (
            "ebpf.egress.sock_create",
            "denied",
            "raw_socket",
        )
        assert (rec.no_dst, rec.dst_ip, rec.dst_port, rec.l4_proto) == (True, None, None, "raw")
        check_common(rec, w, cg)
    assert (v4.ipv6, v6.ipv6) == (False, True)


def test_ping_socket_follows_policy(enrolled, spawn, read) -> None:
    deny_w = spawn(enrolled("a"))
    allow_w = spawn(enrolled("b", policy="pinger"))
    assert deny_w("socket", family=4, kind="ping") == EPERM
    assert allow_w("socket", family=4, kind="ping") == 0
    denied, allowed = read()
    assert (denied.action, denied.reason, denied.l4_proto) == ("denied", "icmp", "dgram")
    assert (allowed.action, allowed.reason, allowed.policy) == ("allowed", "icmp", "pinger")


def test_dns_only_to_the_policy_resolvers(enrolled, spawn, read) -> None:
    w = spawn(enrolled("a"))
    assert w("sendto", family=4, addr="198.18.0.53", port=53) == 0
    assert w("sendto", family=4, addr="198.18.0.2", port=53) == EPERM
    assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=853) == EPERM
    ok, bad_udp, bad_dot = read()
    assert (ok.action, ok.reason, ok.rule) == ("allowed", "resolver", "default.dns.resolvers[0]")
    assert (bad_udp.action, bad_udp.reason) == ("denied", "resolver_not_allowed")
    assert (bad_dot.action, bad_dot.reason, bad_dot.dst_port) == ("denied", "dns_over_tls", "853")


def test_loopback_passes_unrecorded_unless_asked(enrolled, spawn, read) -> None:
    quiet = spawn(enrolled("a"))
    loud = spawn(enrolled("b", policy="pinger"))
    assert quiet("connect", family=4, type="udp", addr="127.0.0.1", port=9) == 0
    assert quiet("connect", family=6, type="udp", addr="::1", port=9) == 0
    assert loud("connect", family=4, type="udp", addr="127.0.0.1", port=9) == 0
    rec = only(read())
    assert (rec.action, rec.reason, rec.policy, rec.dst_ip) == (
        "allowed",
        "loopback",
        "pinger",
        "127.0.0.1",
    )


def test_root_is_enforced_like_anyone(enrolled, spawn, read) -> None:
    w = spawn(enrolled("a"))
    assert os.geteuid() == 0
    assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EPERM
    assert only(read()).uid == 0


def test_child_cgroup_is_enforced(enrolled, spawn, read) -> None:
    cg = enrolled("a")
    w = spawn(cg)
    child = cg.path / "escape"
    assert w("join_cgroup", path=str(child)) == 0
    assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EPERM
    rec = only(read())
    assert rec.cgroup_id == str(cg.id)
    assert rec.task_cgroup_id == str(child.stat().st_ino)


def test_unenrolled_cgroup_passes_without_records(scope, enforcer, spawn, read) -> None:
    from netlogger import sandbox

    with sandbox.cgroup(scope, "free") as cg:
        w = spawn(cg)
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EINPROGRESS
        assert w("socket", family=4, kind="raw") == 0
        w.close()
    assert read() == []


def test_audit_allows_and_records_would_deny(enrolled, spawn, read) -> None:
    w = spawn(enrolled("a", policy="watch"))
    assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EINPROGRESS
    assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=443) == EINPROGRESS
    would, fine = read()
    assert (would.action, would.mode, would.would_deny, would.reason) == (
        "allowed",
        "audit",
        True,
        "default_deny",
    )
    assert (fine.action, fine.mode, fine.would_deny, fine.rule) == (
        "allowed",
        "audit",
        False,
        "watch-https",
    )


def test_enroll_mode_overrides_policy_mode(enrolled, spawn, read) -> None:
    w = spawn(enrolled("a", policy="default", mode="audit"))
    assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EINPROGRESS
    assert only(read()).would_deny is True


def test_seq_counts_per_cgroup(enrolled, spawn, read) -> None:
    a, b = spawn(enrolled("a")), spawn(enrolled("b"))
    for w, port in ((a, 22), (b, 22), (a, 23)):  # a's two differ: neither folds
        w("connect", family=4, type="tcp", addr="198.18.0.2", port=port)
    recs = read()
    by_cg: dict[str, list[int]] = {}
    for r in recs:
        by_cg.setdefault(r.cgroup_id, []).append(r.seq)
    assert sorted(by_cg.values()) == [[0], [0, 1]]


def test_the_nearest_enrolled_ancestor_decides_at_every_depth(scope, enforcer, spawn, read) -> None:
    """Enrolled depths in each block the lookup skips by (0-7, 8-15, 16-31): a task two
    levels below each enrolled cgroup is decided as that cgroup's, not a shallower one's."""
    from contextlib import ExitStack

    from netlogger import sandbox
    from netlogger.enforce import Target

    with ExitStack() as stack:
        chain = [scope]
        while chain[-1].level < 21:
            chain.append(stack.enter_context(sandbox.cgroup(chain[-1], f"d{len(chain)}")))
        at = {cg.level: cg for cg in chain}
        for level in (5, 12, 18):
            enforcer.enroll(Target(at[level]))
        got = []
        for level in (7, 14, 20):
            w = spawn(at[level])
            assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EPERM
            w.close()
            rec = only(read())
            got.append((rec.cgroup_id, rec.task_cgroup_id, rec.action))
    assert got == [
        (str(at[enrolled].id), str(at[task].id), "denied")
        for enrolled, task in ((5, 7), (12, 14), (18, 20))
    ]
