"""Where users see names: the console line, `tail --dst-host`, the JSONL history."""

from __future__ import annotations

import msgspec

from netlogger.sinks.console import format_item
from netlogger.sinks.jsonl import parse_item
from netlogger.tail import Filter
from tests.otlp.test_otlp_dns import answer, labelled


def test_console_prints_the_name_and_the_answer() -> None:
    rec = labelled(1)
    line = format_item(rec, color=False)  # type: ignore[arg-type]
    assert "10.1.2.3:443 (www.example.com)" in line
    rec_dns = answer()
    assert format_item(rec_dns, color=False) == (
        f"{rec_dns.ts[11:23]}  DNS      answer    agent-1/proj-1  www.example.com A  "
        "198.18.1.1, 198.18.1.2 via edge.cdn.example.net ttl 60  "
        "admitted 2 default.allow[2] from 198.18.0.53"
    )


def test_a_udp_connect_reads_as_a_probe_not_an_alert() -> None:
    probe = labelled(2, udp_connect=True, action="denied", reason="unresolved_ip", rule=None)
    line = format_item(probe, color=True)  # type: ignore[arg-type]
    assert "\033[1m\033[31m" not in line  # not the bold red of a deny
    plain = format_item(probe, color=False)  # type: ignore[arg-type]
    assert plain.split()[1] == "PROBE"
    assert plain.endswith("  unresolved_ip (denied udp connect: sends nothing)")


def test_dst_host_glob_matches_decisions_and_answers() -> None:
    only = Filter.from_request({"dst_host": "*.example.com"})
    assert only(labelled(1))  # type: ignore[arg-type]
    assert only(answer())
    other = Filter.from_request({"dst_host": "*.github.com"})
    assert not other(labelled(1))  # type: ignore[arg-type]
    assert not other(answer())
    denied = Filter.from_request({"action": ["denied"]})
    assert not denied(answer())


def test_history_lines_come_back_as_their_kind() -> None:
    for item in (labelled(1), answer()):
        line = msgspec.json.encode(item)
        assert parse_item(line) == item
