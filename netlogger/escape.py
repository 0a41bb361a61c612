"""What an enrolled container can do to get around enforcement, and what it means.

Read from the engine's view of the container (capabilities asked for, network
mode) and, once it runs, from its init process's effective capabilities, which
are what the kernel actually checks (a non-root user holds none of Docker's
default set, and Docker's default set includes CAP_NET_RAW).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netlogger.privileges import CAP_NET_ADMIN, CAP_NET_RAW

# Docker's default capability set holds NET_RAW (not NET_ADMIN).
_DEFAULT_CAPS = {"NET_RAW"}

MEANINGS = {
    "cap_net_raw": (
        "holds CAP_NET_RAW: it can open AF_PACKET sockets, which no cgroup socket hook "
        "sees, and send frames that bypass enforcement; run it with --cap-drop NET_RAW"
    ),
    "cap_net_admin": (
        "holds CAP_NET_ADMIN: it can reconfigure its network namespace (interfaces, "
        "routes, tunnels, netfilter) and so reach what its policy does not decide; "
        "drop it unless the workload needs it"
    ),
    "host_network": (
        "runs with --network host: its sockets are still decided, but it shares the "
        "host's interfaces and the host's loopback services, which the policy lets "
        "through unless it logs loopback"
    ),
    "shared_netns": (
        "shares another container's network namespace (--network container:...): "
        "connections that container opens are decided by that container's enrollment, "
        "and both see the same sockets and interfaces"
    ),
    "privileged": (
        "runs --privileged: it holds every capability and can load BPF programs, "
        "detach cgroup hooks or leave its cgroup; it cannot be contained"
    ),
}


@dataclass(frozen=True)
class Escape:
    kind: str  # a key of MEANINGS
    detail: str  # what exactly, e.g. which container's namespace

    @property
    def meaning(self) -> str:
        return MEANINGS[self.kind]


def _caps(names: list[str] | None) -> set[str]:
    return {n.upper().removeprefix("CAP_") for n in names or []}


def assess(attrs: dict[str, Any], cap_eff: int | None = None) -> list[Escape]:
    """Escapes of a container, from `docker inspect` attributes and, if running, CapEff."""
    host = attrs.get("HostConfig") or {}
    found: list[Escape] = []
    if host.get("Privileged"):
        found.append(Escape("privileged", "--privileged"))
    if cap_eff is not None:
        held = {name for name, bit in (("NET_RAW", CAP_NET_RAW), ("NET_ADMIN", CAP_NET_ADMIN))
                if cap_eff >> bit & 1}  # fmt: skip
        how = "effective capability of its init process"
    else:
        add, drop = _caps(host.get("CapAdd")), _caps(host.get("CapDrop"))
        held = set() if "ALL" in drop else (_DEFAULT_CAPS - drop)
        held |= {"NET_RAW", "NET_ADMIN"} if "ALL" in add or host.get("Privileged") else add
        how = "granted by the container's configuration"
    for cap in ("NET_RAW", "NET_ADMIN"):
        if cap in held:
            found.append(Escape(f"cap_{cap.lower()}", f"CAP_{cap} ({how})"))
    mode = str(host.get("NetworkMode") or "")
    if mode == "host":
        found.append(Escape("host_network", "--network host"))
    elif mode.startswith("container:"):
        found.append(Escape("shared_netns", f"joins the network namespace of {mode[10:][:12]}"))
    return found


def summary(escapes: list[Escape]) -> str | None:
    """The record's `escape` value: the kinds, comma-separated; None when there are none."""
    return ",".join(e.kind for e in escapes) or None
