"""Errors the monitor raises, one type per thing a user can act on.

    MonitorError                 base; the CLI prints `error: <Type>: <message>` and exits 1
    ├── ConfigError              settings file or option is wrong (exit 2); lists every problem
    ├── PortInUseError           a host port the stack needs is held by something else
    ├── DockerUnavailableError   the Docker engine (or the Compose v2 plugin) cannot be reached
    ├── ComposeError             `docker compose` itself failed
    ├── BootstrapError           the one-shot bootstrap container exited non-zero
    ├── StackTimeoutError        a bounded wait ran out before the stack was ready
    └── CertError                certificate material is missing or unreadable

Lower-layer errors (docker SDK, subprocess, OSError, yaml) are mapped to these at the point
where they happen, so the CLI only ever catches `MonitorError`.
"""

from __future__ import annotations


class MonitorError(Exception):
    """Base of every error the monitor reports to users."""

    exit_code = 1


class ConfigError(MonitorError):
    """Settings are invalid; `problems` holds one located line per problem."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        detail = "".join(f"\n  {p}" for p in self.problems)
        super().__init__(message + detail)


class PortInUseError(MonitorError):
    """A host port is held by a process that is not this stack."""


class DockerUnavailableError(MonitorError):
    """The Docker engine or the Compose v2 CLI plugin is not usable."""


class ComposeError(MonitorError):
    """`docker compose` exited non-zero for a reason other than the bootstrap."""


class BootstrapError(MonitorError):
    """The bootstrap container failed; the stack is left half-up on purpose."""


class StackTimeoutError(MonitorError):
    """A bounded wait expired."""


class CertError(MonitorError):
    """Certificate material could not be made or read."""
