"""The control socket's server side: one thread per connection, and a bound on both.

A connection holds a thread while it is open, so the server caps how many are
open at once (one beyond the cap gets a one-line error reply and is closed,
without a thread) and closes a connection that sends no request within the
idle timeout. A `tail` stream is long-lived by design: once its request is in,
the idle timeout no longer applies to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from netlogger import errors
from netlogger.errors import AgentError, ConfigError, NetloggerError

log = logging.getLogger("netlogger.control")

MAX_CONNECTIONS = 64
IDLE_SECONDS = 10.0  # a client sends its request at once; one that does not is gone or stuck
MAX_REQUEST_BYTES = 1 << 20
STOPPING = AgentError("the agent is stopping; the stream ends here")


_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Peer:
    """The client process, as the kernel states it (SO_PEERCRED), not as it claims."""

    pid: int
    uid: int
    gid: int


def peer_of(conn: socket.socket) -> Peer:
    pid, uid, gid = _UCRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return Peer(pid, uid, gid)


class Commands(Protocol):
    def handle(self, request: dict[str, Any], peer: Peer) -> Any: ...

    def stream(
        self, request: dict[str, Any], write: Callable[[bytes], None], closed: Callable[[], bool]
    ) -> None: ...


def error_line(exc: NetloggerError) -> bytes:
    reply: dict[str, Any] = {"ok": False, "type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, ConfigError):  # `reload`: the client prints them located
        reply["problems"] = [dataclasses.asdict(p) for p in exc.problems]
    return json.dumps(reply).encode() + b"\n"


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def setup(self) -> None:
        self.request.settimeout(self.server.idle_seconds)  # until its request is in
        super().setup()

    def handle(self) -> None:
        try:
            line = self.rfile.readline(MAX_REQUEST_BYTES)
        except TimeoutError:
            return  # idle past the timeout: the thread goes back
        if not line:
            return
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or "op" not in request:
                raise errors.UsageError("a request is a JSON object with an `op`")
            if request["op"] == "tail":
                self.request.settimeout(None)  # a stream lives until either side closes
                self._stream(request)
                return
            result = self.server.commands.handle(request, peer_of(self.request))
            reply = json.dumps({"ok": True, "result": result})
            data = reply.encode() + b"\n"
        except NetloggerError as exc:
            data = error_line(exc)
        except (ValueError, TypeError) as exc:
            data = error_line(errors.UsageError(f"bad request: {exc}"))
        except Exception as exc:  # a bad request must never take the agent down
            log.exception("control request failed")
            data = error_line(AgentError(f"internal error: {type(exc).__name__}: {exc}"))
        self._send(data)

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.wfile.write(data)
            self.wfile.flush()

    def _stream(self, request: dict[str, Any]) -> None:
        conn = self.request
        gone = threading.Event()

        def write(data: bytes) -> None:
            try:
                conn.sendall(data)
            except OSError:
                gone.set()

        def closed() -> bool:
            if gone.is_set() or self.server.closing.is_set():
                return True
            try:  # a client that hung up reads as EOF
                if conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    gone.set()
            except BlockingIOError:
                pass
            except OSError:
                gone.set()
            return gone.is_set()

        try:
            self.server.commands.stream(request, write, closed)
        except NetloggerError as exc:
            write(error_line(exc))
            return
        if self.server.closing.is_set():  # not the end the client asked for: say why
            write(error_line(STOPPING))


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(
        self, path: str, commands: Commands, max_connections: int, idle_seconds: float
    ) -> None:
        self.commands = commands
        self.closing = threading.Event()
        self.max_connections = max_connections
        self.idle_seconds = idle_seconds
        self._open = 0
        self._open_lock = threading.Lock()
        self.request_queue_size = max_connections  # a burst of clients waits, not EAGAIN
        super().__init__(path, _Handler)

    def open_connections(self) -> int:
        with self._open_lock:
            return self._open

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            full = self._open >= self.max_connections
            if not full:
                self._open += 1
        if not full:
            super().process_request(request, client_address)
            return
        refusal = error_line(
            AgentError(
                f"the agent already serves {self.max_connections} control connections; "
                "try again shortly"
            )
        )
        with contextlib.suppress(OSError):  # never wait on a client we are turning away
            request.send(refusal, socket.MSG_DONTWAIT)
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open -= 1


class ControlServer:
    """Serves `commands` on a 0600 unix socket until closed."""

    def __init__(
        self,
        path: Path,
        commands: Commands,
        max_connections: int = MAX_CONNECTIONS,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.path = path
        check_free(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            self._server = _Server(str(path), commands, max_connections, idle_seconds)
        finally:
            os.umask(old)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="control", daemon=True
        )
        self._thread.start()

    def open_connections(self) -> int:
        return self._server.open_connections()

    def close(self) -> None:
        self._server.closing.set()
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def check_free(path: Path) -> None:
    """Refuse a socket another agent answers on; remove one left by a dead agent."""
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
            return
    raise AgentError(f"another netlogger agent answers on {path}; stop it or use --control-socket")
