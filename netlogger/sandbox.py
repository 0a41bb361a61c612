"""Throwaway cgroups and network namespaces, removed again even on failure.

`netlogger demo` and the kernel tests run their traffic here: a workload
namespace joined by a veth pair to a peer namespace, with default routes that
point at the peer, so every packet stays inside namespaces we made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, NetNS, netns

from netlogger.errors import UsageError
from netlogger.kernel import loader, pins
from netlogger.kernel.cgroup import Cgroup, resolve, root
from netlogger.kernel.plane import Plane

IFA_F_NODAD = 0x02


@dataclass(frozen=True)
class Net:
    workload_ns: str
    peer_ns: str
    local4: str = "198.18.0.1"
    peer4: str = "198.18.0.2"
    local6: str = "fd00:18::1"
    peer6: str = "fd00:18::2"


def _kill_members(path: Path) -> None:
    for procs in path.rglob("cgroup.procs"):
        for pid in procs.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _remove_tree(path: Path) -> None:
    """rmdir a cgroup and its descendants, deepest first, waiting out dying tasks."""
    if not path.exists():
        return
    _kill_members(path)
    dirs = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for directory in [*dirs, path]:
        for _ in range(100):
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)  # killed tasks leave the cgroup asynchronously


@contextlib.contextmanager
def cgroup(parent: Cgroup, name: str) -> Iterator[Cgroup]:
    """A new cgroup directory under `parent`, removed with anything left inside."""
    path = parent.path / name
    path.mkdir()
    try:
        yield resolve(path)
    finally:
        _remove_tree(path)


def _up(ns: NetNS, ifname: str) -> int:
    index: int = ns.link_lookup(ifname=ifname)[0]
    ns.link("set", index=index, state="up")
    return index


@contextlib.contextmanager
def network(tag: str = "") -> Iterator[Net]:
    """Two fresh network namespaces joined by a veth pair."""
    suffix = tag or uuid.uuid4().hex[:8]
    net = Net(f"nl-{suffix}-w", f"nl-{suffix}-p")
    try:
        netns.create(net.workload_ns)
        netns.create(net.peer_ns)
        with NetNS(net.workload_ns) as w:
            w.link(
                "add", ifname="nlw0", kind="veth", peer={"ifname": "nlp0", "net_ns_fd": net.peer_ns}
            )
            _up(w, "lo")
            i = _up(w, "nlw0")
            w.addr("add", index=i, address=net.local4, prefixlen=24)
            w.addr("add", index=i, address=net.local6, prefixlen=64, flags=IFA_F_NODAD)
            w.route("add", dst="0.0.0.0/0", gateway=net.peer4)
            w.route("add", dst="::/0", gateway=net.peer6, family=10)
        # Ping sockets exist only for the groups this range names; let the policy decide.
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                net.workload_ns,
                "sysctl",
                "-qw",
                "net.ipv4.ping_group_range=0 2147483647",
            ],
            check=True,
        )
        with NetNS(net.peer_ns) as p:
            _up(p, "lo")
            i = _up(p, "nlp0")
            p.addr("add", index=i, address=net.peer4, prefixlen=24)
            p.addr("add", index=i, address=net.peer6, prefixlen=64, flags=IFA_F_NODAD)
        yield net
    finally:
        for name in (net.workload_ns, net.peer_ns):
            with contextlib.suppress(OSError, FileNotFoundError):
                netns.remove(name)


def _listening(ns: str, address: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq exited with {proc.returncode}")
        ss = ["ip", "netns", "exec", ns, "ss", "-Hlun", f"src {address}:53"]
        if subprocess.run(ss, capture_output=True, text=True, check=False).stdout.strip():
            return
        time.sleep(0.05)
    raise RuntimeError("dnsmasq did not start listening")


@contextlib.contextmanager
def resolver(
    net: Net, address: str, hosts: dict[str, list[str]], workdir: Path, ttl: int = 600
) -> Iterator[str]:
    """Debian's dnsmasq in the peer namespace, answering `hosts` (name -> addresses) on
    `address` only (added to the peer's veth), with TTL `ttl`; yields `address`."""
    if shutil.which("dnsmasq") is None:
        raise UsageError("dnsmasq is not installed: apt-get install dnsmasq-base")
    hosts_file = workdir / "dnsmasq.hosts"
    hosts_file.write_text("".join(f"{a} {n}\n" for n, addrs in hosts.items() for a in addrs))
    with NetNS(net.peer_ns) as p:
        p.addr("add", index=p.link_lookup(ifname="nlp0")[0], address=address, prefixlen=24)
    argv = [
        "ip", "netns", "exec", net.peer_ns, "dnsmasq", "--keep-in-foreground",
        "--conf-file=/dev/null", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts_file}",
        f"--listen-address={address}", "--bind-interfaces", "--user=root", "--group=root",
        "--pid-file=", f"--local-ttl={ttl}", "--cache-size=0",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _listening(net.peer_ns, address, proc)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def host_veth(netns_name: str, host4: str, inner4: str, prefixlen: int = 24) -> Iterator[int]:
    """A veth from namespace `netns_name` into this one, as a container's is; yields the
    host side's ifindex. Removed (both ends) on the way out."""
    host_name, inner = f"nlh{uuid.uuid4().hex[:8]}", "nlv0"
    with IPRoute() as ip:
        ip.link("add", ifname=host_name, kind="veth", peer={"ifname": inner})
        try:
            index: int = ip.link_lookup(ifname=host_name)[0]
            ip.link("set", index=ip.link_lookup(ifname=inner)[0], net_ns_fd=netns_name)
            ip.addr("add", index=index, address=host4, prefixlen=prefixlen)
            ip.link("set", index=index, state="up")
            with NetNS(netns_name) as ns:
                inner_index = ns.link_lookup(ifname=inner)[0]
                ns.addr("add", index=inner_index, address=inner4, prefixlen=prefixlen)
                ns.link("set", index=inner_index, state="up")
            yield index
        finally:
            with contextlib.suppress(Exception):
                ip.link("del", index=ip.link_lookup(ifname=host_name)[0])


@contextlib.contextmanager
def plane(name: str) -> Iterator[Plane]:
    """The programs loaded and attached at a new scope cgroup `name`, pinned under a pin
    root of the same name; both removed again. Nothing outside the scope is touched."""
    with contextlib.ExitStack() as stack:
        scope = stack.enter_context(cgroup(root(), name))
        stack.callback(pins.teardown, Path("/sys/fs/bpf") / name)
        yield stack.enter_context(loader.loaded(Path("/sys/fs/bpf") / name, scope))
