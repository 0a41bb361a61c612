"""The client side of the control socket: what the CLI's commands call."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from netlogger import errors
from netlogger.errors import AgentError, NetloggerError


def _raise_reply(reply: dict[str, Any]) -> None:
    if reply.get("type") == "ConfigError" and isinstance(reply.get("problems"), list):
        raise errors.ConfigError([errors.Problem(**p) for p in reply["problems"]])
    kind = getattr(errors, str(reply.get("type")), None)
    cls = kind if isinstance(kind, type) and issubclass(kind, NetloggerError) else AgentError
    try:
        exc = cls(reply.get("message", "the agent refused"))
    except TypeError:  # error types with structured constructors travel as AgentError
        exc = AgentError(reply.get("message", "the agent refused"))
    raise exc


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
    """Send a streaming command and yield each object the agent writes.

    Returns at the agent's end mark; a stream that stops without one (the agent
    stopped or died) raises AgentError, so a caller never takes that for the end.
    """
    with _connect(path, None) as sock, sock.makefile("rwb") as f:
        f.write(json.dumps({"op": op, **args}).encode() + b"\n")
        f.flush()
        try:
            for line in f:
                item = json.loads(line)
                if item.get("ok") is False:
                    _raise_reply(item)
                if item.get("end") is True and item.get("ok") is True:
                    return
                yield item
        except ConnectionResetError:
            pass
    raise AgentError(
        f"the agent on {path} went away (the stream ended without its end mark); "
        "see `netlogger status` or the agent's log, and run tail again once it is back"
    )
