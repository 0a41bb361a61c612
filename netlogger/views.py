"""The agent's state as tables for people (the --json forms print it raw)."""

from __future__ import annotations

from typing import Any


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _mode(entry: dict[str, Any]) -> str:
    if entry["mode"] == "bypass":
        return f"bypass ({entry['bypass_left_s']:.0f}s left)"
    return str(entry["mode"])


def enrolled_rows(entries: list[dict[str, Any]]) -> str:
    rows = [
        [
            e["path"] or str(e["cgroup_id"]),
            str(e["cgroup_id"]),
            e["policy"],
            _mode(e),
            e["agent"] or "-",
            e["project"] or "-",
            (e["container_id"] or "-")[:12],
            str(e["seq"]),
            str(e["throttled"]),
            str(e["ringbuf_lost"]),
            "yes" if e.get("raw_capable") else "no",
            "+".join(e.get("layers", [])) or "-",
            "; ".join(e.get("open", [])) or "-",
        ]
        for e in entries
    ]
    return table(
        rows,
        [
            "CGROUP",
            "ID",
            "POLICY",
            "MODE",
            "AGENT",
            "PROJECT",
            "CONTAINER",
            "DECISIONS",
            "THROTTLED",
            "RING LOST",
            "CAP_NET_RAW",
            "LAYERS",
            "OPEN",
        ],
    )


def dns_line(dns: dict[str, Any]) -> str:
    cache = dns.get("cache", {})
    unreadable = sum(dns.get("unreadable", {}).values())
    return (
        f"dns      {dns['answers']} answers; {cache.get('entries', 0)} names cached for "
        f"{cache.get('cgroups', 0)} cgroup(s) ({cache.get('restored', 0)} restored at start)"
        + (f"; {unreadable} unreadable" if unreadable else "")
    )


def status_text(status: dict[str, Any]) -> str:
    a = status["agent"]
    parts = [
        f"agent    pid {a['pid']} on {a['host']}, up {a['uptime_s']:.0f}s, version {a['version']}",
        f"scope    {a['scope']}   pin root {a['pin_root']}",
        f"control  {a['control_socket']}   metrics {a['metrics'] or 'off'}",
        "",
        "ENROLLED" if status["enrolled"] else "ENROLLED  none",
    ]
    if status["enrolled"]:
        parts.append(enrolled_rows(status["enrolled"]))
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
        f"resolver {e['path']}: {', '.join(e['resolver_paths'])}"
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
        ),
    ]
    parts += ["", f"tail     {status['tail_subscribers']} client(s) connected"]
    c = status.get("containers")
    if c:
        parts.append(
            f"engine   {c['engine']}: {c['state']} since {c['since']}, cgroup driver "
            f"{c['cgroup_driver']}, containers enrolled at {c['enrolled_at']}, "
            f"attribution {c['attribution']}"
        )
    parts += [f"note     {note}" for note in status["notes"]]
    return "\n".join(parts)
