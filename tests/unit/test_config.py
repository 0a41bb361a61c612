"""Config and policy files: accepted as written in DESIGN.md, or every problem located."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor import certs
from netlogger.config.check import check_source, dns_ttl_s, fold_window_ns, validate
from netlogger.config.model import JsonlSink, OtlpSink
from netlogger.config.source import MAX_BYTES, parse
from netlogger.errors import ConfigError
from netlogger.kernel import abi, cgroup

MOUNT = cgroup.find_mount().path  # /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts

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


def on_this_host(text: str, tmp_path: Path) -> str:
    """DESIGN_EXAMPLE with the cgroups and certificates of this host, which the check reads."""
    made = certs.generate(tmp_path / "certs")
    return (
        text.replace("/sys/fs/cgroup/agents/a1", "/sys/fs/cgroup")
        .replace("/sys/fs/cgroup", str(MOUNT))
        .replace("ca.pem", str(made.ca_cert))
        .replace("client.pem", str(made.client_cert))
        .replace("client.key", str(made.client_key))
    )


def test_design_example_is_accepted_with_a_domain_rule(tmp_path: Path) -> None:
    example = on_this_host(DESIGN_EXAMPLE, tmp_path)
    checked = check_source(parse(example, "c.yaml"))
    assert [type(s).__name__ for s in checked.config.sinks] == [
        "ConsoleSink",
        "JsonlSink",
        "OtlpSink",
    ]
    jsonl = checked.config.sinks[1]
    assert isinstance(jsonl, JsonlSink) and jsonl.max_bytes == "100MB"
    assert isinstance(checked.config.sinks[2], OtlpSink)
    assert checked.config.enroll[0].agent == "a1"
    with_domain = example.replace(
        '      - {cidr: "2001:db8::/32", ports: [443]}\n',
        '      - {cidr: "2001:db8::/32", ports: [443]}\n'
        '      - {domain: "*.github.com", ports: [443]}\n',
    )
    compiled = check_source(parse(with_domain, "c.yaml")).policies.policies["default"]
    assert [bytes(k.name).rstrip(b"\0") for k, _ in compiled.domains] == [b"moc.buhtig."]
    assert compiled.flags & abi.PolicyFlag.HAS_DOMAINS


def test_every_structural_problem_is_located() -> None:
    found = problems(BROKEN)
    assert found[0].startswith("p.yaml:1: bogus: unknown field; expected one of: containers,")
    assert "p.yaml:4: policies.default.icmp: 'maybe' is not one of allow, deny" in found
    assert "p.yaml:10: policies.default.allow[3].proto: 'sctp' is not one of tcp, udp, any" in found
    # `second` is well-formed, so its value problems are reported in the same run.
    assert (
        "p.yaml:13: policies.second.allow[0].ports: bad port 70000: ports run from 1 to "
        "65535, low to high"
    ) in found
    assert (
        "p.yaml:14: policies.second.allow[1].domain: a domain rule needs dns.resolvers: "
        "addresses are admitted only from answers of the policy's resolvers"
    ) in found
    assert "p.yaml:15: policies.second.allow[2]: give exactly one of cidr or domain" in found
    # The schema errors hide none of `default`'s value errors (listed in the next test).
    assert len(found) == 10


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
enroll: [{cgroup: MOUNT, policy: nope}]
containers: {default_policy: also-nope}
"""
    assert problems(text.replace("MOUNT", str(MOUNT))) == [
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
    good.write_text(on_this_host(DESIGN_EXAMPLE, tmp_path))
    bad.write_text(BROKEN)
    ok = subprocess.run(
        [sys.executable, "-m", "netlogger", "policy", "check", str(good)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[1].split() == ["default", "enforce", "3", "2", "0", "1"]
    failed = subprocess.run(
        [sys.executable, "-m", "netlogger", "policy", "check", str(bad)],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2
    lines = failed.stderr.splitlines()
    assert lines[0] == "error: ConfigError: 10 problem(s)"
    assert all(line.startswith(f"{bad}:") for line in lines[1:]) and len(lines) == 11


def test_values_run_refuses_fail_the_check_each_located() -> None:
    text = f"""\
metrics: 0.0.0.0:9464
limits:
  ring_size: 3000
  allowed_per_sec: -5
  allowed_burst: 0
sinks:
  - {{type: jsonl, path: /tmp/nl.jsonl, max_bytes: -100, keep: -1}}
enroll:
  - {{cgroup: {MOUNT}/a/../b}}
  - {{cgroup: {MOUNT}/netlogger-no-such-cgroup}}
  - {{cgroup: /tmp}}
"""
    assert problems(text) == [
        "p.yaml:1: metrics: metrics address '0.0.0.0:9464' must be a loopback host:port, like "
        "127.0.0.1:9464",
        "p.yaml:3: limits.ring_size: 3000 is not a power of two from the page size (4096 bytes) "
        "to 2GiB, which the kernel needs; like 8MiB",
        "p.yaml:4: limits.allowed_per_sec: -5 is not 0 (no limit) to 1000000000",
        "p.yaml:5: limits.allowed_burst: 0 is not at least 1",
        "p.yaml:7: sinks[0].max_bytes: -100 is not more than 0",
        "p.yaml:7: sinks[0].keep: -1 is not at least 1 (without a rotated file to keep, the file "
        "would grow past max_bytes)",
        f"p.yaml:9: enroll[0].cgroup: cgroup path {MOUNT}/a/../b contains '..'; give it without "
        "parent references",
        f"p.yaml:10: enroll[1].cgroup: cgroup {MOUNT}/netlogger-no-such-cgroup does not exist; "
        f"create it with: mkdir {MOUNT}/netlogger-no-such-cgroup",
        f"p.yaml:11: enroll[2].cgroup: cgroup path /tmp is outside the cgroup2 mount {MOUNT}",
    ]


def test_limits_are_checked_as_the_kernel_uses_them() -> None:
    # (burst - 1) * interval lands in a u64 tolerance; at 1000/s the interval is 1e6 ns.
    assert problems("limits: {allowed_per_sec: 1000, allowed_burst: 100000000000000}\n") == [
        "p.yaml:1: limits.allowed_burst: 100000000000000 at allowed_per_sec 1000 overflows the "
        "kernel's 64-bit tolerance; at most 9223372036854"
    ]
    check_source(parse("limits: {allowed_per_sec: 1000, allowed_burst: 9223372036854}\n", "p"))
    # No rate: no tolerance to wrap.
    check_source(parse("limits: {allowed_per_sec: 0, allowed_burst: 100000000000000}\n", "p"))
    assert problems("limits: {ring_size: 4GiB, allowed_per_sec: 2000000000}\n") == [
        "p.yaml:1: limits.ring_size: '4GiB' is not a power of two from the page size (4096 bytes) "
        "to 2GiB, which the kernel needs; like 8MiB",
        "p.yaml:1: limits.allowed_per_sec: 2000000000 is not 0 (no limit) to 1000000000",
    ]


def test_folding_is_on_by_default_and_a_switch_turns_it_off() -> None:
    limits = check_source(parse("limits: {}\n", "p")).config.limits
    assert fold_window_ns(limits) == 10_000_000
    limits = check_source(parse("limits: {fold: false}\n", "p")).config.limits
    assert fold_window_ns(limits) == 0
    limits = check_source(parse("limits: {fold_window: 250ms}\n", "p")).config.limits
    assert fold_window_ns(limits) == 250_000_000
    assert problems("limits: {fold_window: 0s}\n") == [
        "p.yaml:1: limits.fold_window: '0s' is not from 1ms to 10s; turn folding off with "
        "`fold: false`"
    ]
    assert problems("limits: {fold_window: soon}\n") == [
        "p.yaml:1: limits.fold_window: bad duration 'soon': use a number with ms, s, m, h or d, "
        "like 30s or 10m"
    ]


def test_the_dns_ttl_clamp_is_whole_seconds_floor_below_cap() -> None:
    assert dns_ttl_s(check_source(parse("limits: {}\n", "p")).config.limits) == (60, 3600)
    limits = check_source(parse("limits: {dns_ttl_floor: 0s, dns_ttl_cap: 2m}\n", "p"))
    assert dns_ttl_s(limits.config.limits) == (0, 120)
    assert problems("limits: {dns_ttl_floor: 2h}\n") == [
        "p.yaml:1: limits.dns_ttl_floor: '2h' is above dns_ttl_cap '1h'"
    ]
    assert problems("limits: {dns_ttl_floor: 1500ms, dns_ttl_cap: 8d}\n") == [
        "p.yaml:1: limits.dns_ttl_floor: '1500ms' is not a whole number of seconds from 0s to 7d",
        "p.yaml:1: limits.dns_ttl_cap: '8d' is not a whole number of seconds from 0s to 7d",
    ]
    assert problems("limits: {dns_ttl_cap: long}\n") == [
        "p.yaml:1: limits.dns_ttl_cap: bad duration 'long': use a number with ms, s, m, h or d, "
        "like 30s or 10m"
    ]


def test_a_schema_error_hides_no_value_error_and_a_rule_reports_every_bad_value() -> None:
    text = """\
limits:
  ring_size: 3000
  bogus: 1
policies:
  default:
    mode: enfroce
    allow:
      - {cidr: 10.0.0.1/8, ports: [70000], proto: sctp}
      - 42
      - {cidr: 10.9.0.0/16, ports: [0]}
"""
    assert problems(text) == [
        "p.yaml:2: limits.ring_size: 3000 is not a power of two from the page size (4096 bytes) "
        "to 2GiB, which the kernel needs; like 8MiB",
        "p.yaml:3: limits.bogus: unknown field; expected one of: allowed_burst, allowed_per_sec, "
        "dns_ttl_cap, dns_ttl_floor, fold, fold_window, ring_size",
        "p.yaml:6: policies.default.mode: 'enfroce' is not one of enforce, audit",
        "p.yaml:8: policies.default.allow[0].proto: 'sctp' is not one of tcp, udp, any",
        "p.yaml:8: policies.default.allow[0].cidr: bad cidr '10.0.0.1/8': 10.0.0.1/8 has host "
        "bits set",
        "p.yaml:8: policies.default.allow[0].ports: bad port 70000: ports run from 1 to 65535, "
        "low to high",
        "p.yaml:9: policies.default.allow[1]: Expected `object`, got `int`",
        # The item after a broken one keeps its own index.
        "p.yaml:10: policies.default.allow[2].ports: bad port 0: ports run from 1 to 65535, low "
        "to high",
    ]


def test_enum_errors_list_the_accepted_values() -> None:
    text = """\
sinks: [{type: kafka}, {type: console, color: blue}]
enroll: [{cgroup: /x, mode: bypass}]
"""
    found = problems(text)
    assert found[:2] == [
        "p.yaml:1: sinks[0].type: 'kafka' is not one of console, jsonl, otlp",
        "p.yaml:1: sinks[1].color: 'blue' is not one of auto, always, never",
    ]
    assert "p.yaml:2: enroll[0].mode: 'bypass' is not one of enforce, audit" in found


def test_duplicate_keys_are_errors_naming_both_lines() -> None:
    text = """\
scope: /a
policies:
  strict:
    allow: [{cidr: 10.0.0.0/8}]
    allow: []
  strict:
    mode: audit
    allow: [{cidr: 0.0.0.0/0}]
scope: /b
"""
    assert problems(text) == [
        "p.yaml:1: scope: cgroup path /a is outside the cgroup2 mount " + str(MOUNT),
        "p.yaml:5: policies.strict.allow: duplicate key; the first is at line 4: keep one",
        "p.yaml:6: policies.strict: duplicate key; the first is at line 3: keep one",
        "p.yaml:9: scope: duplicate key; the first is at line 1: keep one",
    ]


def test_a_non_utf8_file_is_one_located_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("policies:\n  default: {}\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        validate(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:3: not UTF-8: byte 0xe9; save the file as UTF-8"
    ]


def test_the_document_is_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(ConfigError) as info:
        validate(big)
    assert [str(p) for p in info.value.problems] == [
        f"{big}: larger than 1 MiB; a config is smaller"
    ]
    assert problems("policies: " + "[" * 1000 + "]" * 1000 + "\n") == [
        "p.yaml:1: not valid YAML: nested deeper than 32 levels"
    ]
    assert problems("a: &a [*a]\n") == ["p.yaml:1: a: nested deeper than 32 levels"]


def test_a_billion_laughs_is_refused() -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    assert problems("\n".join(lines) + "\n") == [
        "p.yaml:5: e: aliases expand to more than 10000 values; write the document out instead"
    ]


def test_flags_and_policy_files_are_checked_with_the_config(tmp_path: Path) -> None:
    config, policy = tmp_path / "c.yaml", tmp_path / "p.yaml"
    config.write_text("limits: {allowed_burst: 0}\npolicies: {default: {mode: audit}}\n")
    policy.write_text("policies:\n  default:\n    allow: [{cidr: 10.0.0.1/8}]\n")
    with pytest.raises(ConfigError) as info:
        validate(config, policy, {"metrics": "10.0.0.1:9464", "scope": "/tmp"})
    assert [str(p) for p in info.value.problems] == [
        f"{config}:1: limits.allowed_burst: 0 is not at least 1",
        f"{policy}:3: policies.default.allow[0].cidr: bad cidr '10.0.0.1/8': 10.0.0.1/8 has host "
        "bits set",
        "command line: --scope: cgroup path /tmp is outside the cgroup2 mount " + str(MOUNT),
        "command line: --metrics: metrics address '10.0.0.1:9464' must be a loopback host:port, "
        "like 127.0.0.1:9464",
    ]


def test_a_policy_file_holds_only_policies_and_hides_nothing(tmp_path: Path) -> None:
    config, policy = tmp_path / "c.yaml", tmp_path / "p.yaml"
    config.write_text("limits: {ring_size: 3000}\n")
    policy.write_text("metrics: 127.0.0.1:1\npolicies:\n  default: {mode: enfroce}\n")
    with pytest.raises(ConfigError) as info:
        validate(config, policy)
    assert [str(p) for p in info.value.problems] == [
        f"{config}:1: limits.ring_size: 3000 is not a power of two from the page size (4096 "
        "bytes) to 2GiB, which the kernel needs; like 8MiB",
        f"{policy}:1: metrics: a policy file holds only `policies:`",
        f"{policy}:3: policies.default.mode: 'enfroce' is not one of enforce, audit",
    ]


def test_the_domain_check_hides_no_other_value_of_its_rule() -> None:
    text = "policies:\n  default:\n    dns: {resolvers: [10.0.0.53]}\n    allow:\n"
    assert problems(text + "      - {domain: a..example, ports: [0]}\n") == [
        "p.yaml:5: policies.default.allow[0].domain: domain 'a..example' has an empty label",
        "p.yaml:5: policies.default.allow[0].ports: bad port 0: ports run from 1 to 65535, low "
        "to high",
    ]


@pytest.mark.parametrize(
    ("domain", "problem"),
    [
        ("a*.example.com", "a wildcard is only allowed as the first label, `*.`"),
        ("*..", "names no host"),
        ("bücher.example", "is not ASCII: write its punycode (xn--) form"),
        ("-a.example", "may hold only letters, digits, '-' and '_'"),
        ("a" * 64 + ".example", "is longer than 63 characters"),
        (("a" * 60 + ".") * 5 + "example", "is longer than 246 characters"),
        ("a b.example", "may hold only letters, digits"),
    ],
)
def test_malformed_domains_are_rejected_with_their_location(domain: str, problem: str) -> None:
    text = (
        "policies:\n  default:\n    dns: {resolvers: [10.0.0.53]}\n"
        f"    allow:\n      - {{domain: {domain!r}}}\n"
    )
    (found,) = problems(text)
    assert found.startswith("p.yaml:5: policies.default.allow[0].domain: domain ")
    assert problem in found


def test_domain_keys_are_reversed_names_exact_ones_terminated() -> None:
    text = (
        "policies:\n  default:\n    dns: {resolvers: [10.0.0.53]}\n    allow:\n"
        "      - {domain: API.GitHub.com., ports: [443], name: api}\n"
        "      - {domain: '*.github.com', ports: [80], name: wild}\n"
    )
    compiled = check_source(parse(text, "p.yaml")).policies.policies["default"]
    entries = {bytes(k.name)[: v.name_len]: (k.prefixlen, v) for k, v in compiled.domains}
    exact, wild = entries[b"moc.buhtig.ipa.\0"], entries[b"moc.buhtig."]
    assert (exact[0], exact[1].wildcard, wild[0], wild[1].wildcard) == (32 + 128, 0, 32 + 88, 1)
    ports = {k.match_id: [r.port_lo for r in v.rules[: v.count]] for k, v in compiled.domain_ports}
    # The exact name gets its own rule first, then the wildcard's; the apex of *.github.com
    # (github.com itself) matches nothing.
    assert (ports[exact[1].match_id], ports[wild[1].match_id]) == ([443, 80], [80])
    assert wild[1].apex_match_id == 0
    # A cidr of the wrong type is cut away; the rule's ports are still checked, and its
    # "give exactly one of cidr or domain" (which only the cut makes true) is left out.
    assert problems("policies:\n  default:\n    allow: [{cidr: 5, ports: [0]}]\n") == [
        "p.yaml:3: policies.default.allow[0].cidr: Expected `str`, got `int`",
        "p.yaml:3: policies.default.allow[0].ports: bad port 0: ports run from 1 to 65535, low "
        "to high",
    ]
