"""From audit to enforcement on the real kernel: suggest, check, reload, test.

An audit-mode cgroup reaches a few destinations in the test's namespaces; the
policy `policy suggest` proposes from that history passes `policy check`, and
enforced through `reload` it allows exactly what was seen and denies the rest;
`policy test` says what the kernel says; a broken reload changes nothing; and
reloads that flip between two policies allowing one destination never deny it; and with
DNS, names the workload resolved become domain rules, a wildcard where the PSL says so.
"""

from __future__ import annotations

import copy
import errno
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netlogger import sandbox
from netlogger.kernel.cgroup import Cgroup
from netlogger.workload import Workload
from tests.e2e.conftest import AgentProcess, decisions, netlogger
from tests.kernel import dnslab

EPERM, EINPROGRESS = errno.EPERM, errno.EINPROGRESS
OK, DENIED = str(EINPROGRESS), str(EPERM)  # as dnslab reports connects
WATCH = {"mode": "audit", "dns": {"resolvers": ["198.18.0.53"]}}

# What the audited workload does: (DEST as `policy test` takes it, how to make it).
SEEN = [
    (
        "198.18.0.2:443/tcp",
        ("connect", {"family": 4, "type": "tcp", "addr": "198.18.0.2", "port": 443}),
    ),
    (
        "198.18.0.2:8443/tcp",
        ("connect", {"family": 4, "type": "tcp", "addr": "198.18.0.2", "port": 8443}),
    ),
    ("198.18.0.2:5000/udp", ("sendto", {"family": 4, "addr": "198.18.0.2", "port": 5000})),
    (
        "[fd00:18::2]:443/tcp",
        ("connect", {"family": 6, "type": "tcp", "addr": "fd00:18::2", "port": 443}),
    ),
    ("198.18.0.53:53/udp", ("sendto", {"family": 4, "addr": "198.18.0.53", "port": 53})),
]
FOREIGN_DNS = ("198.18.0.9:53/udp", ("sendto", {"family": 4, "addr": "198.18.0.9", "port": 53}))
UNSEEN = [
    (
        "198.18.0.2:22/tcp",
        ("connect", {"family": 4, "type": "tcp", "addr": "198.18.0.2", "port": 22}),
    ),
    ("198.18.0.2:443/udp", ("sendto", {"family": 4, "addr": "198.18.0.2", "port": 443})),
    (
        "198.18.0.3:443/tcp",
        ("connect", {"family": 4, "type": "tcp", "addr": "198.18.0.3", "port": 443}),
    ),
    (
        "[fd00:18::2]:8443/tcp",
        ("connect", {"family": 6, "type": "tcp", "addr": "fd00:18::2", "port": 8443}),
    ),
    FOREIGN_DNS,
]


def errnos(w: Workload, dests: list[tuple[str, tuple[str, dict[str, Any]]]]) -> dict[str, int]:
    return {dest: w(op, **args) for dest, (op, args) in dests}


def verdict(code: int) -> str:
    return "denied" if code == EPERM else "allowed"


def reload(agent: AgentProcess) -> Any:
    return agent.cli("reload", "--json")


def enrolled_policy(agent: AgentProcess, cg: Cgroup) -> str:
    return next(e["policy"] for e in agent.status()["enrolled"] if e["cgroup_id"] == cg.id)


def test_audit_suggest_reload_enforces_exactly_what_was_seen(
    agent_factory, scope, spawn, tmp_path: Path
) -> None:
    with sandbox.cgroup(scope, "learner") as cg:
        static = {"cgroup": str(cg.path), "policy": "watch", "agent": "a1", "project": "p1"}
        agent = agent_factory(policies={"watch": WATCH}, enroll=[static], containers=None).start()
        w = spawn(cg)
        audited = errnos(w, [*SEEN, FOREIGN_DNS])
        assert audited["198.18.0.9:53/udp"] == 0  # audit lets the foreign resolver through
        agent.wait_for_lines(lambda ls: len(decisions(ls, cg.id)) >= len(SEEN) + 1)

        result = agent.cli(
            "policy", "suggest", "--agent", "a1", "--since", "1h", "--name", "learned"
        )
        assert result.returncode == 0, result.stderr
        suggestion = tmp_path / "learned.yaml"
        suggestion.write_text(result.stdout)
        checked = netlogger("policy", "check", str(suggestion))
        assert checked.returncode == 0, checked.stderr + result.stdout
        assert "#   resolver_not_allowed: 198.18.0.9:53/udp" in result.stdout
        learned = yaml.safe_load(result.stdout)["policies"]["learned"]
        assert learned["dns"] == {"resolvers": ["198.18.0.53"]}
        assert learned["allow"] == [
            {"cidr": "198.18.0.2/32", "ports": [443, 8443], "proto": "tcp"},
            {"cidr": "198.18.0.2/32", "ports": [5000], "proto": "udp"},
            {"cidr": "fd00:18::2/128", "ports": [443], "proto": "tcp"},
        ]

        agent.rewrite_config(
            policies={"watch": WATCH, "learned": learned},
            enroll=[static | {"policy": "learned"}],
        )
        done = reload(agent)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["enrolled"] == [str(cg.path)]
        assert enrolled_policy(agent, cg) == "learned"

        enforced = errnos(w, SEEN + UNSEEN)
        assert {d: verdict(c) for d, c in enforced.items()} == {
            **{d: "allowed" for d, _ in SEEN},
            **{d: "denied" for d, _ in UNSEEN},
        }

        # `policy test` answers as the kernel did, from the agent and from a file alike.
        dests = [d for d, _ in SEEN + UNSEEN]
        for source in ([], ["--config", str(suggestion)]):
            tested = agent.cli("policy", "test", "--policy", "learned", "--json", *source, *dests)
            assert tested.returncode == 0, tested.stderr
            answers = [json.loads(line) for line in tested.stdout.splitlines()]
            assert {a["dest"]: a["action"] for a in answers} == {
                d: verdict(c) for d, c in enforced.items()
            }
        by_dest = {a["dest"]: a for a in answers}
        assert (by_dest["198.18.0.2:22/tcp"]["reason"], by_dest["198.18.0.2:22/tcp"]["rule"]) == (
            "default_deny",
            None,
        )
        assert by_dest["198.18.0.9:53/udp"]["reason"] == "resolver_not_allowed"
        assert by_dest["198.18.0.2:5000/udp"]["rule"] == "learned.allow[1]"
        assert by_dest["198.18.0.53:53/udp"]["rule"] == "learned.dns.resolvers[0]"


def test_a_broken_reload_changes_nothing_and_says_where(agent_factory, scope, spawn) -> None:
    with sandbox.cgroup(scope, "steady") as cg:
        policies = {
            "steady": {"allow": [{"cidr": "198.18.0.0/24", "ports": [443], "proto": "tcp"}]}
        }
        static = {"cgroup": str(cg.path), "policy": "steady"}
        agent = agent_factory(policies=policies, enroll=[static], containers=None).start()
        w = spawn(cg)
        before = errnos(w, SEEN + UNSEEN)
        good = copy.deepcopy(agent.config)

        broken = dict(policies)
        broken["steady"] = {"allow": [{"cidr": "198.18.0.0/33", "ports": [443, 70000]}]}
        agent.rewrite_config(policies=broken, enroll=[static, {"cgroup": str(cg.path) + "-gone"}])
        result = reload(agent)
        assert result.returncode == 2, result.stdout
        lines = result.stderr.splitlines()
        assert lines[0] == "error: ConfigError: 4 problem(s)", result.stderr
        text = "\n".join(lines)
        assert "policies.steady.allow[0].cidr: bad cidr '198.18.0.0/33'" in text
        assert "policies.steady.allow[0].ports: bad port 70000" in text
        assert f"enroll[1].cgroup: cgroup {cg.path}-gone does not exist" in text
        assert "enroll[1].policy: no policy 'default' (steady)" in text
        assert all(line.startswith(str(agent.config_file) + ":") for line in lines[1:])
        assert errnos(w, SEEN + UNSEEN) == before

        # A change only a restart can make is refused whole, with the policy change beside it.
        agent.config = good
        agent.rewrite_config(
            limits={"ring_size": "16MiB"},
            policies={"steady": {"allow": [{"cidr": "198.18.0.0/24"}]}},
        )
        result = reload(agent)
        assert result.returncode == 2
        assert result.stderr.startswith(
            "error: UsageError: reload changed nothing: limits.ring_size changed (8MiB -> 16MiB)"
        )
        assert errnos(w, SEEN + UNSEEN) == before
        assert agent.proc is not None and agent.proc.poll() is None


def test_six_reloads_between_two_policies_never_deny_what_both_allow(
    agent_factory, scope, spawn
) -> None:
    a = {"allow": [{"cidr": "198.18.0.0/24", "ports": [6000, 7000], "name": "wide"}]}
    b = {
        "allow": [
            {"cidr": "198.18.0.2/32", "ports": ["5990-6010"], "name": "narrow"},
            {"cidr": "198.18.0.0/16", "ports": [9000], "name": "other"},
        ]
    }
    with sandbox.cgroup(scope, "flip") as cg:
        static = {"cgroup": str(cg.path), "policy": "flip"}
        agent = agent_factory(policies={"flip": a}, enroll=[static], containers=None).start()
        w = spawn(cg)
        counts: dict[str, int] = {}
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                for code, n in w(
                    "flood", family=4, addr="198.18.0.2", port=6000, count=2000
                ).items():
                    counts[code] = counts.get(code, 0) + n

        looper = threading.Thread(target=loop)
        looper.start()
        try:
            for i in range(6):
                time.sleep(0.2)
                agent.rewrite_config(policies={"flip": b if i % 2 == 0 else a})
                result = reload(agent)
                assert result.returncode == 0, result.stderr
                assert json.loads(result.stdout)["policies"] == ["flip"]
            time.sleep(0.2)
        finally:
            stop.set()
            looper.join()
        assert set(counts) == {"0"} and counts["0"] > 0, counts
        # Both policies decided during the loop: the records name rules of each.
        lines = agent.wait_for_lines(
            lambda ls: (
                {"flip.allow[0]", "wide", "narrow"} & {r.get("rule") for r in ls}
                >= {"wide", "narrow"}
            )
        )
        denied = [r for r in decisions(lines, cg.id) if r["action"] != "allowed"]
        assert denied == []


def test_sighup_reloads_like_the_command(agent_factory, scope, spawn) -> None:
    with sandbox.cgroup(scope, "hup") as cg:
        static = {"cgroup": str(cg.path), "policy": "p"}
        agent = agent_factory(policies={"p": {}}, enroll=[static], containers=None).start()
        w = spawn(cg)
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=443) == EPERM
        agent.rewrite_config(policies={"p": {"allow": [{"cidr": "198.18.0.2/32", "ports": [443]}]}})
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while w("connect", family=4, type="tcp", addr="198.18.0.2", port=443) != EINPROGRESS:
            assert time.monotonic() < deadline, "SIGHUP never applied the new policy"
            time.sleep(0.1)
        assert agent.status()["agent"]["pid"] == agent.proc.pid


def test_reload_adds_and_removes_sinks_and_leaves_the_rest(agent_factory, scope, spawn) -> None:
    with sandbox.cgroup(scope, "sinks") as cg:
        policies = {"p": {"allow": [{"cidr": "198.18.0.2/32", "ports": [443], "proto": "tcp"}]}}
        static = {"cgroup": str(cg.path), "policy": "p", "agent": "s1"}
        agent = agent_factory(policies=policies, enroll=[static], containers=None).start()
        w = spawn(cg)
        second = agent.workdir / "second.jsonl"
        first_sink = agent.config["sinks"][0]
        agent.rewrite_config(sinks=[first_sink, {"type": "jsonl", "path": str(second)}])
        result = reload(agent)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {
            "policies": [],
            "sinks_added": [f"jsonl:{second}"],
            "sinks_removed": [],
            "enrolled": [],
            "unenrolled": [],
        }
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=443) == EINPROGRESS
        agent.wait_for_lines(lambda ls: len(decisions(ls, cg.id)) == 1)
        deadline = time.monotonic() + 20
        while not second.exists() or second.read_text().count("\n") < 2:
            assert time.monotonic() < deadline, "the added sink never got the record"
            time.sleep(0.1)
        # The reload that added it is the first thing it holds, then what came after.
        reloaded, decided = map(json.loads, second.read_text().splitlines())
        assert (reloaded["control.command"], reloaded["control.result"]) == ("reload", "done")
        assert decided["dst_port"] == "443"

        agent.rewrite_config(sinks=[first_sink])
        result = reload(agent)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["sinks_removed"] == [f"jsonl:{second}"]
        assert w("connect", family=4, type="tcp", addr="198.18.0.2", port=22) == EPERM
        agent.wait_for_lines(lambda ls: len(decisions(ls, cg.id)) == 2)
        assert second.read_text().count("\n") == 2  # nothing since it was removed
        assert [s["name"] for s in agent.status()["sinks"]] == ["jsonl"]
        assert enrolled_policy(agent, cg) == "p"


NAMED_HOSTS = {
    "a.lab.test": ["198.19.1.1"],
    "b.lab.test": ["198.19.1.2"],
    "c.lab.test": ["198.19.1.3"],
    "solo.other.test": ["198.19.2.1"],
}


@pytest.fixture
def lab(net: sandbox.Net, tmp_path: Path) -> Iterator[dnslab.Lab]:
    (tmp_path / "lab").mkdir()
    with dnslab.lab(net, tmp_path / "lab", NAMED_HOSTS) as the_lab:
        yield the_lab


def test_with_dns_the_suggestion_is_domain_rules_and_a_wildcard_where_the_psl_says(
    agent_factory, scope, lab, tmp_path: Path
) -> None:
    watch = {"mode": "audit", "dns": {"resolvers": [dnslab.RESOLVER]}}
    with sandbox.cgroup(scope, "named") as cg:
        static = {"cgroup": str(cg.path), "policy": "watch", "agent": "d1"}
        agent = agent_factory(policies={"watch": watch}, enroll=[static], containers=None).start()
        names = sorted(NAMED_HOSTS)
        assert [r for _, r, _ in lab.resolve_connect(cg, names)] == [OK] * len(names)
        agent.wait_for_lines(
            lambda ls: {r.get("dst_host") for r in decisions(ls, cg.id)} >= set(names)
        )

        result = agent.cli("policy", "suggest", "--agent", "d1", "--since", "1h", "--name", "d1")
        assert result.returncode == 0, result.stderr
        suggested = yaml.safe_load(result.stdout)["policies"]["d1"]
        # a, b and c share the registrable domain lab.test: one wildcard; solo stays exact.
        assert suggested == {
            "mode": "enforce",
            "dns": {"resolvers": [dnslab.RESOLVER]},
            "allow": [
                {"domain": "*.lab.test", "ports": [443], "proto": "tcp"},
                {"domain": "solo.other.test", "ports": [443], "proto": "tcp"},
            ],
        }
        (tmp_path / "d1.yaml").write_text(result.stdout)
        assert netlogger("policy", "check", str(tmp_path / "d1.yaml")).returncode == 0

        agent.rewrite_config(
            policies={"watch": watch, "d1": suggested}, enroll=[static | {"policy": "d1"}]
        )
        assert reload(agent).returncode == 0
        assert [r for _, r, _ in lab.resolve_connect(cg, names)] == [OK] * len(names)
        assert [r for _, r, _ in lab.resolve_connect(cg, names, port=8443)] == [DENIED] * len(names)
