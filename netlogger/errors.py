"""Every error netlogger raises on purpose.

    NetloggerError                  the CLI catches this and prints `error: Type: message`
    ├── ConfigError                 bad config or policy; carries every located problem (exit 2)
    ├── UsageError                  a bad argument on the command line (exit 2)
    ├── CgroupError                 a cgroup path that is not ours to govern (exit 2)
    ├── HostError                   the host lacks what netlogger needs (a cgroup2 mount)
    ├── KernelError                 the kernel or libbpf refused something (carries errno)
    │   ├── PrivilegeError          EPERM/EACCES: names the capabilities needed
    │   ├── LoadError               the verifier rejected a program (carries the log tail)
    │   ├── AttachError             attaching or swapping a cgroup link failed
    │   └── MapError                a map operation failed
    ├── NotSupportedError           the kernel lacks a feature; names it and the minimum kernel
    ├── StateError                  pinned state that cannot be reused or migrated
    ├── EngineError                 the container engine cannot be reached (the agent retries)
    └── AgentError                  the running agent is absent, busy, or said no

Exit codes: 2 for what the caller can fix by asking differently (usage,
validation, config), 1 for runtime failures; a type decides, never the call site.

Lower-layer errors (an errno from libbpf, bpf(2), mount(2) or the pin root)
become these in exactly one place: `netlogger.kernel.libbpf.error_for`, which
picks the type by the operation the caller names (`libbpf.Op`), never by the
wording of a message.
"""

from __future__ import annotations

from dataclasses import dataclass

CAPABILITY_HINT = "needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN (or root)"


class NetloggerError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One located configuration problem: `file:line: field: message`."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ConfigError(NetloggerError):
    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s)\n" + "\n".join(str(p) for p in problems))


class UsageError(NetloggerError):
    exit_code = 2


class CgroupError(NetloggerError):
    """A validation error like UsageError: a missing cgroup and one outside the scope are
    the same kind of mistake, and exit the same way."""

    exit_code = 2


class HostError(NetloggerError):
    pass


class KernelError(NetloggerError):
    def __init__(self, message: str, errno: int = 0) -> None:
        self.errno = errno
        super().__init__(message)


class PrivilegeError(KernelError):
    pass


class LoadError(KernelError):
    def __init__(self, message: str, errno: int = 0, log: str = "") -> None:
        self.log = log
        super().__init__(message + (f"\nverifier log (tail):\n{log}" if log else ""), errno)


class AttachError(KernelError):
    pass


class MapError(KernelError):
    pass


class NotSupportedError(NetloggerError):
    def __init__(self, feature: str, minimum: str) -> None:
        self.feature = feature
        self.minimum = minimum
        super().__init__(
            f"{feature} is not supported by this kernel (needs Linux {minimum} or later)"
        )


class StateError(NetloggerError):
    pass


class EngineError(NetloggerError):
    pass


class AgentError(NetloggerError):
    pass
