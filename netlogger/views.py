"""The agent's state as tables for people (the --json forms print it raw)."""

from __future__ import annotations

import textwrap
from typing import Any

WIDTH = 100  # what the default (narrow) views fit; `-o wide` has no limit
RAW_NOTE = "RAW yes: a task there holds CAP_NET_RAW (packet sockets: see LAYERS/OPEN, -o wide)"


def short(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, the middle elided (ends of paths and ids matter)."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


def table(
    rows: list[list[str]], header: list[str], width: int | None = None, elastic: int = 0
) -> str:
    """Columns padded to fit; with `width`, the `elastic` column is elided until they fit."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    if width is not None:
        over = sum(widths) + 2 * (len(widths) - 1) - width
        if over > 0:
            widths[elastic] = max(len(header[elastic]), widths[elastic] - over)
            rows = [
                [short(c, widths[elastic]) if i == elastic else c for i, c in enumerate(r)]
                for r in rows
            ]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _mode(entry: dict[str, Any], wide: bool) -> str:
    if entry["mode"] == "bypass":
        left = f"{entry['bypass_left_s']:.0f}s"
        return f"bypass ({left} left)" if wide else f"bypass {left}"
    return str(entry["mode"])


def _raw(entry: dict[str, Any]) -> str:
    return "yes" if entry.get("raw_capable") else "no"


def _container(entry: dict[str, Any], wide: bool) -> str:
    cid, name = entry["container_id"], entry.get("container_name") or ""
    if wide:
        return f"{name} {cid}".strip() or "-"
    return short(name, 16) if name else (cid[:12] or "-")


def _path(entry: dict[str, Any], scope: str | None) -> str:
    path = entry["path"] or str(entry["cgroup_id"])
    if scope and path.startswith(scope.rstrip("/") + "/"):
        return path[len(scope.rstrip("/")) + 1 :]  # the scope is in the header
    return path


def enrolled_rows(
    entries: list[dict[str, Any]], wide: bool = False, scope: str | None = None
) -> str:
    """The enrolled cgroups: fits WIDTH columns, or everything in full when `wide`."""
    if wide:
        rows = [
            [
                e["path"] or str(e["cgroup_id"]),
                str(e["cgroup_id"]),
                e["policy"],
                _mode(e, wide),
                e["agent"] or "-",
                e["project"] or "-",
                _container(e, wide),
                str(e["seq"]),
                str(e["throttled"]),
                str(e["ringbuf_lost"]),
                _raw(e),
                "+".join(e.get("layers", [])) or "-",
                "; ".join(e.get("open", [])) or "-",
            ]
            for e in entries
        ]
        header = ["CGROUP", "ID", "POLICY", "MODE", "AGENT", "PROJECT", "CONTAINER", "DECISIONS",
                  "THROTTLED", "RING LOST", "CAP_NET_RAW", "LAYERS", "OPEN"]  # fmt: skip
        return table(rows, header)
    rows = [
        [
            _path(e, scope),
            short(e["policy"], 12),
            _mode(e, wide),
            short("/".join(p for p in (e["agent"], e["project"]) if p) or "-", 16),
            _container(e, wide),
            str(e["seq"]),
            str(e["throttled"] + e["ringbuf_lost"]),
            _raw(e),
        ]
        for e in entries
    ]
    header = ["CGROUP", "POLICY", "MODE", "AGENT", "CONTAINER", "DECISIONS", "LOST", "RAW"]
    text = table(rows, header, WIDTH)
    if any(e.get("raw_capable") for e in entries):
        text += "\n" + RAW_NOTE
    for e in entries:
        if e.get("open"):  # what no layer covers matters more than a column's width
            text += "\n" + short(f"OPEN {_path(e, scope)}: {'; '.join(e['open'])}", WIDTH)
    return text


def dns_line(dns: dict[str, Any]) -> str:
    cache = dns.get("cache", {})
    unreadable = sum(dns.get("unreadable", {}).values())
    return (
        f"dns      {dns['answers']} answers; {cache.get('entries', 0)} names cached for "
        f"{cache.get('cgroups', 0)} cgroup(s) ({cache.get('restored', 0)} restored at start)"
        + (f"; {unreadable} unreadable" if unreadable else "")
    )


def _labelled(label: str, text: str, wide: bool) -> list[str]:
    """`text` under its label in the status column, wrapped to WIDTH unless `wide`."""
    lines = [text] if wide else textwrap.wrap(text, WIDTH - 9)
    return [f"{label if i == 0 else '':<9}{line}" for i, line in enumerate(lines)]


def status_text(status: dict[str, Any], wide: bool = False) -> str:
    """The `status` report: fits WIDTH columns, or everything in full when `wide`."""
    a = status["agent"]
    fit = (lambda text, n: text) if wide else short
    scope = a["scope"]
    parts = [
        f"agent    pid {a['pid']} on {a['host']}, up {a['uptime_s']:.0f}s, version {a['version']}",
        f"scope    {fit(scope, 44)}   pin root {fit(a['pin_root'], 36)}",
        f"control  {fit(a['control_socket'], 50)}   metrics {a['metrics'] or 'off'}",
        "",
        "ENROLLED" if status["enrolled"] else "ENROLLED  none",
    ]
    if status["enrolled"]:
        if not wide:
            parts[-1] += "  (paths under the scope; all columns: -o wide)"
        parts.append(enrolled_rows(status["enrolled"], wide, None if wide else scope))
    by_action = status["records"]["by_action"]
    parts += [
        "",
        f"records  {status['records']['read']} read: "
        + (", ".join(f"{n} {action}" for action, n in sorted(by_action.items())) or "none yet"),
    ]
    losses = {k: v for k, v in status["losses"].items() if v}
    parts.append(
        "losses   " + (", ".join(f"{n} {kind}" for kind, n in sorted(losses.items())) or "none")
    )
    ring = status["ring"]
    parts.append(f"ring     {ring['pending_bytes']} of {ring['size']} bytes waiting")
    parts.append(dns_line(status["dns"]))
    parts += [
        fit(f"resolver {e['path']}: {', '.join(e['resolver_paths'])}", WIDTH)
        for e in status["enrolled"]
        if e.get("resolver_paths")
    ]
    parts += [
        "",
        table(
            [
                [
                    s["name"],
                    s.get("state") or ("up" if s["healthy"] else "degraded"),
                    f"{s['depth']}/{s['capacity']}",
                    str(s["exported"]),
                    str(s["dropped"]),
                    str(s["errors"]),
                    s["last_error"] or "-",
                ]
                for s in status["sinks"]
            ],
            ["SINK", "STATE", "QUEUE", "EXPORTED", "DROPPED", "ERRORS", "LAST ERROR"],
            None if wide else WIDTH,
            elastic=6,
        ),
    ]
    parts += ["", f"tail     {status['tail_subscribers']} client(s) connected"]
    c = status.get("containers")
    if c:
        engine = (
            f"{c['engine']}: {c['state']} since {c['since']}, cgroup driver "
            f"{c['cgroup_driver']}, containers enrolled at {c['enrolled_at']}, "
            f"attribution {c['attribution']}"
        )
        parts += _labelled("engine", engine, wide)
    for note in status["notes"]:
        parts += _labelled("note", note, wide)
    return "\n".join(parts)
