"""Host-port checks done before anything is asked of Docker.

A port is free when 127.0.0.1 can bind it. A busy port is still fine when the container
holding it belongs to this very stack (so a second `up` is not refused by the first one);
finding that out is a read-only question to the engine, asked only for busy ports.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterable

from monitor.errors import PortInUseError
from monitor.settings import Monitoring, check_distinct_ports

BIND_HOST = "127.0.0.1"


def is_free(port: int, host: str = BIND_HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port in TIME_WAIT is free for Docker's proxy too; only a listener
        # (or a bound socket) makes bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def check(mon: Monitoring, owned_by_stack: Callable[[], Iterable[int]]) -> None:
    """Raise ConfigError for duplicates, PortInUseError for ports held by someone else."""
    check_distinct_ports(mon)
    busy = {key: port for key, port in mon.host_ports().items() if not is_free(port)}
    if not busy:
        return
    ours = set(owned_by_stack())
    foreign = {key: port for key, port in busy.items() if port not in ours}
    if foreign:
        listing = ", ".join(f"{port} (monitoring.{key})" for key, port in foreign.items())
        raise PortInUseError(
            f"host port in use by another process: {listing}; stop that process or set another "
            "port under monitoring: in settings.yaml"
        )
