"""Saved objects imported into the `Clawker` workspace: index patterns and three dashboards.

* Claude Code Cost & Usage: KPI strip from Prometheus counters, read through the
  `clawker_prometheus` direct-query datasource with PPL (observability visualizations).
* Claude Code Activity: prompts, tools, code edits, permissions, hooks, MCP, plugins.
* Clawker Networking: event streams for Envoy, CoreDNS and eBPF egress, the eBPF audit trail
  (who changed enforcement), plus one verdict pie per source on that source's own field (no
  normalisation), denials in red.

Objects are built as data here (visState and friends are JSON strings inside JSON, which is
unreadable by hand) and written as NDJSON for the saved-objects import API.
"""

from __future__ import annotations

import json
from typing import Any

from monitor import indices

DATASOURCE = "clawker_prometheus"
RED = "#E7664C"
GREEN = "#54B399"
AMBER = "#D6BF57"
VERDICT_COLORS = {
    "denied": RED,
    "NXDOMAIN": RED,
    "REFUSED": RED,
    "SERVFAIL": RED,
    "bypassed": AMBER,
    "allowed": GREEN,
    "NOERROR": GREEN,
}
SEARCH_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"


def pattern_id(index: str) -> str:
    return f"clawker-ip-{index}"


def _search_source(query: str = "") -> dict[str, str]:
    source = {
        "query": {"query": query, "language": "kuery"},
        "filter": [],
        "indexRefName": SEARCH_REF,
    }
    return {"searchSourceJSON": json.dumps(source)}


def _index_ref(index: str) -> list[dict[str, str]]:
    return [{"name": SEARCH_REF, "type": "index-pattern", "id": pattern_id(index)}]


def index_patterns() -> list[dict[str, Any]]:
    objects = []
    for spec in indices.all_indices():
        objects.append(
            {
                "type": "index-pattern",
                "id": pattern_id(spec.name),
                "attributes": {"title": spec.name, "timeFieldName": "@timestamp"},
                "references": [],
            }
        )
    return objects


def _saved_search(
    oid: str, title: str, index: str, columns: list[str], query: str = ""
) -> dict[str, Any]:
    return {
        "type": "search",
        "id": oid,
        "attributes": {
            "title": title,
            "description": "",
            "columns": columns,
            "sort": [["@timestamp", "desc"]],
            "kibanaSavedObjectMeta": _search_source(query),
        },
        "references": _index_ref(index),
    }


def _vis(
    oid: str,
    title: str,
    index: str,
    vis_type: str,
    params: dict[str, Any],
    aggs: list[dict[str, Any]],
    query: str = "",
    colors: dict[str, str] | None = None,
) -> dict[str, Any]:
    state = {"title": title, "type": vis_type, "params": params, "aggs": aggs}
    ui_state = {"vis": {"colors": colors}} if colors else {}
    return {
        "type": "visualization",
        "id": oid,
        "attributes": {
            "title": title,
            "description": "",
            "version": 1,
            "visState": json.dumps(state),
            "uiStateJSON": json.dumps(ui_state),
            "kibanaSavedObjectMeta": _search_source(query),
        },
        "references": _index_ref(index),
    }


def _count() -> dict[str, Any]:
    return {"id": "1", "enabled": True, "type": "count", "schema": "metric", "params": {}}


def _terms(
    field: str, schema: str = "segment", size: int = 10, agg_id: str = "2"
) -> dict[str, Any]:
    return {
        "id": agg_id,
        "enabled": True,
        "type": "terms",
        "schema": schema,
        "params": {"field": field, "size": size, "order": "desc", "orderBy": "1"},
    }


def _pie(oid: str, title: str, index: str, field: str, query: str = "") -> dict[str, Any]:
    params = {
        "type": "pie",
        "addTooltip": True,
        "addLegend": True,
        "legendPosition": "right",
        "isDonut": True,
        "labels": {"show": True, "values": True, "last_level": True, "truncate": 100},
    }
    return _vis(
        oid, title, index, "pie", params, [_count(), _terms(field)], query, colors=VERDICT_COLORS
    )


def _table(oid: str, title: str, index: str, field: str, query: str = "") -> dict[str, Any]:
    params = {"perPage": 10, "showPartialRows": False, "showMetricsAtAllLevels": False}
    return _vis(oid, title, index, "table", params, [_count(), _terms(field, "bucket", 20)], query)


def _split_table(
    oid: str, title: str, index: str, rows: str, field: str, query: str = "", size: int = 10
) -> dict[str, Any]:
    """A table of the top `field` values within each top `rows` value."""
    params = {"perPage": 20, "showPartialRows": False, "showMetricsAtAllLevels": False}
    aggs = [_count(), _terms(rows, "bucket", 20), _terms(field, "bucket", size, agg_id="3")]
    return _vis(oid, title, index, "table", params, aggs, query)


def _metric(oid: str, title: str, index: str, query: str) -> dict[str, Any]:
    params = {
        "addTooltip": True,
        "addLegend": False,
        "type": "metric",
        "metric": {"colorSchema": "Green to Red", "style": {"fontSize": 48}},
    }
    return _vis(oid, title, index, "metric", params, [_count()], query)


def _ppl_metric(oid: str, title: str, metric: str, by: str = "") -> dict[str, Any]:
    """A Prometheus counter through the SQL plugin's direct query, as PPL."""
    group = f" by {by}" if by else ""
    query = f"source = {DATASOURCE}.{metric} | stats sum(@value){group}"
    return {
        "type": "observability-visualization",
        "id": oid,
        "attributes": {
            "title": title,
            "description": f"Prometheus: {metric}",
            "version": 1,
            "createdTimeMs": 0,
            "savedVisualization": {
                "query": query,
                "selected_date_range": {"start": "now-7d", "end": "now", "text": ""},
                "selected_timestamp": "@timestamp",
                "selected_fields": {"text": "", "tokens": []},
                "name": title,
                "description": "",
                "type": "metric" if not by else "bar",
            },
        },
        "references": [],
    }


def _dashboard(
    oid: str, title: str, description: str, panels: list[dict[str, Any]]
) -> dict[str, Any]:
    panel_json = []
    references = []
    for i, (panel, grid) in enumerate(zip(panels, _layout(panels), strict=True)):
        panel_json.append(
            {
                "panelIndex": str(i + 1),
                "gridData": {**grid, "i": str(i + 1)},
                "embeddableConfig": {},
                "panelRefName": f"panel_{i}",
                "version": "2.19.3",
            }
        )
        ref_type = "observability-visualization" if panel["type"] == "kpi" else panel["type"]
        references.append({"name": f"panel_{i}", "type": ref_type, "id": panel["id"]})
    return {
        "type": "dashboard",
        "id": oid,
        "attributes": {
            "title": title,
            "description": description,
            "panelsJSON": json.dumps(panel_json),
            "optionsJSON": json.dumps({"useMargins": True, "hidePanelTitles": False}),
            "timeRestore": True,
            "timeFrom": "now-24h",
            "timeTo": "now",
            "version": 1,
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps(
                    {"query": {"query": "", "language": "kuery"}, "filter": []}
                )
            },
        },
        "references": references,
    }


# Panel sizes on OSD's 48-column grid: KPIs in a strip, charts two a row, streams full width.
PANEL_SIZE = {"kpi": (16, 7), "visualization": (24, 12), "search": (48, 15)}


def _layout(panels: list[dict[str, str]]) -> list[dict[str, int]]:
    grids = []
    x = y = row_height = 0
    for panel in panels:
        w, h = PANEL_SIZE[panel["type"]]
        if x + w > 48:
            x, y, row_height = 0, y + row_height, 0
        grids.append({"x": x, "y": y, "w": w, "h": h})
        x, row_height = x + w, max(row_height, h)
    return grids


def _panel(obj: dict[str, Any], kind: str | None = None) -> dict[str, str]:
    return {"type": kind or obj["type"], "id": obj["id"]}


def cost_and_usage() -> list[dict[str, Any]]:
    kpis = [
        _ppl_metric("clawker-cc-sessions", "Sessions", "claude_code_session_count_total"),
        _ppl_metric("clawker-cc-cost", "Cost (USD)", "claude_code_cost_usage_USD_total"),
        _ppl_metric(
            "clawker-cc-tokens-input",
            "Input tokens",
            "claude_code_token_usage_tokens_total",
            by="kind",
        ),
        _ppl_metric(
            "clawker-cc-cost-by-model",
            "Cost by model",
            "claude_code_cost_usage_USD_total",
            by="model",
        ),
        _ppl_metric(
            "clawker-cc-lines", "Lines of code", "claude_code_lines_of_code_count_total", by="kind"
        ),
        _ppl_metric(
            "clawker-cc-active-time",
            "Active time (s)",
            "claude_code_active_time_seconds_total",
            by="kind",
        ),
    ]
    dash = _dashboard(
        "clawker-dashboard-cost-usage",
        "Claude Code Cost & Usage",
        "Sessions, cost and input/output/cacheRead/cacheCreation tokens from Prometheus "
        "(label `kind`, renamed from `type` at ingest).",
        [_panel(k, "kpi") for k in kpis],
    )
    return [*kpis, dash]


def activity() -> list[dict[str, Any]]:
    idx = "claude-code"
    ev = "attributes.event.name"
    objects = [
        _metric("clawker-cc-prompts", "Prompts", idx, f'{ev}:"user_prompt"'),
        _pie("clawker-cc-events", "Events by type", idx, ev),
        _table(
            "clawker-cc-tools", "Tool calls", idx, "attributes.tool_name", f'{ev}:"tool_result"'
        ),
        _pie(
            "clawker-cc-edits",
            "Code editing tools",
            idx,
            "attributes.tool_name",
            f'{ev}:"tool_result" and attributes.tool_name:(Edit or Write or MultiEdit '
            "or NotebookEdit)",
        ),
        _pie(
            "clawker-cc-permissions",
            "Permission decisions",
            idx,
            "attributes.decision",
            f'{ev}:"tool_decision"',
        ),
        _table("clawker-cc-hooks", "Hooks", idx, "attributes.hook_name", "attributes.hook_name:*"),
        _table(
            "clawker-cc-mcp",
            "MCP servers",
            idx,
            "attributes.mcp_server_name",
            "attributes.mcp_server_name:*",
        ),
        _table(
            "clawker-cc-plugins",
            "Plugins",
            idx,
            "attributes.plugin_name",
            "attributes.plugin_name:*",
        ),
        _saved_search(
            "clawker-cc-events-table",
            "Claude Code events",
            idx,
            [
                "attributes.event.name",
                "resource.agent",
                "resource.project",
                "attributes.tool_name",
                "attributes.decision",
                "attributes.session.id",
            ],
        ),
    ]
    dash = _dashboard(
        "clawker-dashboard-activity",
        "Claude Code Activity",
        "Security activity audit: prompts, tooling, code editing, permissions, hooks, MCP, "
        "plugins - totals, distributions and the full event table.",
        [_panel(o) for o in objects],
    )
    return [*objects, dash]


# The eBPF stream's columns are netlogger's record keys (DESIGN.md section 3).
EBPF_COLUMNS = [
    "attributes.action",
    "attributes.reason",
    "attributes.agent",
    "attributes.project",
    "attributes.container_id",
    "attributes.dst_host",
    "attributes.dst_ip",
    "attributes.dst_port",
    "attributes.l4_proto",
    "attributes.comm",
    "attributes.mode",
    "attributes.rule",
]


# Decision records only: DNS answers and gap records share the index.
EBPF_DECISION = (
    'attributes.event.name:("ebpf.egress.connect" or "ebpf.egress.sendmsg") '
    "and attributes.dst_host:*"
)
# The audit trail: who changed enforcement (netlogger's control records), done or refused.
EBPF_CONTROL_COLUMNS = [
    "attributes.control.command",
    "attributes.control.result",
    "attributes.control.target",
    "attributes.container_name",
    "attributes.control.by",
    "attributes.control.uid",
    "attributes.control.pid",
    "attributes.control.trigger",
    "attributes.control.mode_after",
    "attributes.control.policy_after",
    "attributes.control.error",
]


def networking() -> list[dict[str, Any]]:
    objects = [
        _saved_search(
            "clawker-net-envoy-stream",
            "Envoy access log",
            "clawker-envoy",
            [
                "attributes.action",
                "attributes.server.address",
                "attributes.network.peer.address",
                "attributes.response_code",
                "attributes.response_code_details",
                "attributes.duration_ms",
            ],
        ),
        _saved_search(
            "clawker-net-coredns-stream",
            "CoreDNS query log",
            "clawker-coredns",
            ["attributes.domain", "attributes.qtype", "attributes.rcode", "attributes.duration_ms"],
        ),
        _saved_search(
            "clawker-net-ebpf-stream", "eBPF egress decisions", "clawker-ebpf-egress", EBPF_COLUMNS
        ),
        _saved_search(
            "clawker-net-ebpf-control",
            "eBPF enforcement changes (audit trail)",
            "clawker-ebpf-egress",
            EBPF_CONTROL_COLUMNS,
            'attributes.event.name:"ebpf.egress.control"',
        ),
        _pie(
            "clawker-net-envoy-verdict",
            "Envoy verdict (action)",
            "clawker-envoy",
            "attributes.action",
        ),
        _pie(
            "clawker-net-coredns-verdict",
            "CoreDNS verdict (rcode)",
            "clawker-coredns",
            "attributes.rcode",
        ),
        _pie(
            "clawker-net-ebpf-verdict",
            "eBPF verdict (action)",
            "clawker-ebpf-egress",
            "attributes.action",
        ),
        # dst_host is the name the workload resolved (netlogger's DNS evidence); a
        # getaddrinfo probe (udp_connect) is no connection attempt of its own.
        _table(
            "clawker-net-ebpf-denied-domains",
            "Top denied domains",
            "clawker-ebpf-egress",
            "attributes.dst_host",
            f"{EBPF_DECISION} and attributes.action:denied and not attributes.udp_connect:true",
        ),
        _split_table(
            "clawker-net-ebpf-agent-domains",
            "Top domains per agent",
            "clawker-ebpf-egress",
            "attributes.agent",
            "attributes.dst_host",
            f"{EBPF_DECISION} and not attributes.udp_connect:true",
        ),
    ]
    dash = _dashboard(
        "clawker-dashboard-networking",
        "Clawker Networking",
        "Per-source firewall telemetry. Verdict pies use each source's own field, not "
        "normalised; red slices are denials. Bypassed traffic appears only in the eBPF stream. "
        "Domain tables name what workloads resolved (the eBPF records' dst_host). The audit "
        "trail lists every change of enforcement: what, on which cgroup, who asked (uid and "
        "pid, or the agent and why), done or refused.",
        [_panel(o) for o in objects],
    )
    return [*objects, dash]


def saved_objects() -> list[dict[str, Any]]:
    return [*index_patterns(), *cost_and_usage(), *activity(), *networking()]


def ndjson() -> str:
    return "".join(json.dumps(obj, sort_keys=True) + "\n" for obj in saved_objects())
