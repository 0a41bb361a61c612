"""What is closed, per kernel and per workload: the layers beyond the cgroup hooks.

The cgroup socket hooks govern inet sockets a governed task creates or uses.
Two holes remain, and two optional layers close them where they can:

- packet sockets (AF_PACKET, SOCK_PACKET, AF_XDP) write frames past every inet
  hook: the LSM layer denies creating them, on kernels that take lsm_cgroup;
- sockets made outside the scope and used inside it run no program at all:
  for containers, the backstop on the veth holds every frame to the policy,
  which also catches packet sockets, whatever the kernel.

`doctor` prints the layer table; `status` says per enrolled cgroup which
layers cover it and what is left open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from netlogger.kernel import features

LSM, BACKSTOP = "lsm", "backstop"
TITLES = {layer.name: layer.title for layer in features.LAYERS}
WHAT = {
    LSM: "AF_PACKET, SOCK_PACKET and AF_XDP sockets of enrolled cgroups are denied in the kernel",
    BACKSTOP: "every frame an enrolled container sends through its veth is held to its policy",
}
UNCOVERED_PACKET = "packet sockets (AF_PACKET) are not governed"


@dataclass(frozen=True)
class LayerCheck:
    name: str
    status: str  # ok / warn
    detail: str


def layer_checks(layers: dict[str, str | None]) -> list[LayerCheck]:
    """One doctor line per layer: available and what it closes, or unavailable and why."""
    out = []
    for name, why_not in layers.items():
        title = f"layer: {TITLES[name]}"
        if why_not is None:
            out.append(LayerCheck(title, "ok", f"available: {WHAT[name]}"))
        else:
            out.append(LayerCheck(title, "warn", f"unavailable: {why_not}"))
    return out


def covering(layers: dict[str, str | None], container: bool, veths: list[str]) -> list[str]:
    """The layers that govern one enrolled cgroup, the cgroup hooks first."""
    names = ["cgroup"]
    if layers.get(LSM) is None:
        names.append(LSM)
    if container and veths:
        names.append(BACKSTOP)
    return names


def open_holes(layers: dict[str, str | None], container: bool, veths: list[str]) -> list[str]:
    """What no layer closes for one enrolled cgroup, each with why."""
    covered = covering(layers, container, veths)
    if BACKSTOP in covered:
        return []
    holes = []
    if LSM not in covered:
        holes.append(f"{UNCOVERED_PACKET} ({layers[LSM]})")
    if container:
        why = layers.get(BACKSTOP) or "the container has no veth (host network?)"
        holes.append(f"no backstop: {why}")
    return holes


def notes(layers: dict[str, str | None], scope: Path, root: Path) -> list[str]:
    """Warnings for `status` that hold for the whole agent."""
    out = []
    if scope != root:
        out.append(
            f"the scope {scope} is narrower than the cgroup root {root}: sockets made outside "
            "it (passed in over a unix socket, or opened before a move into an enrolled "
            "cgroup) are not governed for plain cgroups; containers are held by the backstop"
        )
    if layers.get(LSM) is not None:
        out.append(
            f"{UNCOVERED_PACKET} in enrolled plain cgroups: the LSM layer is unavailable "
            f"({layers[LSM]}); drop CAP_NET_RAW there, or run them as containers"
        )
    return out
