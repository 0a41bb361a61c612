"""Config and policy files: accepted as written in DESIGN.md, or every problem located."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netlogger.config.check import check_source
from netlogger.config.model import JsonlSink, OtlpSink
from netlogger.config.source import parse
from netlogger.errors import ConfigError

DESIGN_EXAMPLE = """\
scope: /sys/fs/cgroup
pin_root: /sys/fs/bpf/netlogger
control_socket: /run/netlogger/control.sock
metrics: 127.0.0.1:9464
sinks:
  - {type: console}
  - {type: jsonl, path: /var/log/netlogger/egress.jsonl, max_bytes: 100MB, keep: 5}
  - {type: otlp, endpoint: "https://localhost:4319", ca: ca.pem, cert: client.pem, key: client.key}
policies:
  default:
    mode: enforce
    log_loopback: false
    dns: {resolvers: [127.0.0.11]}
    icmp: deny
    allow:
      - {cidr: 10.0.0.0/8, ports: [443, "8000-8100"], proto: tcp}
      - {cidr: "2001:db8::/32", ports: [443]}
enroll:
  - {cgroup: /sys/fs/cgroup/agents/a1, policy: default, agent: a1, project: p1, mode: enforce}
containers:
  engine: unix:///var/run/docker.sock
  select: {label: dev.clawker.agent}
  policy_label: dev.clawker.policy
  default_policy: default
"""

BROKEN = """\
bogus: 1
policies:
  default:
    icmp: maybe
    dns: {resolvers: [not-an-ip]}
    allow:
      - {cidr: 10.0.0.1/8, ports: [443]}
      - {cidr: "::ffff:10.0.0.0/104"}
      - {cidr: 10.1.0.0/16, ports: ["9-1"]}
      - {cidr: 10.2.0.0/16, proto: sctp}
  second:
    allow:
      - {cidr: 10.3.0.0/16, ports: [70000]}
      - {domain: "*.github.com"}
      - {cidr: 10.4.0.0/16, domain: x.y}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        check_source(parse(text, "p.yaml"))
    return [str(p) for p in info.value.problems]


def test_design_example_is_accepted_except_the_domain_rule_we_lack() -> None:
    checked = check_source(parse(DESIGN_EXAMPLE, "c.yaml"))
    assert [type(s).__name__ for s in checked.config.sinks] == [
        "ConsoleSink",
        "JsonlSink",
        "OtlpSink",
    ]
    jsonl = checked.config.sinks[1]
    assert isinstance(jsonl, JsonlSink) and jsonl.max_bytes == "100MB"
    assert isinstance(checked.config.sinks[2], OtlpSink)
    assert checked.config.enroll[0].agent == "a1"
    with_domain = DESIGN_EXAMPLE.replace(
        '      - {cidr: "2001:db8::/32", ports: [443]}\n',
        '      - {cidr: "2001:db8::/32", ports: [443]}\n'
        '      - {domain: "*.github.com", ports: [443]}\n',
    )
    assert problems(with_domain) == [
        "p.yaml:18: policies.default.allow[2].domain: domain rules need DNS-answer tracking, "
        "which this version does not have yet; use a cidr rule"
    ]


def test_every_structural_problem_is_located() -> None:
    found = problems(BROKEN)
    assert found[0].startswith("p.yaml:1: bogus: unknown field; expected one of: containers,")
    assert "p.yaml:4: policies.default.icmp: Invalid enum value 'maybe'" in found
    assert "p.yaml:10: policies.default.allow[3].proto: Invalid enum value 'sctp'" in found
    # `second` is well-formed, so its value problems are reported in the same run.
    assert (
        "p.yaml:13: policies.second.allow[0].ports: bad port 70000: ports run from 1 to "
        "65535, low to high"
    ) in found
    assert (
        "p.yaml:14: policies.second.allow[1].domain: domain rules need DNS-answer tracking, "
        "which this version does not have yet; use a cidr rule"
    ) in found
    assert "p.yaml:15: policies.second.allow[2]: give exactly one of cidr or domain" in found
    assert len(found) == 6


def test_every_value_problem_is_located() -> None:
    fixed = BROKEN.replace("bogus: 1\n", "").replace("maybe", "deny").replace("sctp", "udp")
    assert problems(fixed)[:5] == [
        "p.yaml:4: policies.default.dns.resolvers[0]: bad resolver address 'not-an-ip'",
        "p.yaml:6: policies.default.allow[0].cidr: bad cidr '10.0.0.1/8': 10.0.0.1/8 has host "
        "bits set",
        "p.yaml:7: policies.default.allow[1].cidr: cidr '::ffff:10.0.0.0/104' is IPv4-mapped or "
        "NAT64: those addresses are decided as IPv4, so write the rule as an IPv4 CIDR",
        "p.yaml:8: policies.default.allow[2].ports: bad port '9-1': ports run from 1 to 65535, "
        "low to high",
        "p.yaml:12: policies.second.allow[0].ports: bad port 70000: ports run from 1 to 65535, "
        "low to high",
    ]


def test_references_and_sizes_are_checked() -> None:
    text = """\
limits: {ring_size: lots}
sinks: [{type: jsonl, max_bytes: 10 parsecs}]
policies: {default: {}}
enroll: [{cgroup: /sys/fs/cgroup/x, policy: nope}]
containers: {default_policy: also-nope}
"""
    assert problems(text) == [
        "p.yaml:1: limits.ring_size: bad size 'lots': use a number with B, KB, MB, GB, KiB, MiB "
        "or GiB",
        "p.yaml:2: sinks[0].max_bytes: bad size '10 parsecs': use a number with B, KB, MB, GB, "
        "KiB, MiB or GiB",
        "p.yaml:4: enroll[0].policy: no policy 'nope' (default)",
        "p.yaml:5: containers.default_policy: no policy named 'also-nope' (default)",
    ]


def test_yaml_syntax_error_is_located() -> None:
    assert problems("policies:\n  default: {allow: [}\n") == [
        "p.yaml:2: not valid YAML: expected the node content, but found '}'"
    ]


def test_policy_check_cli_exit_codes(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(DESIGN_EXAMPLE)
    bad.write_text(BROKEN)
    ok = subprocess.run(
        [sys.executable, "-m", "netlogger", "policy", "check", str(good)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[1].split() == ["default", "enforce", "3", "2", "1"]
    failed = subprocess.run(
        [sys.executable, "-m", "netlogger", "policy", "check", str(bad)],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2
    lines = failed.stderr.splitlines()
    assert lines[0] == "error: ConfigError: 6 problem(s)"
    assert all(line.startswith(f"{bad}:") for line in lines[1:]) and len(lines) == 7
