"""A DNS lab inside the test's network namespaces: Debian's dnsmasq in the peer
namespace, workloads that resolve through the system resolver (glibc, a
private resolv.conf bind-mounted in their own mount namespace) and connect,
and a raw-socket spoofer that forges answers as the resolver.

dnsmasq listens only on RESOLVER inside the peer namespace, so it cannot bind
anything outside it. Every address it hands out routes into that namespace.
"""

from __future__ import annotations

import ctypes
import hashlib
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset

from netlogger import sandbox
from netlogger.kernel import abi
from netlogger.kernel.cgroup import Cgroup
from netlogger.kernel.ringbuf import RingReader

RESOLVER = "198.18.0.53"  # dnsmasq
SILENT = "198.18.0.54"  # a policy resolver nobody answers for: only the spoofer does
STRANGER = "198.18.0.99"  # no policy names it
SOURCE = Path(__file__).with_name("resolve_connect.c")


def client_binary() -> Path:
    """The C client, compiled once per source version and kept under the temp dir."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / f"nl-resolve-connect-{digest}"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(tmp), str(SOURCE)], check=True)
        tmp.rename(out)
    return out


def _join(cgroup_dir: Path) -> None:
    (cgroup_dir / "cgroup.procs").write_text("0")


@dataclass
class Lab:
    net: sandbox.Net
    etc: Path
    hosts: dict[str, list[str]] = field(default_factory=dict)

    def _in_workload(self, cg: Cgroup, argv: list[str]) -> list[str]:
        """argv run in the workload namespace and cgroup, with the lab's resolver config."""
        mounts = (
            f"mount --bind {self.etc}/resolv.conf /etc/resolv.conf && "
            f"mount --bind {self.etc}/nsswitch.conf /etc/nsswitch.conf && "
            f'mount --bind {self.etc}/hosts /etc/hosts && exec "$@"'
        )
        out = subprocess.run(
            ["ip", "netns", "exec", self.net.workload_ns, "sh", "-c", mounts, "sh", *argv],
            preexec_fn=lambda: _join(cg.path),
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return out.stdout.splitlines()

    def resolve_connect(
        self,
        cg: Cgroup,
        names: list[str],
        port: int = 443,
        every_address: bool = False,
        ipv6: bool = False,
    ) -> list[tuple[str, str, str]]:
        """(name, connect errno or eaiN, address) for each name, resolved then connected."""
        flags = (["-a"] if every_address else []) + (["-6"] if ipv6 else [])
        argv = [str(client_binary()), *flags, str(port), *names]
        rows = []
        for line in self._in_workload(cg, argv):
            name, result, *addr = line.split()
            rows.append((name, result, addr[0] if addr else ""))
        return rows

    def python(self, cg: Cgroup, code: str) -> subprocess.Popen[str]:
        """Python code running in the workload namespace and cgroup (stdin/stdout piped)."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.net.workload_ns, sys.executable, "-c", code],
            preexec_fn=lambda: _join(cg.path),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def forge(self, packets: list[bytes]) -> None:
        """Send raw IPv4 packets (headers included) from the resolver's namespace."""
        code = textwrap.dedent(
            """
            import socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            data = sys.stdin.buffer.read()
            while data:
                n = int.from_bytes(data[:2], "big")
                pkt, data = data[2 : 2 + n], data[2 + n :]
                s.sendto(pkt, (socket.inet_ntoa(pkt[16:20]), 0))
            """
        )
        framed = b"".join(len(p).to_bytes(2, "big") + p for p in packets)
        subprocess.run(
            ["ip", "netns", "exec", self.net.peer_ns, sys.executable, "-c", code],
            input=framed,
            check=True,
            timeout=30,
        )


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp4(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """An IPv4/UDP packet with valid checksums."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    length = 8 + len(payload)
    pseudo = s + d + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0, 64, 17, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return ip + udp


def answer(txid: int, qname: str, addrs: list[str], ttl: int = 300) -> bytes:
    """A well-formed A answer, as dnspython writes it."""
    query = dns.message.make_query(qname, dns.rdatatype.A, use_edns=False)
    query.id = txid
    resp = dns.message.make_response(query)
    if addrs:
        resp.answer.append(dns.rrset.from_text_list(f"{qname}.", ttl, "IN", "A", addrs))
    return resp.to_wire()


def query(txid: int, qname: str) -> bytes:
    q = dns.message.make_query(qname, dns.rdatatype.A, use_edns=False)
    q.id = txid
    return q.to_wire()


def dns_events(ring: RingReader) -> list[tuple[abi.DnsEvent, bytes]]:
    """Every nl_dns_event waiting in the ring, with its payload."""
    fixed = ctypes.sizeof(abi.DnsEvent)
    out = []
    for raw in ring.drain():
        ev = abi.DnsEvent.from_buffer_copy(raw[:fixed])
        out.append((ev, bytes(raw[fixed : fixed + ev.payload_len])))
    return out


def _wait_listening(ns: str, addr: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq exited with {proc.returncode}; see its log in the tmp dir")
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "ss", "-Hlun", f"src {addr}:53"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise RuntimeError("dnsmasq did not start listening")


@contextmanager
def lab(
    net: sandbox.Net,
    tmp: Path,
    hosts: dict[str, list[str]],
    cnames: dict[str, str] | None = None,
    ttl: int = 600,
) -> Iterator[Lab]:
    """dnsmasq answering `hosts` (name -> addresses) and `cnames` (alias -> target)."""
    etc = tmp / "etc"
    etc.mkdir()
    hosts_file = tmp / "dnsmasq.hosts"
    hosts_file.write_text("".join(f"{a} {n}\n" for n, addrs in hosts.items() for a in addrs))
    (etc / "resolv.conf").write_text(f"nameserver {RESOLVER}\noptions edns0 attempts:2 timeout:2\n")
    (etc / "nsswitch.conf").write_text("hosts: files dns\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    subprocess.run(
        ["ip", "netns", "exec", net.peer_ns, "ip", "addr", "add", f"{RESOLVER}/24", "dev", "nlp0"],
        check=True,
    )
    subprocess.run(
        ["ip", "netns", "exec", net.peer_ns, "ip", "addr", "add", f"{SILENT}/24", "dev", "nlp0"],
        check=True,
    )
    argv = [
        "ip", "netns", "exec", net.peer_ns, "dnsmasq", "--keep-in-foreground",
        "--conf-file=/dev/null", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts_file}",
        f"--listen-address={RESOLVER}", "--bind-interfaces", "--user=root", "--group=root",
        "--pid-file=", f"--local-ttl={ttl}", "--cache-size=0", "--no-negcache",
        *(f"--cname={alias},{target}" for alias, target in (cnames or {}).items()),
    ]  # fmt: skip
    log = (tmp / "dnsmasq.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=log)
    log.close()
    try:
        _wait_listening(net.peer_ns, RESOLVER, proc)
        yield Lab(net, etc, hosts)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
