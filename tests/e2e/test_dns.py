"""The agent names what workloads resolved: a real dnsmasq in the test's namespaces,
glibc's resolver in the workload, `netlogger run` in between.

Every connect record of an enrolled workload to an address it resolved carries
`dst_host` and the `dns.*` evidence; every answer is an `ebpf.egress.dns`
record; the names survive an agent killed with SIGKILL.
"""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netlogger import sandbox
from tests.e2e.conftest import AgentProcess, decisions, gaps
from tests.kernel import dnslab
from tests.kernel.dnslab import RESOLVER

OK, DENIED = str(errno.EINPROGRESS), str(errno.EPERM)
TTL = 600  # the lab's dnsmasq --local-ttl
POLICIES = {
    "default": {
        "dns": {"resolvers": [RESOLVER]},
        "allow": [
            {"domain": "*.ok.test", "ports": [443], "proto": "tcp", "name": "ok-wild"},
            {"domain": "alias.lab.test", "ports": [443], "proto": "tcp", "name": "alias"},
        ],
    }
}
HOSTS = {
    "one.ok.test": ["198.19.0.1"],
    "two.ok.test": ["198.19.0.2", "198.19.0.3"],
    "a.shared.test": ["198.19.9.9"],
    "b.shared.test": ["198.19.9.9"],
    "target.far.test": ["198.22.0.9"],
}
CNAMES = {"alias.lab.test": "target.far.test"}


@pytest.fixture
def lab(net: sandbox.Net, tmp_path: Path) -> Iterator[dnslab.Lab]:
    (tmp_path / "lab").mkdir()
    with dnslab.lab(net, tmp_path / "lab", HOSTS, CNAMES, ttl=TTL) as the_lab:
        yield the_lab


def enroll(agent: AgentProcess, cg: Any) -> None:
    result = agent.cli("enroll", "--cgroup", str(cg.path), "--agent", "a1", "--project", "p1")
    assert result.returncode == 0, result.stderr


def answers(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {x["dns.qname"]: x for x in lines if x["event.name"] == "ebpf.egress.dns"}


def tcp_443(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for x in decisions(lines) if x.get("dst_port") == "443" and x["l4_proto"] == "stream"]


def evidence(connect: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """What the connect must carry, computed from the two records' kernel times."""
    age_ns = connect["bpf_ts_ns"] - answer["bpf_ts_ns"]
    return {
        "dst_host": answer["dns.qname"],
        "dns.qname": answer["dns.qname"],
        "dns.answer_age_ms": age_ns // 1_000_000,
        "dns.ttl_left_s": TTL - age_ns // 1_000_000_000,
    }


def picked(rec: dict[str, Any]) -> dict[str, Any]:
    keys = ("dst_host", "dns.qname", "dns.answer_age_ms", "dns.ttl_left_s")
    return {k: rec.get(k) for k in keys}


def test_connects_carry_the_name_and_its_evidence(agent_factory, scope, lab) -> None:
    agent = agent_factory(policies=POLICIES).start()
    with sandbox.cgroup(scope, "w") as cg:
        enroll(agent, cg)
        names = ["one.ok.test", "alias.lab.test", "a.shared.test", "b.shared.test"]
        assert [(n, r) for n, r, _ in lab.resolve_connect(cg, names)] == [
            ("one.ok.test", OK),
            ("alias.lab.test", OK),
            ("a.shared.test", DENIED),  # outside every rule: denied, but still named
            ("b.shared.test", DENIED),
        ]
        lines = agent.wait_for_lines(lambda ls: len(tcp_443(ls)) >= 4 and len(answers(ls)) >= 4)

    got = answers(lines)
    one = got["one.ok.test"]
    assert {k: v for k, v in one.items() if k not in ("ts", "bpf_ts_ns", "seq", "sock_cookie")} == {
        "event.name": "ebpf.egress.dns",
        "action": "allowed",
        "cgroup_id": str(cg.id),
        "policy": "default",
        "identity": one["identity"],
        "rule": "ok-wild",
        "dns.verdict": "admitted",
        "dns.admitted": 1,
        "dns.server": RESOLVER,
        "dns.server_port": "53",
        "dns.transport": "udp",
        "dns.msg_len": one["dns.msg_len"],
        "host.name": one["host.name"],
        "container_id": "",
        "agent": "a1",
        "project": "p1",
        "attribution": "static",  # enrolled by `netlogger enroll`, labels given there
        "dns.qname": "one.ok.test",
        "dns.qtype": "A",
        "dns.rcode": "NOERROR",
        "dns.answers": ["198.19.0.1"],
        "dns.ttl": TTL,
    }
    assert one["identity"] != "0"
    assert got["alias.lab.test"]["dns.cname_chain"] == ["target.far.test"]
    assert got["alias.lab.test"]["dns.answers"] == ["198.22.0.9"]
    assert got["a.shared.test"]["dns.verdict"] == "not_matched"

    by_name = {r["dst_host"]: r for r in tcp_443(lines)}
    assert set(by_name) == set(names)
    for name in names:
        assert picked(by_name[name]) == evidence(by_name[name], got[name]), name
    assert by_name["one.ok.test"]["dst_ip"] == "198.19.0.1"
    assert "dns.cname_chain" not in by_name["one.ok.test"]
    assert by_name["alias.lab.test"]["dns.cname_chain"] == ["target.far.test"]
    assert (by_name["alias.lab.test"]["action"], by_name["alias.lab.test"]["rule"]) == (
        "allowed",
        "alias",
    )
    # The same address for two names: the later answer names it, both are reported.
    assert "dns.names_sharing_ip" not in by_name["a.shared.test"]
    assert by_name["b.shared.test"]["dns.names_sharing_ip"] == ["a.shared.test", "b.shared.test"]
    assert (by_name["b.shared.test"]["action"], by_name["b.shared.test"]["reason"]) == (
        "denied",
        "unresolved_ip",
    )


def test_the_configs_ttl_cap_ends_an_admission(agent_factory, scope, lab) -> None:
    """The lab answers with TTL 600; a 2s cap makes the address the workload's for 2 s only."""
    limits = {"dns_ttl_floor": "1s", "dns_ttl_cap": "2s"}
    agent = agent_factory(policies=POLICIES, limits=limits).start()
    with sandbox.cgroup(scope, "w") as cg:
        enroll(agent, cg)
        assert lab.resolve_connect(cg, ["one.ok.test"]) == [("one.ok.test", OK, "198.19.0.1")]
        time.sleep(2.5)
        again = lab.python(
            cg,
            "import socket; s = socket.socket(); s.setblocking(False); "
            "print(s.connect_ex(('198.19.0.1', 443)))",
        )
        out, _ = again.communicate(timeout=30)
        assert out.split() == [DENIED]
        lines = agent.wait_for_lines(lambda ls: len(tcp_443(ls)) >= 2)
    first, late = tcp_443(lines)
    assert (first["action"], first["rule"], first["dst_host"]) == (
        "allowed",
        "ok-wild",
        "one.ok.test",
    )
    assert (late["action"], late["reason"], late["dst_ip"]) == (
        "denied",
        "unresolved_ip",
        "198.19.0.1",
    )
    # The name is still remembered by the agent: the record says what the answer was.
    assert late["dst_host"] == "one.ok.test"


def test_getaddrinfo_probes_are_marked_and_named(agent_factory, scope, lab) -> None:
    agent = agent_factory(policies=POLICIES).start()
    with sandbox.cgroup(scope, "w") as cg:
        enroll(agent, cg)
        assert [r for _, r, _ in lab.resolve_connect(cg, ["two.ok.test"])] == [OK]
        lines = agent.wait_for_lines(lambda ls: len(tcp_443(ls)) >= 1)
        time.sleep(0.5)  # the probes were decided before the connect; let the file settle
        lines = agent.lines()
    udp = [x for x in decisions(lines) if x.get("udp_connect")]
    # glibc's resolver connects its UDP socket to the resolver, too: also marked.
    assert {(x["dst_ip"], x["dst_port"]) for x in udp if x["dst_port"] == "53"} == {
        (RESOLVER, "53")
    }
    probes = [x for x in udp if x["dst_port"] == "443"]
    assert sorted(p["dst_ip"] for p in probes) == ["198.19.0.2", "198.19.0.3"]
    assert {(p["l4_proto"], p["dst_host"]) for p in probes} == {("dgram", "two.ok.test")}


def test_names_survive_an_agent_killed_with_sigkill(
    agent_factory, scope, lab, spawn, tmp_path
) -> None:
    state = tmp_path / "state"  # both agents' state_dir
    first = agent_factory(policies=POLICIES, state_dir=str(state)).start()
    with sandbox.cgroup(scope, "w") as cg:
        enroll(first, cg)
        assert [r for _, r, _ in lab.resolve_connect(cg, ["one.ok.test"])] == [OK]
        answer = answers(first.wait_for_lines(lambda ls: "one.ok.test" in answers(ls)))
        deadline = time.monotonic() + 20
        cache = state / "dns-cache.json"
        while b"one.ok.test" not in (cache.read_bytes() if cache.exists() else b""):
            assert time.monotonic() < deadline, "the agent never saved its DNS cache"
            time.sleep(0.1)
        assert first.signal(signal.SIGKILL) == -signal.SIGKILL

        second = agent_factory(policies=POLICIES, state_dir=str(state)).start()
        status = second.status()
        assert status["dns"]["cache"]["restored"] == 1
        # No lookup this time: the workload connects to the address it resolved before.
        w = spawn(cg)
        assert w("connect", family=4, type="tcp", addr="198.19.0.1", port=443) == errno.EINPROGRESS
        (rec,) = tcp_443(second.wait_for_lines(lambda ls: len(tcp_443(ls)) >= 1))
    assert picked(rec) == evidence(rec, answer["one.ok.test"])
    assert (rec["action"], rec["rule"], rec["agent"]) == ("allowed", "ok-wild", "a1")
    assert json.loads(cache.read_text())["entries"][0][:3] == [
        str(cg.id),
        "198.19.0.1",
        "one.ok.test",
    ]


def test_throttled_dns_records_are_gaps_of_their_own(agent_factory, scope, lab) -> None:
    limits = {"allowed_per_sec": 1, "allowed_burst": 2}
    agent = agent_factory(policies=POLICIES, limits=limits).start()
    with sandbox.cgroup(scope, "w") as cg:
        enroll(agent, cg)
        rows = lab.resolve_connect(cg, ["one.ok.test", "two.ok.test", "alias.lab.test"] * 2)
        assert {r for _, r, _ in rows} == {OK}  # admission is never throttled
        lines = agent.wait_for_lines(
            lambda ls: any(g["gap.kind"] == "dns_throttled" for g in gaps(ls))
        )
        status = agent.status()
    kept = [x for x in lines if x["event.name"] == "ebpf.egress.dns"]
    assert [x["seq"] for x in kept] == [0, 1]
    (gap,) = gaps(lines, "dns_throttled")
    assert (gap["gap.count"], gap["gap.seq_first"], gap["gap.seq_last"], gap["cgroup_id"]) == (
        4,
        0,
        5,
        str(cg.id),
    )
    assert status["losses"]["dns_throttled"] == 4
    assert agent.metric("netlogger_lost_records_total", kind="dns_throttled") == 4


def test_status_names_a_workloads_unsupported_resolver_path(agent_factory, scope, tmp_path) -> None:
    nsswitch = tmp_path / "nsswitch.conf"
    nsswitch.write_text("hosts: files resolve [!UNAVAIL=return] dns\n")
    agent = agent_factory(policies=POLICIES).start()
    with sandbox.cgroup(scope, "w") as cg:
        enroll(agent, cg)
        assert agent.status()["enrolled"][0]["resolver_paths"] is None  # no task yet
        # A task with its own mount namespace and /etc/nsswitch.conf, as a container has.
        task = subprocess.Popen(
            [
                "unshare",
                "-m",
                "sh",
                "-c",
                f"mount --bind {nsswitch} /etc/nsswitch.conf; exec sleep 60",
            ],
            preexec_fn=lambda: (cg.path / "cgroup.procs").write_text("0"),
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                (entry,) = agent.status()["enrolled"]
                if entry["resolver_paths"] or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            text = agent.cli("status")
        finally:
            task.kill()
            task.wait()
    assert entry["resolver_paths"] == ["nss-resolve (hosts: resolve in nsswitch.conf)"]
    assert f"resolver {cg.path}: nss-resolve (hosts: resolve in nsswitch.conf)" in text.stdout
