"""The agent's control socket: one JSON request per line, one JSON reply per line.

`tail` is the one streaming command: after its request the agent writes items,
one JSON object per line, until either side closes. The socket is a unix
socket, mode 0600, owned by root: whoever can open it can change enforcement.

Errors travel as {"ok": false, "type": "UsageError", "message": "..."} and are
raised again on the client side as the same NetloggerError subclass.

    server.py    the socket: connections, their limit and idle timeout
    commands.py  what each request does in the agent
    client.py    the CLI's side: send a request, read the reply or the stream
"""

from __future__ import annotations

import os
from pathlib import Path

from netlogger.control.client import request, stream
from netlogger.control.server import ControlServer, check_free

DEFAULT_SOCKET = Path("/run/netlogger/control.sock")
ENV_SOCKET = "NETLOGGER_CONTROL_SOCKET"

__all__ = [
    "DEFAULT_SOCKET",
    "ENV_SOCKET",
    "ControlServer",
    "check_free",
    "request",
    "socket_path",
    "stream",
]


def socket_path(option: str | os.PathLike[str] | None) -> Path:
    """--control-socket, else $NETLOGGER_CONTROL_SOCKET, else the default."""
    return Path(option or os.environ.get(ENV_SOCKET) or DEFAULT_SOCKET)
