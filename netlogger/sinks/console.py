"""One readable line per decision or DNS answer, colored on a terminal; denies stand out.

A UDP connect() sends nothing, and glibc's getaddrinfo makes one to every
candidate address to sort them (RFC 3484): such a decision prints as PROBE,
dimmed, with its verdict in words, so a resolver's probing does not read as an
alert. The datagrams that follow are decided (and printed) on their own.

Color follows the usual convention: on when writing to a terminal, off when
NO_COLOR is set (https://no-color.org), and what --color/--no-color say above both.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from netlogger.pipeline.record import TIMES, Control, DnsRecord, Gap, Item, Record
from netlogger.sinks.base import History

RESET, BOLD, DIM = "\033[0m", "\033[1m", "\033[2m"
RED, GREEN, YELLOW, MAGENTA, CYAN = "\033[31m", "\033[32m", "\033[33m", "\033[35m", "\033[36m"
_LABELS = {
    "allowed": ("ALLOW", GREEN),
    "denied": ("DENY", BOLD + RED),
    "bypassed": ("BYPASS", BOLD + YELLOW),
}
_OPS = {
    "ebpf.egress.connect": "connect",
    "ebpf.egress.sendmsg": "sendmsg",
    "ebpf.egress.sock_create": "socket",
    "ebpf.egress.gap": "gap",
    "ebpf.egress.dns": "answer",
}
_VERDICT_TINTS = {"admitted": GREEN, "not_matched": DIM}  # the rest: nothing admitted, yellow


def use_color(stream: TextIO, asked: bool | None) -> bool:
    """--color/--no-color if given, else a terminal without NO_COLOR set."""
    if asked is not None:
        return asked
    return not os.environ.get("NO_COLOR") and stream.isatty()


def _who(item: Record | DnsRecord | Control) -> str:
    """agent/project (container name), else the container's name, else the cgroup."""
    labels = "/".join(p for p in (item.agent, item.project) if p)
    name = getattr(item, "container_name", None)
    if name:
        return f"{labels} ({name})" if labels else name
    return labels or (f"cgroup {item.cgroup_id}" if item.cgroup_id else "agent")


def _destination(rec: Record) -> str:
    if rec.no_dst:
        return f"{rec.l4_proto} socket"
    host = f"[{rec.dst_ip}]" if rec.dst_ip and ":" in rec.dst_ip else rec.dst_ip
    name = f" ({rec.dst_host})" if rec.dst_host else ""
    return f"{host}:{rec.dst_port}{name}"


def format_dns(rec: DnsRecord, color: bool) -> str:
    asked = f"{rec.qname or '?'} {rec.qtype or ''}".rstrip()
    answers = ", ".join(rec.answers or ()) or rec.rcode or rec.parse_error or "-"
    via = f" via {' > '.join(rec.cname_chain)}" if rec.cname_chain else ""
    ttl = f" ttl {rec.ttl}" if rec.ttl is not None else ""
    verdict = rec.verdict + (f" {rec.admitted}" if rec.admitted else "")
    verdict += (f" {rec.rule}" if rec.rule else "") + f" from {rec.server}"
    if rec.parse_error:
        verdict += f" (unreadable: {rec.parse_error})"
    parts = [rec.ts[11:23], f"{'DNS':<7}", f"{'answer':<8}", _who(rec), asked, answers + via + ttl]
    parts.append(verdict)
    if not color:
        return "  ".join(parts)
    tint = _VERDICT_TINTS.get(rec.verdict, YELLOW)
    parts[0] = DIM + parts[0] + RESET
    parts[1] = tint + parts[1] + RESET
    parts[3] = CYAN + parts[3] + RESET
    parts[6] = tint + parts[6] + RESET
    return "  ".join(parts)


def format_record(rec: Record, color: bool) -> str:
    label, tint = _LABELS.get(rec.action, (rec.action.upper(), ""))
    if rec.would_deny and rec.action != "denied":
        label, tint = label + "*", MAGENTA if rec.action == "allowed" else tint
    who = _who(rec)
    why = rec.reason + (f" {rec.rule}" if rec.rule else "")
    if rec.would_deny:
        why += " (would deny)"
    if rec.udp_connect:
        label, tint = "PROBE", DIM
        why += f" ({rec.action} udp connect: sends nothing)"
    clock = rec.ts[11:23]
    parts = [
        clock,
        f"{label:<7}",
        f"{_OPS.get(rec.event_name, rec.event_name):<8}",
        who,
        f"{rec.comm}[{rec.pid}]",
        _destination(rec) + (f" {TIMES}{rec.repeat_count}" if rec.repeat_count else ""),
        why,
    ]
    if not color:
        return "  ".join(parts)
    parts[0] = DIM + parts[0] + RESET
    parts[1] = tint + parts[1] + RESET
    parts[3] = CYAN + parts[3] + RESET
    parts[6] = (tint if rec.action != "allowed" else DIM) + parts[6] + RESET
    return "  ".join(parts)


def format_gap(gap: Gap, color: bool) -> str:
    where = f"cgroup {gap.cgroup_id}" if gap.cgroup_id else "agent"
    who = "/".join(p for p in (gap.agent, gap.project) if p)
    seqs = f" seq {gap.gap_seq_first}-{gap.gap_seq_last}" if gap.gap_seq_first is not None else ""
    sink = f" in {gap.gap_sink}" if gap.gap_sink else ""
    text = (
        f"{gap.ts[11:23]}  {'GAP':<7}  {gap.gap_kind:<8}  {who or where}  "
        f"lost {gap.gap_count} record(s){sink}{seqs}"
    )
    return BOLD + MAGENTA + text + RESET if color else text


def _state(mode: str | None, policy: str | None) -> str:
    return f"{mode} {policy}" if mode else "not enrolled"


def format_control(c: Control, color: bool) -> str:
    """`12:00:01.123  CONTROL  bypass    web-1  by uid 0 pid 42  enforce default -> bypass ...`"""
    by = f"by uid {c.uid} pid {c.pid}" if c.by == "peer" else f"by agent ({c.trigger})"
    change = f"{_state(c.mode_before, c.policy_before)} -> {_state(c.mode_after, c.policy_after)}"
    if c.bypass_until:
        change += f" until {c.bypass_until[:19]}Z"
    who = _who(c)
    result = "done" if c.error is None else f"REFUSED: {c.error}"
    text = (
        f"{c.ts[11:23]}  {'CONTROL':<7}  {c.command:<8}  {who}  {c.target}  {by}  "
        f"{change}  {result}"
    )
    if not color:
        return text
    return (BOLD + (RED if c.error else CYAN)) + text + RESET


def format_item(item: Item, color: bool) -> str:
    if isinstance(item, Gap):
        return format_gap(item, color)
    if isinstance(item, DnsRecord):
        return format_dns(item, color)
    if isinstance(item, Control):
        return format_control(item, color)
    return format_record(item, color)


class ConsoleSink:
    name = "console"
    durable = False
    history: History | None = None

    def __init__(self, stream: TextIO | None = None, color: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.color = use_color(self.stream, color)
        self.written = 0

    def export(self, batch: Sequence[Item]) -> None:
        if batch:
            self.stream.write("".join(format_item(r, self.color) + "\n" for r in batch))
            self.stream.flush()
            self.written += len(batch)

    def status(self) -> dict[str, Any]:
        return {"written": self.written}

    def force_flush(self, timeout: float = 5.0) -> None:
        self.stream.flush()

    def shutdown(self) -> None:
        self.stream.flush()
