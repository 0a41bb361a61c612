"""Bypass windows end in the kernel, with no agent and no timer."""

from __future__ import annotations

import errno
import time

from netlogger.enforce import Enforcer


def test_bypass_allows_then_kernel_returns_to_enforcement(
    enrolled, spawn, read, enforcer: Enforcer, plane
) -> None:
    cg = enrolled("a")
    w = spawn(cg)
    entry = enforcer.bypass(cg.id, 1.0)
    assert entry.mode == "bypass" and 0 < entry.bypass_left_s <= 1.0
    plane.close()  # the agent is gone: only the kernel can end the window now

    assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == errno.EINPROGRESS
    assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=443) == errno.EINPROGRESS
    assert w("socket", family=4, kind="raw") == 0
    time.sleep(1.1)
    assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == errno.EPERM

    by_deny, by_allow, by_raw, after = read()
    for rec in (by_deny, by_allow, by_raw):
        assert (rec.action, rec.mode, rec.reason) == ("bypassed", "bypass", "bypass")
    assert (by_deny.would_deny, by_allow.would_deny, by_raw.would_deny) == (True, False, True)
    assert by_raw.event_name == "ebpf.egress.sock_create"
    assert (after.action, after.mode, after.reason) == ("denied", "enforce", "default_deny")


def test_enforce_closes_a_bypass_window(enrolled, spawn, read, enforcer: Enforcer) -> None:
    cg = enrolled("a", mode="audit")
    w = spawn(cg)
    enforcer.bypass(cg.id, 600)
    assert enforcer.enforce(cg.id).mode == "enforce"
    assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == errno.EPERM
    assert [r.action for r in read()] == ["denied"]
