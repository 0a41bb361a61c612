"""Which capabilities this process holds, read from /proc/self/status."""

from __future__ import annotations

from pathlib import Path

from netlogger.errors import PrivilegeError

CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 13, 21, 38, 39
# What the agent needs: load programs and maps, attach to cgroups, pin and
# mount bpffs, move tasks between cgroups.
NEEDED = {"CAP_BPF": CAP_BPF, "CAP_NET_ADMIN": CAP_NET_ADMIN, "CAP_SYS_ADMIN": CAP_SYS_ADMIN}


# What a deployment grants (deploy/netlogger.service, deploy/compose.yaml): the
# three above, plus CAP_PERFMON for program run statistics and CAP_SYS_RESOURCE
# for RLIMIT_MEMLOCK on kernels before 5.11.
DEPLOYED = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_PERFMON", "CAP_SYS_RESOURCE"]


def effective(status: Path = Path("/proc/self/status")) -> int:
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def missing(caps: int | None = None) -> list[str]:
    caps = effective() if caps is None else caps
    lacking = [name for name, bit in NEEDED.items() if not caps >> bit & 1]
    if "CAP_BPF" in lacking and caps >> CAP_SYS_ADMIN & 1:
        lacking.remove("CAP_BPF")  # CAP_SYS_ADMIN covers it (and kernels before 5.8 lack it)
    return lacking


def require() -> None:
    lacking = missing()
    if lacking:
        raise PrivilegeError(
            f"missing {', '.join(lacking)}; run netlogger as root "
            "or grant these capabilities (see deploy/netlogger.service)"
        )
