"""A workload to enroll: a child process that makes real syscalls on request.

`netlogger demo` and the kernel tests drive it. The child joins a network
namespace, names itself `nl-workload`, and answers one JSON command per line
on stdin with one JSON reply on stdout; the parent (`Workload`) moves it into
a cgroup by pid. The child side uses the standard library only, so its
syscalls are the only ones under test.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMM = b"nl-workload"
PR_SET_NAME = 15
_TYPES = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
_FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


def _errno(fn: Any) -> int:
    try:
        fn()
    except OSError as exc:
        return exc.errno or -1
    return 0


def connect(family: int, type: str, addr: str, port: int) -> int:
    with socket.socket(_FAMILIES[family], _TYPES[type]) as s:
        s.setblocking(False)  # an allowed TCP connect answers EINPROGRESS
        return _errno(lambda: s.connect((addr, port)))


def sendto(family: int, addr: str, port: int) -> int:
    with socket.socket(_FAMILIES[family], socket.SOCK_DGRAM) as s:
        return _errno(lambda: s.sendto(b"netlogger", (addr, port)))


def open_socket(family: int, kind: str) -> int:
    proto = {
        "raw": socket.IPPROTO_RAW if family == 4 else socket.IPPROTO_ICMPV6,
        "ping": socket.IPPROTO_ICMP if family == 4 else socket.IPPROTO_ICMPV6,
    }[kind]
    type_ = socket.SOCK_RAW if kind == "raw" else socket.SOCK_DGRAM

    def make() -> None:
        socket.socket(_FAMILIES[family], type_, proto).close()

    return _errno(make)


AF_PACKET, AF_XDP, SOCK_PACKET, ETH_P_ALL = 17, 44, 10, 0x0003
# The sockets that write frames past every inet hook, by the name tests use.
_PACKET_SOCKETS = {
    "raw": (AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)),
    "dgram": (AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL)),
    "obsolete": (socket.AF_INET, SOCK_PACKET, socket.htons(ETH_P_ALL)),  # (PF_INET, SOCK_PACKET)
    "xdp": (AF_XDP, socket.SOCK_RAW, 0),
}


def packet_socket(kind: str) -> int:
    family, type_, proto = _PACKET_SOCKETS[kind]
    return _errno(lambda: socket.socket(family, type_, proto).close())


def packet_sockets(kinds: list[str]) -> list[int]:
    """packet_socket for each kind, back to back: microseconds apart, well inside any fold
    window, so attempts the kernel took for repeats of one another would fold."""
    return [packet_socket(kind) for kind in kinds]


def keep_socket() -> int:
    """Open a UDP socket here and keep it, to use after a move to another cgroup."""
    global _kept
    _kept = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return 0


def send_kept(addr: str, port: int) -> int:
    assert _kept is not None
    kept = _kept
    return _errno(lambda: kept.sendto(b"netlogger", (addr, port)))


def flood(family: int, addr: str, port: int, count: int) -> dict[str, Any]:
    """`count` UDP connects on one socket; counts the errno of each."""
    results: dict[str, int] = {}
    with socket.socket(_FAMILIES[family], socket.SOCK_DGRAM) as s:
        for _ in range(count):
            code = _errno(lambda: s.connect((addr, port)))
            results[str(code)] = results.get(str(code), 0) + 1
    return results


def time_connects(family: int, addr: str, port: int, count: int) -> float:
    """Nanoseconds per UDP connect over `count` connects on one socket (for bench/)."""
    with socket.socket(_FAMILIES[family], socket.SOCK_DGRAM) as s:
        target = (addr, port)
        start = time.perf_counter_ns()
        for _ in range(count):
            s.connect(target)
        return (time.perf_counter_ns() - start) / count


def time_sendto(addr: str, port: int, count: int) -> float:
    """Nanoseconds per UDP datagram sent over `count` sendto() calls (for bench/)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        target, payload = (addr, port), b"x" * 64
        start = time.perf_counter_ns()
        for _ in range(count):
            s.sendto(payload, target)
        return (time.perf_counter_ns() - start) / count


def time_sockets(count: int) -> float:
    """Nanoseconds per AF_UNIX socket() and close(): no cgroup socket hook sees them."""
    start = time.perf_counter_ns()
    for _ in range(count):
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()
    return (time.perf_counter_ns() - start) / count


def paced(family: int, addr: str, port: int, count: int, interval: float) -> int:
    """`count` UDP connects, one every `interval` seconds (for latency measurements)."""
    with socket.socket(_FAMILIES[family], socket.SOCK_DGRAM) as s:
        for _ in range(count):
            _errno(lambda: s.connect((addr, port)))
            time.sleep(interval)
    return count


def join_cgroup(path: str) -> int:
    """Move this process into `path`, as a workload escaping into a child cgroup would."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    return 0


def listen(addr: str, port: int) -> int:
    global _listener
    _listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _listener.bind((addr, port))
    _listener.listen(16)
    return 0


def connect_established(addr: str, port: int) -> int:
    """A blocking TCP connect that must complete a handshake (to our own listener)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        return _errno(lambda: s.connect((addr, port)))


def exchange(addr: str, port: int, payload: str) -> str:
    """One UDP datagram out, the reply back (hex both ways): a DNS query the parent
    made, sent from the workload so the kernel binds the answer to its socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(bytes.fromhex(payload), (addr, port))
        return s.recv(65535).hex()


def query_flood(addr: str, port: int, payloads: list[str], count: int) -> int:
    """`count` DNS queries (`payloads` in turn, the id changed each time) on one UDP
    socket, each waiting for its answer (for bench/); returns how many were answered."""
    queries = [bytearray(bytes.fromhex(p)) for p in payloads]
    answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for i in range(count):
            query = queries[i % len(queries)]
            query[0:2] = (i & 0xFFFF).to_bytes(2, "big")
            s.sendto(query, (addr, port))
            with contextlib.suppress(TimeoutError):
                s.recv(65535)
                answered += 1
    return answered


_listener: socket.socket | None = None
_kept: socket.socket | None = None
# Each takes the keyword arguments of a JSON command line.
COMMANDS: dict[str, Callable[..., Any]] = {
    "packet_socket": packet_socket,
    "packet_sockets": packet_sockets,
    "keep_socket": keep_socket,
    "send_kept": send_kept,
    "connect": connect,
    "sendto": sendto,
    "socket": open_socket,
    "flood": flood,
    "time_connects": time_connects,
    "time_sendto": time_sendto,
    "time_sockets": time_sockets,
    "paced": paced,
    "join_cgroup": join_cgroup,
    "listen": listen,
    "connect_established": connect_established,
    "exchange": exchange,
    "query_flood": query_flood,
}


def main() -> None:
    ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(COMM), 0, 0, 0)
    if len(sys.argv) > 1:
        fd = os.open(f"/run/netns/{sys.argv[1]}", os.O_RDONLY)
        if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)
    print(json.dumps({"pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.pop("op")
        try:
            result: Any = COMMANDS[op](**cmd)
        except OSError as exc:
            result = {"oserror": exc.errno or errno.EIO}
        print(json.dumps({"result": result}), flush=True)


class Workload:
    """Parent side: start the child in `netns`, move it into `cgroup_dir`, send it commands."""

    def __init__(self, netns_name: str, cgroup_dir: Path | None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netlogger.workload", netns_name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.pid: int = json.loads(self.proc.stdout.readline())["pid"]
        if cgroup_dir is not None:
            (cgroup_dir / "cgroup.procs").write_text(str(self.pid))

    def __call__(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["result"]

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate()

    def __enter__(self) -> Workload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    main()
