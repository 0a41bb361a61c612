"""The request bodies the bootstrap container sends, one JSON file per request.

The shell script only walks directories and PUTs/POSTs what it finds, so everything that
decides *what* the cluster looks like is here and in `bootstrap/fields/`, and is tested.

    bootstrap/bootstrap.sh
    bootstrap/component-templates/clawker-common.json
    bootstrap/index-templates/<index>.json       (one per index; file stem = template name)
    bootstrap/ism/clawker-retention.json
    bootstrap/indices/<alias>.json               (first backing index + write alias)
    bootstrap/datasource/clawker_prometheus.json
    bootstrap/workspace/clawker.json
    bootstrap/saved-objects/clawker.ndjson
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from monitor import dashboards, indices
from monitor.indices import IndexSpec

COMPONENT_TEMPLATE = "clawker-common"
ISM_POLICY = "clawker-retention"
WORKSPACE_NAME = "Clawker"
PROMETHEUS_URI = "http://prometheus:9090"
META = {"managed_by": "clawker monitor"}


def component_template() -> dict[str, Any]:
    return {
        "template": {
            "mappings": {
                # Unknown string attributes become keywords, never analysed text: a sender
                # adding a field must not lock a surprising type in at first ingest.
                "dynamic_templates": [
                    {
                        "strings_as_keyword": {
                            "match_mapping_type": "string",
                            "mapping": {"type": "keyword", "ignore_above": 1024},
                        }
                    }
                ],
                "properties": indices.nest(indices.common_fields()),
            }
        },
        "_meta": {**META, "description": "shared SS4O envelope and attribution keys"},
    }


def index_template(spec: IndexSpec) -> dict[str, Any]:
    return {
        "index_patterns": [spec.pattern],
        "priority": 200,  # above OpenSearch's built-in ss4o templates
        "composed_of": [COMPONENT_TEMPLATE],
        "template": {
            "settings": {
                "number_of_shards": 1,
                "number_of_replicas": 0,  # single node: replicas would keep health yellow
                # A wrongly typed value drops that field, not the whole record.
                "index.mapping.ignore_malformed": True,
                "plugins.index_state_management.rollover_alias": spec.name,
            },
            "mappings": {"properties": indices.nest(spec.fields)},
        },
        "_meta": {**META, "index": spec.name, "title": spec.title},
    }


def ism_policy(retention_days: int) -> dict[str, Any]:
    """Roll over daily; delete an index once it is older than the retention."""
    patterns = [spec.pattern for spec in indices.all_indices()]
    return {
        "policy": {
            "description": f"clawker monitor: roll over daily, delete after {retention_days}d",
            "default_state": "hot",
            "states": [
                {
                    "name": "hot",
                    "actions": [{"rollover": {"min_index_age": "1d"}}],
                    "transitions": [
                        {
                            "state_name": "delete",
                            "conditions": {"min_index_age": f"{retention_days}d"},
                        }
                    ],
                },
                {"name": "delete", "actions": [{"delete": {}}], "transitions": []},
            ],
            "ism_template": [{"index_patterns": patterns, "priority": 100}],
        }
    }


def initial_index(spec: IndexSpec) -> dict[str, Any]:
    """The first backing index, so Discover and dashboards work before any record arrives."""
    return {"aliases": {spec.name: {"is_write_index": True}}}


def datasource() -> dict[str, Any]:
    return {
        "name": dashboards.DATASOURCE,
        "description": "Prometheus of the clawker monitoring stack",
        "connector": "prometheus",
        "properties": {"prometheus.uri": PROMETHEUS_URI},
    }


def workspace() -> dict[str, Any]:
    return {
        "attributes": {
            "name": WORKSPACE_NAME,
            "description": "Clawker agents: telemetry, cost, activity and egress",
            # use-case-all mounts the metrics / logs / traces explore nav groups.
            "features": ["use-case-all"],
        }
    }


def _json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def script() -> bytes:
    return resources.files("monitor.bootstrap").joinpath("bootstrap.sh").read_bytes()


def files(retention_days: int) -> dict[str, bytes]:
    """Relative path (under the data dir) -> content, for every bootstrap asset."""
    out: dict[str, bytes] = {"bootstrap/bootstrap.sh": script()}
    out[f"bootstrap/component-templates/{COMPONENT_TEMPLATE}.json"] = _json(component_template())
    for spec in indices.all_indices():
        out[f"bootstrap/index-templates/{spec.name}.json"] = _json(index_template(spec))
        out[f"bootstrap/indices/{spec.name}.json"] = _json(initial_index(spec))
    out[f"bootstrap/ism/{ISM_POLICY}.json"] = _json(ism_policy(retention_days))
    out[f"bootstrap/datasource/{dashboards.DATASOURCE}.json"] = _json(datasource())
    out["bootstrap/workspace/clawker.json"] = _json(workspace())
    out["bootstrap/saved-objects/clawker.ndjson"] = dashboards.ndjson().encode()
    return out
