"""The control socket's bounds: a connection limit, an idle timeout, and `tail` exempt from it.

A real ControlServer on a real unix socket; `Echo` stands in for the agent's
commands (status answers at once; tail streams from a real Fanout through the
real `tail.serve`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from netlogger import control, tail
from netlogger.control.server import Peer
from netlogger.pipeline.fanout import Fanout
from tests.unit.ring_bytes import decoder, event

LIMIT, IDLE = 8, 1.0


class Echo:
    """Stand-in for control.commands.Commands."""

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout

    def handle(self, request: dict[str, Any], peer: Peer) -> Any:
        if request["op"] == "whoami":
            return {"pid": peer.pid, "uid": peer.uid, "gid": peer.gid}
        return {"pong": request["op"]}

    def stream(
        self, request: dict[str, Any], write: Callable[[bytes], None], closed: Callable[[], bool]
    ) -> None:
        tail.serve(request, self.fanout, write, closed)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, control.ControlServer, Fanout]]:
    fanout = Fanout([], 100, lambda: "2026-12-01T00:00:00.000000000Z")
    path = tmp_path / "control.sock"
    server = control.ControlServer(path, Echo(fanout), max_connections=LIMIT, idle_seconds=IDLE)
    yield path, server, fanout
    server.close()
    fanout.close()


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.settimeout(5)
    return sock


def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_idle_connections_are_bounded_refused_and_closed(served) -> None:
    path, server, _ = served
    before = threading.active_count()
    idle = [connect(path) for _ in range(LIMIT)]
    until(lambda: server.open_connections() == LIMIT)
    extra = [connect(path) for _ in range(3 * LIMIT)]
    started = time.monotonic()
    for sock in extra:  # refused at once, with one line, and closed
        with sock.makefile("rb") as f:
            assert json.loads(f.readline()) == {
                "ok": False,
                "type": "AgentError",
                "message": f"the agent already serves {LIMIT} control connections; try again "
                "shortly",
            }
            assert f.readline() == b""
    assert time.monotonic() - started < IDLE  # not one waited for the idle timeout
    assert server.open_connections() == LIMIT
    assert threading.active_count() - before == LIMIT  # one thread per accepted connection
    for sock in idle:  # closed by the server after the idle timeout, without a reply
        assert sock.recv(1) == b""
    assert time.monotonic() - started < IDLE + 3
    until(lambda: server.open_connections() == 0 and threading.active_count() == before)
    assert control.request(path, "status") == {"pong": "status"}
    for sock in idle + extra:
        sock.close()


def test_a_tail_stream_outlives_the_idle_timeout(served) -> None:
    path, server, fanout = served
    with connect(path) as sub, sub.makefile("rwb") as f:
        f.write(b'{"op": "tail", "action": ["denied"]}\n')
        f.flush()
        until(lambda: fanout.subscribers() == 1)
        idle = connect(path)
        assert idle.recv(1) == b""  # a connection without a request is closed meanwhile
        idle.close()
        time.sleep(2 * IDLE)
        records = decoder().decode_all([event(seq=s) for s in (1, 2)])
        fanout.publish(records)
        got = [json.loads(f.readline()) for _ in records]
        assert [(i["event.name"], i["seq"], i["action"]) for i in got] == [
            ("ebpf.egress.connect", 1, "denied"),
            ("ebpf.egress.connect", 2, "denied"),
        ]
        assert server.open_connections() == 1
    until(lambda: fanout.subscribers() == 0 and server.open_connections() == 0)


def test_the_peer_is_who_the_kernel_says_it_is(served) -> None:
    """SO_PEERCRED: the pid and uid of the process on the other end, whatever it claims."""
    path, _, _ = served
    assert control.request(path, "whoami", pid=1, uid=1234) == {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
    }
    child = subprocess.run(
        [sys.executable, "-c",
         "import json, sys; from netlogger import control; from pathlib import Path; "
         f"print(json.dumps(control.request(Path({str(path)!r}), 'whoami')))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(child.stdout)["pid"] != os.getpid()
