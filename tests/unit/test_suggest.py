"""`policy suggest` on recorded decisions: rules, comments, findings, wildcards, diff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from netlogger.config.check import check_file
from netlogger.config.model import Policy, Rule
from netlogger.errors import UsageError
from netlogger.pipeline.record import Record
from netlogger.policy import suggest as sg
from netlogger.tail import Filter


def record(dst: str, port: int, **kw: Any) -> Record:
    base: dict[str, Any] = {
        "event.name": "ebpf.egress.connect",
        "ts": "2026-12-01T10:00:00.000000000Z",
        "bpf_ts_ns": 1,
        "seq": 1,
        "action": "allowed",
        "mode": "audit",
        "reason": "default_deny",
        "would_deny": True,
        "cgroup_id": "7",
        "task_cgroup_id": "7",
        "l4_proto": "stream",
        "l4_proto_code": 1,
        "ipv6": ":" in dst,
        "ipv4_mapped": False,
        "nat64": False,
        "no_dst": False,
        "identity": "0",
        "policy": "watch",
        "comm": "curl",
        "pid": 1,
        "tid": 1,
        "uid": 0,
        "gid": 0,
        "sock_cookie": 1,
        "host.name": "h",
        "container_id": "",
        "agent": "a1",
        "project": "p1",
        "dst_ip": dst,
        "dst_port": str(port),
    }
    return msgspec.convert(base | kw, Record)


SEEN = [
    record("198.18.0.2", 443, ts="2026-12-01T10:00:01.000000000Z"),
    record("198.18.0.2", 443, ts="2026-12-01T10:05:00.000000000Z", agent="a2"),
    record("198.18.0.2", 8001),
    record("198.18.0.2", 8000),
    record("198.18.0.2", 8002),
    record("198.18.0.3", 5000, l4_proto="dgram", l4_proto_code=2),
    record("fd00:18::2", 443),
    record("198.18.0.53", 53, l4_proto="dgram", reason="resolver", would_deny=False),
    record("8.8.8.8", 53, l4_proto="dgram", reason="resolver_not_allowed"),
    record("1.1.1.1", 853, reason="dns_over_tls"),
    record("127.0.0.1", 8080, reason="loopback", would_deny=False),
]


def test_addresses_become_host_rules_with_ports_and_proto_as_seen() -> None:
    s = sg.suggest(SEEN, "a1")
    rules = [(r.cidr, r.ports, r.proto) for r, _ in s.rules]
    assert rules == [
        ("198.18.0.2/32", [443, "8000-8002"], "tcp"),
        ("198.18.0.3/32", [5000], "udp"),
        ("fd00:18::2/128", [443], "tcp"),
    ]
    assert sorted(s.resolvers) == ["198.18.0.53"]
    assert s.records == 10  # the loopback decision is not a need


def test_every_rule_carries_its_counts_times_and_agents() -> None:
    text = sg.render(sg.suggest(SEEN, "a1"))
    lines = text.splitlines()
    at = lines.index('      - {cidr: "198.18.0.2/32", ports: [443, "8000-8002"], proto: tcp}')
    assert lines[at - 1] == (
        "      # 5 decisions, first 2026-12-01T10:00:00.000000000Z, "
        "last 2026-12-01T10:05:00.000000000Z, agents a1, a2"
    )
    assert '        - "198.18.0.53"' in lines


def test_resolver_bypasses_are_findings_never_allows(tmp_path: Path) -> None:
    text = sg.render(sg.suggest(SEEN, "a1"))
    head = text.partition("policies:")[0]
    assert "#   resolver_not_allowed: 8.8.8.8:53/udp" in head
    assert "#   dns_over_tls: 1.1.1.1:853/tcp" in head
    body = text.partition("policies:")[2]
    assert "8.8.8.8" not in body and "1.1.1.1" not in body
    (tmp_path / "s.yaml").write_text(text)
    policy = check_file(tmp_path / "s.yaml").config.policies["a1"]
    assert policy.dns.resolvers == ["198.18.0.53"]
    assert all(r.cidr not in ("8.8.8.8/32", "1.1.1.1/32") for r in policy.allow)


def test_an_unresolved_address_under_domain_rules_is_a_finding() -> None:
    s = sg.suggest([record("203.0.113.9", 443, reason="unresolved_ip")], "a1")
    assert s.rules == [] and list(s.findings) == [("unresolved_ip", "203.0.113.9:443/tcp")]
    assert "allow: []" in sg.render(s)


def test_the_output_passes_policy_check_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "suggested.yaml"
    path.write_text(sg.render(sg.suggest(SEEN, "a1")))
    checked = check_file(path)
    assert checked.policies.named() == ["a1"]
    assert checked.policies.policies["a1"].mode.name == "ENFORCE"


RESOLVED = record("198.18.0.53", 53, l4_proto="dgram", reason="resolver", would_deny=False)
NAMED = [
    RESOLVED,
    record("198.18.1.1", 443, dst_host="api.github.com"),
    record("198.18.1.2", 443, dst_host="codeload.github.com"),
    record("198.18.1.3", 443, dst_host="objects.github.com"),
    record("198.18.1.4", 443, dst_host="github.com"),
    record("198.18.2.1", 443, dst_host="pypi.org"),
    record("198.18.2.2", 443, dst_host="files.pythonhosted.org"),
    record("198.18.3.1", 443, dst_host="b1.s3.amazonaws.com"),
    record("198.18.3.2", 443, dst_host="b2.s3.amazonaws.com"),
    record("198.18.3.3", 443, dst_host="b3.s3.amazonaws.com"),
    record("198.18.4.1", 443),
]


def test_named_destinations_become_domain_rules_and_a_wildcard_where_the_psl_says() -> None:
    s = sg.suggest(NAMED, "a1", domains=True)
    domains = [r.domain for r, _ in s.rules if r.domain]
    # Three names under github.com fold into one wildcard; its apex keeps its own rule.
    # s3.amazonaws.com is a public suffix: each bucket is its own registrable domain.
    assert domains == [
        "*.github.com",
        "b1.s3.amazonaws.com",
        "b2.s3.amazonaws.com",
        "b3.s3.amazonaws.com",
        "files.pythonhosted.org",
        "github.com",
        "pypi.org",
    ]
    wildcard = next(seen for r, seen in s.rules if r.domain == "*.github.com")
    assert wildcard.decisions == 3
    assert [r.cidr for r, _ in s.rules if r.cidr] == ["198.18.4.1/32"]


def test_domain_rules_need_a_resolver_the_policy_allowed() -> None:
    s = sg.suggest(NAMED[1:], "a1", domains=True)  # no allowed resolver among them
    assert [r.domain for r, _ in s.rules if r.domain] == []
    assert len([r.cidr for r, _ in s.rules if r.cidr]) == len(NAMED) - 1


def test_named_destinations_render_as_this_build_compiles_them(tmp_path: Path) -> None:
    text = sg.render(sg.suggest(NAMED[:2], "a1"))  # render itself refuses what fails the check
    (tmp_path / "s.yaml").write_text(text)
    check_file(tmp_path / "s.yaml")
    if sg.domain_rules_supported():
        assert '      - {domain: "api.github.com", ports: [443], proto: tcp}' in text
    else:  # no DNS-answer tracking: the address, with the name it was resolved from
        assert '      - {cidr: "198.18.1.1/32", ports: [443], proto: tcp}' in text
        assert "resolved from api.github.com" in text


def test_diff_names_what_adopting_the_suggestion_changes() -> None:
    current = Policy(
        allow=[
            Rule(cidr="198.18.0.2/32", ports=["443", "8000-8002"], proto="tcp"),
            Rule(cidr="10.0.0.0/8", ports=[22], proto="tcp"),
        ]
    )
    assert sg.diff(current, sg.suggest(SEEN, "a1").policy()) == [
        "- allow cidr 10.0.0.0/8 ports 22 proto tcp",
        "+ allow cidr 198.18.0.3/32 ports 5000 proto udp",
        "+ allow cidr fd00:18::2/128 ports 443 proto tcp",
        "+ dns resolver 198.18.0.53",
    ]


def test_diff_picks_the_named_policy_or_refuses_to_guess(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("policies:\n  x: {}\n  y: {allow: [{cidr: 10.0.0.0/8}]}\n")
    assert sg.current_policy(path, "y").allow[0].cidr == "10.0.0.0/8"
    with pytest.raises(UsageError, match="has no policy 'z' and more than one other"):
        sg.current_policy(path, "z")


def test_files_are_filtered_by_agent_and_time(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    lines = [msgspec.json.encode(r) for r in SEEN]
    path.write_bytes(b"\n".join(lines) + b"\nnot json\n")
    got = list(sg.from_files([path], Filter(agents=frozenset({"a2"})), None))
    assert [(r.dst_ip, r.agent) for r in got] == [("198.18.0.2", "a2")]
    assert list(sg.from_files([path], Filter(), "1h")) == []  # 2026-12-01T10:05 is long gone


def cli(*args: str) -> Any:
    from click.testing import CliRunner

    from netlogger.cli import cli as group

    return CliRunner().invoke(group, list(args), prog_name="netlogger")


def test_the_command_reads_files_and_prints_a_checked_policy_or_the_diff(tmp_path: Path) -> None:
    history = tmp_path / "h.jsonl"
    history.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in SEEN))
    result = cli("policy", "suggest", "--from", str(history), "--agent", "a1", "--name", "a1")
    assert result.exit_code == 0, result.output
    assert result.output == sg.render(sg.suggest([r for r in SEEN if r.agent == "a1"], "a1"))
    current = tmp_path / "current.yaml"
    current.write_text(result.output)
    same = cli("policy", "suggest", "--from", str(history), "--name", "a1", "--diff", str(current))
    # a2's decision adds nothing new: same destination, port and protocol as a1's.
    assert (same.exit_code, same.output) == (0, f"{current}: no change\n")
    current.write_text("policies:\n  a1: {allow: [{cidr: 10.0.0.0/8}]}\n")
    changed = cli(
        "policy", "suggest", "--from", str(history), "--name", "a1", "--diff", str(current)
    )
    assert changed.exit_code == 0
    assert changed.output.splitlines()[0] == "- allow cidr 10.0.0.0/8 ports all proto any"
    assert "+ allow cidr 198.18.0.3/32 ports 5000 proto udp" in changed.output


def test_policy_test_refuses_bad_destinations_and_unknown_policies_before_the_kernel(
    tmp_path: Path,
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("policies:\n  p: {}\n")
    for dest, message in [
        ("example.com:443", "a DOMAIN destination is decided by the addresses the policy's"),
        ("198.18.0.2:70000", "ports run from 1 to 65535"),
        ("198.18.0.2:443/sctp", "the protocol is tcp or udp"),
    ]:
        result = cli("policy", "test", "--policy", "p", "--config", str(config), dest)
        assert result.exit_code == 2, result.output
        assert message in result.output
    result = cli("policy", "test", "--policy", "q", "--config", str(config), "198.18.0.2")
    assert result.exit_code == 2
    assert "no policy named 'q' (known: p)" in result.output


def test_a_udp_probe_beside_a_tcp_connect_is_no_need_but_a_lone_udp_connect_is() -> None:
    probe = {"l4_proto": "dgram", "l4_proto_code": 2, "udp_connect": True}
    s = sg.suggest(
        [
            record("198.18.0.2", 443),
            record("198.18.0.2", 443, **probe),
            record("198.18.0.4", 443, **probe),
        ],
        "a1",
    )
    assert [(r.cidr, r.proto) for r, _ in s.rules] == [
        ("198.18.0.2/32", "tcp"),
        ("198.18.0.4/32", "udp"),
    ]
