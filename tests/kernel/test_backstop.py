"""nl_backstop (tc) on a veth of the test's own, without a container engine.

A workload in the test's network namespace sends UDP over a veth into this
namespace, where a socket of the test listens on the veth's host-side address.
The veth answers to an enrolled cgroup (nl_veths), while the sender itself sits
in a cgroup that is not enrolled: only the backstop can stop its datagrams, as
for a socket made outside the scope.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from netlogger import backstop, sandbox
from netlogger.enforce import Enforcer
from netlogger.kernel import abi, loader
from netlogger.kernel.spec import BACKSTOP

PORT = 5000  # the policy allows it only inside 198.18.0.0/24, so not here


class Veth:
    def __init__(self, ifindex: int, host4: str, sink: socket.socket) -> None:
        self.ifindex, self.host4, self.sink = ifindex, host4, sink

    def received(self) -> int:
        n = 0
        while True:
            try:
                self.sink.recv(2048)
            except BlockingIOError:
                return n
            n += 1


@pytest.fixture
def veth(net: sandbox.Net) -> Iterator[Veth]:
    third = random.randrange(1, 250)
    host4, inner4 = f"198.19.{third}.1", f"198.19.{third}.2"
    with (
        sandbox.host_veth(net.workload_ns, host4, inner4) as ifindex,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink,
    ):
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sink.bind((host4, PORT))
        sink.setblocking(False)
        yield Veth(ifindex, host4, sink)


@pytest.fixture
def sender(scope, spawn) -> Iterator[Any]:
    with sandbox.cgroup(scope, "outside-policy") as cg:
        yield spawn(cg)


def send(w: Any, veth: Veth, count: int) -> None:
    w("time_sendto", addr=veth.host4, port=PORT, count=count)


def test_backstop_drops_what_the_policy_denies_and_records_it(
    plane, enrolled, sender, veth, read
) -> None:
    owner = enrolled("owner")
    send(sender, veth, 3)
    assert veth.received() == 3  # the path works without the backstop
    plane.veths.update(veth.ifindex, abi.Veth(owner.id))
    backstop.attach_filter(veth.ifindex, plane.prog_fds[BACKSTOP])
    send(sender, veth, 3)
    assert veth.received() == 0
    plane.flush_folds()  # identical drops fold like any decision (bpf/emit.bpf.c)
    records = read()
    assert sum(r.stands_for for r in records) == 3
    rec = records[0]
    assert (rec.event_name, rec.action, rec.reason, rec.family, rec.l4_proto) == (
        "ebpf.egress.packet",
        "denied",
        "default_deny",
        "inet",
        "dgram",
    )
    assert (rec.dst_ip, rec.dst_port, rec.cgroup_id) == (veth.host4, str(PORT), str(owner.id))
    assert [(r.repeat_seq_first or r.seq, r.seq) for r in records] in (
        [(0, 0), (1, 2)],
        [(0, 0), (1, 1), (2, 2)],
    )

    backstop.detach_filter(veth.ifindex)
    send(sender, veth, 2)
    assert veth.received() == 2 and read() == []


def test_audit_passes_frames_and_records_would_deny(plane, enrolled, sender, veth, read) -> None:
    owner = enrolled("owner", mode="audit")
    plane.veths.update(veth.ifindex, abi.Veth(owner.id))
    backstop.attach_filter(veth.ifindex, plane.prog_fds[BACKSTOP])
    send(sender, veth, 2)
    assert veth.received() == 2
    plane.flush_folds()
    records = read()
    assert {(r.action, r.would_deny, r.mode) for r in records} == {("allowed", True, "audit")}
    assert sum(r.stands_for for r in records) == 2


def test_unenrolled_owner_leaves_frames_untouched(
    plane, enforcer: Enforcer, enrolled, sender, veth, read
) -> None:
    owner = enrolled("owner")
    plane.veths.update(veth.ifindex, abi.Veth(owner.id))
    backstop.attach_filter(veth.ifindex, plane.prog_fds[BACKSTOP])
    enforcer.unenroll(owner.id)
    send(sender, veth, 2)
    assert veth.received() == 2 and read() == []


def test_a_new_loader_replaces_the_filter_without_a_window(
    pin_root, scope, plane, enrolled, sender, veth
) -> None:
    """As a restarted agent does: while frames flow, its program takes the old one's place."""
    owner = enrolled("owner")
    plane.veths.update(veth.ifindex, abi.Veth(owner.id))
    backstop.attach_filter(veth.ifindex, plane.prog_fds[BACKSTOP])
    plane.close()  # the agent goes; the filter stays with the kernel
    send(sender, veth, 2)
    assert veth.received() == 0

    hammer = threading.Thread(target=send, args=(sender, veth, 20_000))
    hammer.start()
    with loader.loaded(pin_root, scope) as again:
        backstop.attach_filter(veth.ifindex, again.prog_fds[BACKSTOP])
        hammer.join()
        state = again.cgroup_state.lookup(owner.id)
    assert veth.received() == 0
    assert state is not None and state.seq >= 2 + 20_000  # every frame decided (and any other)
