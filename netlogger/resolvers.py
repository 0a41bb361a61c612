"""Resolver paths the kernel cannot see, found in a file system root.

Domain rules admit addresses from the UDP answers a workload's own sockets
receive, and the agent names destinations from the same answers. A lookup that
leaves the workload over a unix socket (nscd; nss-resolve, systemd-resolved's
NSS module, over varlink) is answered in another process: the workload then
connects to an address the kernel never saw answered, so domain rules deny it
and its records carry no name. systemd-resolved's stub (nameserver
127.0.0.53) is seen, over loopback, but only admits when the policy names it.

`root` is "/" for the host (doctor) or /proc/PID/root for a workload
(status), whose mount namespace may have its own /etc.
"""

from __future__ import annotations

from pathlib import Path

NSCD_SOCKETS = ("var/run/nscd/socket", "run/nscd/socket")
RESOLVED_STUB = "127.0.0.53"


def _read(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def unsupported(root: Path) -> list[str]:
    """One line per resolver path under `root` that domain rules cannot follow."""
    found = []
    hosts = [
        line.split(":", 1)[1].split("#", 1)[0].split()
        for line in _read(root / "etc/nsswitch.conf")
        if line.strip().startswith("hosts:")
    ]
    if any("resolve" in sources for sources in hosts):
        found.append("nss-resolve (hosts: resolve in nsswitch.conf)")
    nscd = next((s for s in NSCD_SOCKETS if (root / s).exists()), None)
    if nscd:
        found.append(f"nscd (/{nscd})")
    words = [line.split() for line in _read(root / "etc/resolv.conf")]
    if ["nameserver", RESOLVED_STUB] in (w[:2] for w in words):
        found.append(f"systemd-resolved stub ({RESOLVED_STUB}: name it in dns.resolvers)")
    return found


def of_cgroup(cg: Path, proc: Path = Path("/proc")) -> list[str] | None:
    """What `unsupported` finds for the first task in `cg` or below; None with no task."""
    for procs in cg.rglob("cgroup.procs"):
        for pid in _read(procs):
            root = proc / pid.strip() / "root"
            if root.exists():
                return unsupported(root)
    return None
