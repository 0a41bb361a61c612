"""Domain rules in the kernel, against a real dnsmasq and glibc's resolver.

Workloads resolve through the system resolver and connect at once; the
kernel must have admitted the address before the answer reached them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netlogger import sandbox
from netlogger.config.check import check_source
from netlogger.config.source import parse
from netlogger.enforce import Enforcer, Target
from netlogger.kernel import abi, cgroup, loader
from netlogger.kernel.maps import BpfMap
from netlogger.kernel.plane import open_inner
from netlogger.kernel.ringbuf import RingReader
from netlogger.policy.compile import PolicySet
from tests.e2e.test_containers import IMAGE, engine  # noqa: F401 (the engine fixture)
from tests.kernel import dnslab
from tests.kernel.dnslab import RESOLVER, SILENT, STRANGER

EPERM, EINPROGRESS = errno.EPERM, errno.EINPROGRESS
OK, DENIED = str(EINPROGRESS), str(EPERM)

DNS_POLICY = f"""
policies:
  default:
    dns: {{resolvers: [{RESOLVER}, {SILENT}]}}
    allow:
      - {{domain: "*.ok.test", ports: [443], proto: tcp, name: ok-wild}}
      - {{domain: many.lab.test, ports: [443], proto: tcp, name: many}}
      - {{domain: alias.lab.test, ports: [443], proto: tcp, name: alias}}
"""

RUNS, NAMES = 3, 200
FRESH = {
    f"n{run}-{i}.ok.test": [f"198.19.{run}.{i + 1}"] for run in range(RUNS) for i in range(NAMES)
}
HOSTS = {
    **FRESH,
    "web.no.test": ["198.20.0.1"],
    "many.lab.test": [f"198.21.0.{i}" for i in range(1, 41)],
    "target.far.test": ["198.22.0.9"],
    "late.ok.test": ["198.19.200.1"],
    "after.ok.test": ["198.19.200.2"],
    "after.no.test": ["198.20.0.2"],
    "six.ok.test": ["fd00:19::6"],
}
CNAMES = {"alias.lab.test": "target.far.test"}


@pytest.fixture
def policies() -> PolicySet:
    return check_source(parse(DNS_POLICY, "dns-policy.yaml")).policies


@pytest.fixture
def lab(net: sandbox.Net, tmp_path: Path) -> Iterator[dnslab.Lab]:
    with dnslab.lab(net, tmp_path, HOSTS, CNAMES) as the_lab:
        yield the_lab


@pytest.fixture
def dns_ring(plane: loader.Plane) -> Iterator[RingReader]:
    with plane.dns_reader() as r:
        yield r


def verdicts(ring: RingReader) -> list[tuple[str, int]]:
    return [(abi.DnsVerdict(ev.verdict).name, ev.admitted) for ev, _ in dnslab.dns_events(ring)]


def raw_events(ring: RingReader) -> list[abi.Event]:
    return [abi.Event.from_buffer_copy(raw) for raw in ring.drain()]


def test_fresh_names_admit_before_the_answer_arrives(enrolled, lab, dns_ring, read) -> None:
    cg = enrolled("a")
    for run in range(RUNS):
        names = [f"n{run}-{i}.ok.test" for i in range(NAMES)]
        rows = lab.resolve_connect(cg, names)
        assert [(n, r) for n, r, _ in rows] == [(n, OK) for n in names], f"run {run}"
        assert [a for _, _, a in rows] == [FRESH[n][0] for n in names]
    assert verdicts(dns_ring) == [("ADMITTED", 1)] * (RUNS * NAMES)
    records = [r for r in read() if r.dst_port == "443"]
    assert len(records) == RUNS * NAMES
    assert {(r.action, r.reason, r.rule) for r in records} == {("allowed", "rule", "ok-wild")}
    assert all(r.identity != "0" for r in records)


def test_a_name_no_rule_matches_stays_unresolved(enrolled, lab, dns_ring, read) -> None:
    cg = enrolled("a")
    assert lab.resolve_connect(cg, ["web.no.test"]) == [("web.no.test", DENIED, "198.20.0.1")]
    assert verdicts(dns_ring) == [("NOT_MATCHED", 0)]
    (rec,) = [r for r in read() if r.dst_port == "443"]
    assert (rec.action, rec.reason, rec.rule, rec.dst_ip) == (
        "denied",
        "unresolved_ip",
        None,
        "198.20.0.1",
    )


def test_admitted_only_on_the_rule_ports(enrolled, lab, read) -> None:
    cg = enrolled("a")
    assert lab.resolve_connect(cg, ["late.ok.test"], port=22) == [
        ("late.ok.test", DENIED, "198.19.200.1")
    ]
    (rec,) = [r for r in read() if r.dst_port == "22"]
    assert (rec.action, rec.reason) == ("denied", "default_deny")


def test_forty_address_answer_is_admitted_whole(enrolled, lab, dns_ring, plane) -> None:
    cg = enrolled("a")
    rows = lab.resolve_connect(cg, ["many.lab.test"], every_address=True)
    assert sorted(a for _, _, a in rows) == sorted(HOSTS["many.lab.test"])
    assert {r for _, r, _ in rows} == {OK}
    assert verdicts(dns_ring) == [("ADMITTED", 40)]
    assert len(plane.admitted(cg.id)) == 40


def test_aaaa_answer_admits_an_ipv6_destination(enrolled, lab, dns_ring, plane, read) -> None:
    cg = enrolled("a")
    assert lab.resolve_connect(cg, ["six.ok.test"], ipv6=True) == [
        ("six.ok.test", OK, "fd00:19::6")
    ]
    assert verdicts(dns_ring) == [("ADMITTED", 1)]
    assert (abi.Family.INET6, bytes.fromhex("fd000019" + "0" * 22 + "06")) in plane.admitted(cg.id)
    (rec,) = [r for r in read() if r.dst_port == "443"]
    assert (rec.action, rec.rule, rec.dst_ip, rec.ipv6) == (
        "allowed",
        "ok-wild",
        "fd00:19::6",
        True,
    )


def test_cname_chain_admits_the_target_under_the_alias_rule(enrolled, lab, dns_ring, read) -> None:
    cg = enrolled("a")
    assert lab.resolve_connect(cg, ["alias.lab.test"]) == [("alias.lab.test", OK, "198.22.0.9")]
    (ev, payload) = dnslab.dns_events(dns_ring)[0]
    assert (abi.DnsVerdict(ev.verdict), ev.admitted) == (abi.DnsVerdict.ADMITTED, 1)
    assert b"\x06target\x03far\x04test" in payload and ev.payload_len == ev.msg_len
    (rec,) = [r for r in read() if r.dst_port == "443"]
    assert (rec.action, rec.rule) == ("allowed", "alias")


def test_expiry_is_the_ttl_floored_and_only_extended(enrolled, lab, plane) -> None:
    cg = enrolled("a")
    lab.resolve_connect(cg, ["late.ok.test"])
    first = plane.admitted(cg.id)[(abi.Family.INET, bytes([198, 19, 200, 1]))].slot[0].expires_ns
    lab.resolve_connect(cg, ["late.ok.test"])
    second = plane.admitted(cg.id)[(abi.Family.INET, bytes([198, 19, 200, 1]))].slot[0].expires_ns
    assert second > first  # a fresh answer moves it later, never earlier
    left_s = (second - sandbox_now()) / 1e9
    assert 590 < left_s <= 600  # dnsmasq's --local-ttl=600, inside floor 60 .. cap 3600


def sandbox_now() -> int:
    import time

    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def send_queries(
    lab: dnslab.Lab, cg: Any, port: int, queries: list[tuple[int, str]]
) -> subprocess.Popen[str]:
    """The workload sends these queries to SILENT from 198.18.0.1:port, then waits."""
    wire = [dnslab.query(txid, name).hex() for txid, name in queries]
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"s.bind(('198.18.0.1', {port}))\n"
        f"for w in {wire!r}:\n"
        f"    s.sendto(bytes.fromhex(w), ('{SILENT}', 53))\n"
        "print('sent', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    proc = lab.python(cg, code)
    assert proc.stdout is not None and proc.stdout.readline() == "sent\n"
    return proc


@pytest.fixture
def querier(lab: dnslab.Lab) -> Iterator[Any]:
    """querier(cg, port, [(txid, name)]): a workload socket with those queries outstanding."""
    procs: list[subprocess.Popen[str]] = []
    yield lambda cg, port, queries: procs.append(send_queries(lab, cg, port, queries))
    for proc in procs:
        proc.communicate("\n", timeout=10)


def test_spoofed_answers_admit_nothing(enrolled, lab, querier, spawn, dns_ring, read) -> None:
    cg = enrolled("a")
    querier(cg, 40053, [(0x1234, "spoof.ok.test")])
    target = ["198.19.250.1"]

    def forged(src: str, txid: int, name: str) -> bytes:
        return dnslab.udp4(src, 53, "198.18.0.1", 40053, dnslab.answer(txid, name, target))

    lab.forge(
        [
            forged(SILENT, 0x1235, "spoof.ok.test"),  # the wrong id
            forged(STRANGER, 0x1234, "spoof.ok.test"),  # not a policy resolver
            forged(SILENT, 0x1234, "evil.ok.test"),  # another question
        ]
    )
    w = spawn(cg)
    assert w("connect", family=4, type="tcp", addr="198.19.250.1", port=443) == EPERM
    assert verdicts(dns_ring) == [("UNSOLICITED", 0), ("FOREIGN", 0), ("UNSOLICITED", 0)]
    # The one answer that matches the query, from its resolver, is what admits.
    lab.forge([forged(SILENT, 0x1234, "spoof.ok.test")])
    assert w("connect", family=4, type="tcp", addr="198.19.250.1", port=443) == EINPROGRESS
    assert verdicts(dns_ring) == [("ADMITTED", 1)]
    # Consumed: a replay of the same answer is unsolicited.
    lab.forge([forged(SILENT, 0x1234, "spoof.ok.test")])
    assert verdicts(dns_ring) == [("UNSOLICITED", 0)]
    reasons = [(r.action, r.reason) for r in read() if r.dst_port == "443"]
    assert reasons == [("denied", "unresolved_ip"), ("allowed", "rule")]


def _header(txid: int, ancount: int, flags: int = 0x8180) -> bytes:
    return struct.pack("!HHHHHH", txid, flags, 1, ancount, 0, 0)


QNAME = b"\x05craft\x02ok\x04test\x00"
QTAIL = b"\x00\x01\x00\x01"


def _a(owner: bytes, addr: str, rdlen: int = 4) -> bytes:
    rdata = bytes(int(x) for x in addr.split("."))
    return owner + struct.pack("!HHIH", 1, 1, 300, rdlen) + rdata


CRAFTED: dict[str, tuple[bytes, str]] = {
    # name -> (message after the header's txid-dependent part, expected verdict)
    "question pointer to itself": (_header(0, 0)[2:] + b"\xc0\x0c" + QTAIL, "MALFORMED"),
    "owner pointer to itself": (_header(0, 1)[2:] + QNAME + QTAIL + b"\xc0\x1f", "MALFORMED"),
    "two pointers in a ring": (
        _header(0, 1)[2:] + QNAME + QTAIL + b"\x01a\xc0\x21" + b"\xc0\x1f",
        "MALFORMED",
    ),
    "record cut short": (_header(0, 1)[2:] + QNAME + QTAIL + b"\xc0\x0c\x00\x01\x00", "MALFORMED"),
    "rdlength past the end": (
        _header(0, 1)[2:] + QNAME + QTAIL + _a(b"\xc0\x0c", "198.19.251.1", rdlen=40),
        "MALFORMED",
    ),
    "obsolete label type": (_header(0, 0)[2:] + b"\x45craft" + QTAIL, "MALFORMED"),
    "more answers than the packet holds": (
        _header(0, 0xFFFF)[2:] + QNAME + QTAIL + _a(b"\xc0\x0c", "198.19.251.2"),
        "MALFORMED",
    ),
    "name longer than 255": (
        _header(0, 0)[2:]
        + b"\x3f"
        + b"a" * 63
        + b"\x3f"
        + b"b" * 63
        + b"\x3f"
        + b"c" * 63
        + b"\x3f"
        + b"d" * 63
        + b"\x00"
        + QTAIL,
        "MALFORMED",
    ),
    "nothing after the header": (_header(0, 0)[2:], "MALFORMED"),
    "address of the wrong length": (
        _header(0, 1)[2:] + QNAME + QTAIL + _a(b"\xc0\x0c", "198.19.251.3", rdlen=5) + b"\0",
        "ADMITTED",
    ),
}


def test_crafted_packets_through_the_real_hook_admit_nothing(
    enrolled, lab, querier, spawn, dns_ring
) -> None:
    cg = enrolled("a")
    txids = list(range(100, 100 + len(CRAFTED)))
    querier(cg, 40054, [(t, "craft.ok.test") for t in txids])
    packets = [
        dnslab.udp4(SILENT, 53, "198.18.0.1", 40054, struct.pack("!H", t) + body)
        for t, (body, _) in zip(txids, CRAFTED.values(), strict=True)
    ]
    lab.forge(packets)
    got = verdicts(dns_ring)
    assert got == [(want, 0) for _, want in CRAFTED.values()], list(CRAFTED)
    w = spawn(cg)
    for last in (1, 2, 3):
        assert w("connect", family=4, type="tcp", addr=f"198.19.251.{last}", port=443) == EPERM
    # The hooks still work after all that.
    assert lab.resolve_connect(cg, ["after.ok.test"]) == [("after.ok.test", OK, "198.19.200.2")]


def test_truncated_answer_admits_nothing(enrolled, lab, querier, spawn, dns_ring) -> None:
    cg = enrolled("a")
    querier(cg, 40055, [(7, "craft.ok.test")])
    body = _header(0, 1, flags=0x8380)[2:] + QNAME + QTAIL + _a(b"\xc0\x0c", "198.19.251.9")
    lab.forge([dnslab.udp4(SILENT, 53, "198.18.0.1", 40055, struct.pack("!H", 7) + body)])
    ((ev, _),) = dnslab.dns_events(dns_ring)
    assert (ev.admitted, ev.flags & abi.DnsFlag.TRUNCATED) == (0, abi.DnsFlag.TRUNCATED)
    assert spawn(cg)("connect", family=4, type="tcp", addr="198.19.251.9", port=443) == EPERM


def test_resolver_bypass_reasons(enrolled, spawn, read) -> None:
    w = spawn(enrolled("a"))
    assert w("sendto", family=4, addr=STRANGER, port=53) == EPERM
    assert w("connect", family=4, type="tcp", addr=STRANGER, port=53) == EPERM
    assert w("connect", family=4, type="tcp", addr=STRANGER, port=853) == EPERM
    assert w("connect", family=4, type="tcp", addr=RESOLVER, port=53) == EINPROGRESS
    assert w("connect", family=4, type="tcp", addr="198.20.9.9", port=443) == EPERM
    got = [(r.action, r.reason, r.dst_port) for r in read()]
    assert got == [
        ("denied", "resolver_not_allowed", "53"),
        ("denied", "dns_over_tcp", "53"),
        ("denied", "dns_over_tls", "853"),
        ("allowed", "resolver", "53"),
        ("denied", "unresolved_ip", "443"),
    ]


def test_udp_connects_carry_the_probe_flag(enrolled, spawn, ring) -> None:
    w = spawn(enrolled("a"))
    assert w("connect", family=4, type="udp", addr="198.20.9.9", port=443) == EPERM
    assert w("connect", family=4, type="tcp", addr="198.20.9.9", port=443) == EPERM
    assert w("sendto", family=4, addr="198.20.9.9", port=443) == EPERM
    flags = [bool(e.flags & abi.Flag.UDP_CONNECT) for e in raw_events(ring)]
    assert flags == [True, False, False]


def test_admission_goes_on_with_the_agent_killed(tmp_path, pin_root, scope, net) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(DNS_POLICY)
    with sandbox.cgroup(scope, "a") as cg, dnslab.lab(net, tmp_path, HOSTS, CNAMES) as the_lab:
        holder = subprocess.Popen(
            [sys.executable, "-m", "tests.kernel.hold_plane", str(pin_root), str(scope.path),
             str(cg.path), str(policy_file)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[2],
        )  # fmt: skip
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
        names = [f"n0-{i}.ok.test" for i in range(50)]
        rows = the_lab.resolve_connect(cg, [*names, "web.no.test"])
        assert [(n, r) for n, r, _ in rows] == [(n, OK) for n in names] + [("web.no.test", DENIED)]


def test_one_cgroup_cannot_evict_another(enrolled, lab, plane) -> None:
    a, b = enrolled("a"), enrolled("b")
    lab.resolve_connect(a, ["late.ok.test"])
    inner_b = plane.dns_admitted.lookup(b.id)
    assert inner_b is not None and inner_b != plane.dns_admitted.lookup(a.id)
    # b's set takes more addresses than it holds (what a flood of answers does):
    # its LRU evicts b's own oldest, never a's.
    fd = open_inner(inner_b)
    try:
        b_set = BpfMap("b", fd, abi.DnsAddrKey, abi.DnsSlots)
        live = abi.DnsSlots()
        live.slot[0] = abi.DnsSlot(sandbox_now() + 10**11, 1)
        for i in range(abi.DNS_ADDRS_MAX + 1000):
            addr = (abi.u8 * 16)(10, i >> 16 & 255, i >> 8 & 255, i & 255)
            b_set.update(abi.DnsAddrKey(abi.Family.INET, addr=addr), live)
    finally:
        os.close(fd)
    assert (abi.Family.INET, bytes([198, 19, 200, 1])) in plane.admitted(a.id)
    assert len(plane.admitted(b.id)) <= abi.DNS_ADDRS_MAX


DOCKER_POLICY = """
policies:
  default:
    dns: {resolvers: [127.0.0.11]}
    allow:
      - {domain: "%s", ports: [443], proto: tcp, name: peer}
"""


@pytest.mark.docker
def test_container_resolving_through_dockers_embedded_resolver(request, scope, plane, read) -> None:
    """127.0.0.11 is reached through a NAT in the container's namespace: the query
    leaves for another port, the answer comes back from 127.0.0.11:53. The socket,
    id and question bind them anyway."""
    docker_client = request.getfixturevalue("engine")
    tag = uuid.uuid4().hex[:8]
    peer_name, other_name = f"nlpeer-{tag}", f"nlother-{tag}"
    policies = check_source(parse(DOCKER_POLICY % peer_name, "docker.yaml")).policies
    enforcer = Enforcer(plane, policies)
    enforcer.apply_policies(policies)
    parent = "/" + str(scope.path.relative_to(cgroup.find_mount().path))
    network = docker_client.networks.create(f"nltest-{tag}", driver="bridge")
    made: list[Any] = []
    try:
        for name in (peer_name, other_name):
            made.append(docker_client.containers.run(
                IMAGE, ["sleep", "300"], entrypoint=[], detach=True, name=name,
                network=network.name,
            ))  # fmt: skip
        work = docker_client.containers.run(
            IMAGE, ["sleep", "300"], entrypoint=[], detach=True, name=f"nlwork-{tag}",
            network=network.name, cgroup_parent=parent,
        )  # fmt: skip
        made.append(work)
        cg = cgroup.resolve(scope.path / work.id)
        enforcer.enroll(Target(cg))
        ips = {}
        for c in made[:2]:
            c.reload()
            ips[c.name] = c.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        for name in (peer_name, other_name):
            work.exec_run(["nc", "-w", "2", name, "443"])
        rule = {str(i): info.name for i, info in policies.rules.items()}
        got = [(r.dst_ip, r.action, r.reason, rule.get(r.identity)) for r in read()]
        assert [g for g in got if g[0] in ips.values()] == [
            (ips[peer_name], "allowed", "rule", "peer"),
            (ips[other_name], "denied", "unresolved_ip", None),
        ]
    finally:
        for c in made:
            c.remove(force=True)
        network.remove()
        for v1 in Path("/sys/fs/cgroup").glob(f"*/{parent.lstrip('/')}"):
            with contextlib.suppress(OSError):
                v1.rmdir()


def test_layout_migration_keeps_each_cgroups_sets(pin_root, scope, enrolled, plane) -> None:
    """An outer map re-made by a new loader takes the same inner maps, contents and all;
    state from before the DNS maps existed gets them, and every enrolled cgroup its sets."""
    from tests.kernel.test_migration import record_old_layout

    cg = enrolled("a")
    inner_id = plane.dns_admitted.lookup(cg.id)
    fd = open_inner(inner_id)
    try:
        slots = abi.DnsSlots()
        slots.slot[0] = abi.DnsSlot(sandbox_now() + 10**11, 7)
        addr = (abi.u8 * 16)(198, 19, 9, 9)
        BpfMap("a", fd, abi.DnsAddrKey, abi.DnsSlots).update(
            abi.DnsAddrKey(abi.Family.INET, addr=addr), slots
        )
    finally:
        os.close(fd)
    plane.close()
    record_old_layout(pin_root, "nl_dns_admitted", [["cgroup", 0, 8]], [["", 0, 4]])
    (pin_root / "maps" / "nl_dns_queries").unlink()  # as an agent from before DNS left it

    with loader.loaded(pin_root, scope) as again:
        assert again.report.migrated == ["nl_dns_admitted"]
        assert again.report.created == ["nl_dns_queries"]
        assert again.dns_admitted.lookup(cg.id) == inner_id
        assert (
            again.admitted(cg.id)[(abi.Family.INET, bytes([198, 19, 9, 9]))].slot[0].match_id == 7
        )
        assert again.dns_queries.lookup(cg.id) is not None


@pytest.mark.parametrize("settings", [loader.Settings(allowed_per_sec=1, allowed_burst=2)])
def test_dns_records_are_throttled_and_counted(enrolled, lab, dns_ring, plane) -> None:
    cg = enrolled("a")
    names = [f"n1-{i}.ok.test" for i in range(6)]
    rows = lab.resolve_connect(cg, [*names, "web.no.test"])
    assert [r for _, r, _ in rows] == [OK] * 6 + [DENIED]  # admission is never throttled
    events = dnslab.dns_events(dns_ring)
    assert [e.seq for e, _ in events] == [0, 1]  # the bucket's burst of two
    state = plane.cgroup_state.lookup(cg.id)
    assert (state.dns_seq, state.dns_throttled, state.dns_ringbuf_lost) == (7, 5, 0)
