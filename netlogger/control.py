"""The agent's control socket: one JSON request per line, one JSON reply per line.

`tail` is the one streaming command: after its request the agent writes items,
one JSON object per line, until either side closes. The socket is a unix
socket, mode 0600, owned by root: whoever can open it can change enforcement.

Errors travel as {"ok": false, "type": "UsageError", "message": "..."} and are
raised again on the client side as the same NetloggerError subclass.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from netlogger import errors
from netlogger.errors import AgentError, NetloggerError

log = logging.getLogger("netlogger.control")

DEFAULT_SOCKET = Path("/run/netlogger/control.sock")
ENV_SOCKET = "NETLOGGER_CONTROL_SOCKET"


class Commands(Protocol):
    def handle(self, request: dict[str, Any]) -> Any: ...

    def stream(
        self, request: dict[str, Any], write: Callable[[bytes], None], closed: Callable[[], bool]
    ) -> None: ...


def socket_path(option: str | os.PathLike[str] | None) -> Path:
    """--control-socket, else $NETLOGGER_CONTROL_SOCKET, else the default."""
    return Path(option or os.environ.get(ENV_SOCKET) or DEFAULT_SOCKET)


def _error_reply(exc: NetloggerError) -> dict[str, Any]:
    return {"ok": False, "type": type(exc).__name__, "message": str(exc)}


def _raise_reply(reply: dict[str, Any]) -> None:
    kind = getattr(errors, str(reply.get("type")), None)
    cls = kind if isinstance(kind, type) and issubclass(kind, NetloggerError) else AgentError
    try:
        exc = cls(reply.get("message", "the agent refused"))
    except TypeError:  # error types with structured constructors travel as AgentError
        exc = AgentError(reply.get("message", "the agent refused"))
    raise exc


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(1 << 20)
        if not line:
            return
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or "op" not in request:
                raise errors.UsageError("a request is a JSON object with an `op`")
            if request["op"] == "tail":
                self._stream(request)
                return
            reply: dict[str, Any] = {"ok": True, "result": self.server.commands.handle(request)}
        except NetloggerError as exc:
            reply = _error_reply(exc)
        except (ValueError, TypeError) as exc:
            reply = _error_reply(errors.UsageError(f"bad request: {exc}"))
        except Exception as exc:  # a bad request must never take the agent down
            log.exception("control request failed")
            reply = _error_reply(AgentError(f"internal error: {type(exc).__name__}: {exc}"))
        self._send(json.dumps(reply).encode() + b"\n")

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
            write(json.dumps(_error_reply(exc)).encode() + b"\n")


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, commands: Commands) -> None:
        self.commands = commands
        self.closing = threading.Event()
        super().__init__(path, _Handler)


class ControlServer:
    """Serves `commands` on a 0600 unix socket until closed."""

    def __init__(self, path: Path, commands: Commands) -> None:
        self.path = path
        check_free(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            self._server = _Server(str(path), commands)
        finally:
            os.umask(old)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="control", daemon=True
        )
        self._thread.start()

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


def _connect(path: Path, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise AgentError(
            f"no agent is listening on {path}; start one with `netlogger run`, "
            "or point --control-socket at it"
        ) from None
    except PermissionError:
        sock.close()
        raise errors.PrivilegeError(
            f"cannot open {path}: the control socket is root's (0600); run this as root"
        ) from None
    return sock


def request(path: Path, op: str, timeout: float = 30.0, **args: Any) -> Any:
    """Send one command and return its result, or raise what the agent raised."""
    with _connect(path, timeout) as sock, sock.makefile("rwb") as f:
        f.write(json.dumps({"op": op, **args}).encode() + b"\n")
        f.flush()
        line = f.readline()
    if not line:
        raise AgentError(f"the agent on {path} closed the connection without answering")
    reply = json.loads(line)
    if not reply.get("ok"):
        _raise_reply(reply)
    return reply.get("result")


def stream(path: Path, op: str, **args: Any) -> Iterator[dict[str, Any]]:
    """Send a streaming command and yield each object the agent writes."""
    with _connect(path, None) as sock, sock.makefile("rwb") as f:
        f.write(json.dumps({"op": op, **args}).encode() + b"\n")
        f.flush()
        for line in f:
            item = json.loads(line)
            if item.get("ok") is False:
                _raise_reply(item)
            yield item
