"""The container backstop: nl_backstop (tc) on the host side of each enrolled container's veth.

Whatever a container sends leaves through its veth, so the tc ingress of the
veth's host side sees every frame: from sockets the cgroup hooks never ran for
(packet sockets, sockets passed in from outside the scope) as well as from
governed ones. The program holds each frame to the container's policy through
nl_veths (host ifindex -> enrolled cgroup id), so mode, bypass and policy
changes apply to it the moment the enrollment map changes.

Finding the veth: the container's network namespace is its init process's
(/proc/<pid>/ns/net); inside it, each veth's IFLA_LINK is the ifindex of its
peer in the host's namespace, which is where the filter goes.

The filter is owned by the kernel, not by us: it stays attached while the agent
is down, and a restarted agent replaces it in place (BPF_TC_F_REPLACE), so a
container is never without it. It goes with the veth when the container stops.
"""

from __future__ import annotations

import ctypes
import errno as errnos
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pyroute2 import IPRoute, NetNS

from netlogger.containers import Container
from netlogger.errors import UsageError
from netlogger.kernel import abi, cgroup, libbpf
from netlogger.kernel.libbpf import Op
from netlogger.kernel.plane import Plane
from netlogger.kernel.spec import BACKSTOP

log = logging.getLogger("netlogger.backstop")

# The handle and priority of our filter on the clsact ingress hook ("NL"), so
# that we replace and detach only our own and leave other filters alone.
HANDLE = PRIORITY = 0x4E4C


@dataclass(frozen=True)
class Veth:
    ifindex: int  # host side
    name: str  # host side


def host_veths(pid: int) -> list[Veth]:
    """The host-side ends of the veths in process `pid`'s network namespace."""
    with NetNS(f"/proc/{pid}/ns/net") as ns:
        peers = {
            int(link.get("link"))
            for link in ns.get_links()
            if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth" and link.get("link")
        }
    if not peers:
        return []
    with IPRoute() as ip:
        return [
            Veth(int(link["index"]), str(link.get("ifname")))
            for link in ip.get_links()
            if link["index"] in peers
            and link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth"
        ]


def _hook(ifindex: int) -> libbpf.TcHook:
    return libbpf.TcHook(
        sz=ctypes.sizeof(libbpf.TcHook), ifindex=ifindex, attach_point=libbpf.BPF_TC_INGRESS
    )


def _opts(prog_fd: int = 0, flags: int = 0) -> libbpf.TcOpts:
    return libbpf.TcOpts(
        sz=ctypes.sizeof(libbpf.TcOpts),
        prog_fd=prog_fd,
        flags=flags,
        handle=HANDLE,
        priority=PRIORITY,
    )


def _has_clsact(ifindex: int) -> bool:
    with IPRoute() as ip:
        return any(q.get("kind") == "clsact" for q in ip.get_qdiscs(index=ifindex))


def attach_filter(ifindex: int, prog_fd: int) -> None:
    """Put the program on `ifindex`'s ingress, replacing ours if one is there."""
    hook = _hook(ifindex)
    # Asked first: libbpf logs the kernel's complaint about an existing clsact as a warning.
    if not _has_clsact(ifindex):
        ret = libbpf.bpf_tc_hook_create(ctypes.byref(hook))
        if ret < 0 and -ret != errnos.EEXIST:
            libbpf.raise_for_errno(-ret, Op.ATTACH, f"make the tc hook of ifindex {ifindex}")
    opts = _opts(prog_fd, libbpf.BPF_TC_F_REPLACE)
    libbpf.call(
        libbpf.bpf_tc_attach,
        Op.ATTACH,
        f"attach {BACKSTOP} to ifindex {ifindex}",
        ctypes.byref(hook),
        ctypes.byref(opts),
    )


def detach_filter(ifindex: int) -> bool:
    """Take our filter off `ifindex`; False when it (or the device) is already gone."""
    if not _has_clsact(ifindex):
        return False
    ret: int = libbpf.bpf_tc_detach(ctypes.byref(_hook(ifindex)), ctypes.byref(_opts()))
    if ret < 0 and -ret not in (errnos.ENOENT, errnos.ENODEV, errnos.EINVAL):
        libbpf.raise_for_errno(-ret, Op.ATTACH, f"detach {BACKSTOP} from ifindex {ifindex}")
    return ret == 0


class Backstop:
    """Attaches the backstop to enrolled containers' veths, and remembers which."""

    def __init__(self, plane: Plane) -> None:
        self.plane = plane
        self.why_not = plane.layers.get("backstop")
        self._lock = threading.Lock()
        self._veths: dict[str, list[Veth]] = {}  # container id -> its host-side veths

    def attach(self, container: Container) -> list[Veth]:
        """Hold `container`'s frames to its enrolled cgroup's policy; [] when it has no veth.

        The map entry goes in before the filter, so the filter's first frame is decided.
        """
        if self.why_not is not None:
            raise UsageError(f"the container backstop is unavailable here: {self.why_not}")
        prog_fd = self.plane.prog_fds[BACKSTOP]
        cgroup_id = cgroup.resolve(container.cgroup).id
        veths = host_veths(container.pid)
        with self._lock:
            for veth in veths:
                self.plane.veths.update(veth.ifindex, abi.Veth(cgroup_id))
                attach_filter(veth.ifindex, prog_fd)
            self._veths[container.id] = veths
        log.info("backstop on %s for container %s", [v.name for v in veths], container.id[:12])
        return veths

    def cover(self, container: Container) -> list[Veth]:
        """`attach` where this kernel takes the backstop, and never raise.

        A failure leaves the container enrolled (the cgroup hooks govern it); it
        shows in `status` as a container the backstop does not cover.
        """
        if self.why_not is not None:
            return []
        try:
            return self.attach(container)
        except Exception as exc:  # the container may have exited meanwhile
            log.warning("backstop for container %s: %s", container.id[:12], exc)
            return []

    def recover(self, container_ids: list[str], find: Callable[[str], Container]) -> None:
        """After a restart: replace the filters of containers enrolled before it."""
        for container_id in container_ids:
            try:
                self.cover(find(container_id))
            except UsageError as exc:  # gone while the agent was down
                log.warning("backstop for container %s: %s", container_id[:12], exc)

    def detach(self, container_id: str) -> list[Veth]:
        """Take the backstop off a container's veths (gone with it, usually)."""
        with self._lock:
            veths = self._veths.pop(container_id, [])
            for veth in veths:
                detach_filter(veth.ifindex)
                self.plane.veths.delete(veth.ifindex)
        return veths

    def veths_of(self, container_id: str) -> list[Veth]:
        with self._lock:
            return list(self._veths.get(container_id, []))
