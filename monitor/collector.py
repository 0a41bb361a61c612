"""The OpenTelemetry Collector configuration (otel-config.yaml).

Two lanes, never mixed:

* agent lane (untrusted): OTLP HTTP :4318 and gRPC :4317, no authentication, because agent
  containers hold no secrets worth trusting. Anything arriving here is stamped
  `ingest_source=agent`, and records claiming a trusted service.name (`ebpf-egress` above all)
  are dropped before they reach an exporter, so an agent can never forge netlogger records.
* infra lane (trusted): OTLP gRPC on `netlogger.trusted_lane.PORT` with TLS and a required
  client certificate from the monitor's CA. A routing connector sends each service.name to its
  own index; `service.name=ebpf-egress` goes to `clawker-ebpf-egress`, stamped
  `ingest_source=netlogger`.

Logs and traces go to OpenSearch, metrics (and spanmetrics RED metrics) to Prometheus by remote
write. Every pipeline starts with the memory limiter; every exporter has a retrying queue.
"""

from __future__ import annotations

from typing import Any

from monitor import indices
from monitor.indices import IndexSpec
from netlogger import trusted_lane

# Container-side ports; the host side comes from settings in compose.yaml.
OTLP_HTTP_PORT = 4318
OTLP_GRPC_PORT = 4317
OTLP_MTLS_PORT = trusted_lane.PORT
SELF_METRICS_PORT = 8889
HEALTH_PORT = 13133

CERT_DIR = "/etc/otelcol-contrib/certs"
OPENSEARCH_URL = "http://opensearch-node:9200"
PROMETHEUS_WRITE_URL = "http://prometheus:9090/api/v1/write"
TRACES_DATASET = "clawker"
TRACES_NAMESPACE = "default"

AGENT_RECEIVER = "otlp/agent"
INFRA_RECEIVER = "otlp/infra"
ROUTER = "routing/infra"


def build() -> dict[str, Any]:
    """The whole collector configuration as plain data, ready for yaml.safe_dump."""
    log_specs = indices.log_indices()
    pipelines = _pipelines(log_specs)
    return {
        "extensions": {"health_check": {"endpoint": f"0.0.0.0:{HEALTH_PORT}"}},
        "receivers": _receivers(),
        "processors": _processors(log_specs),
        "connectors": _connectors(log_specs),
        "exporters": _exporters(log_specs),
        "service": {
            "extensions": ["health_check"],
            "telemetry": _self_telemetry(),
            "pipelines": pipelines,
        },
    }


def _receivers() -> dict[str, Any]:
    return {
        AGENT_RECEIVER: {
            "protocols": {
                "grpc": {"endpoint": f"0.0.0.0:{OTLP_GRPC_PORT}"},
                "http": {"endpoint": f"0.0.0.0:{OTLP_HTTP_PORT}"},
            }
        },
        INFRA_RECEIVER: {
            "protocols": {
                "grpc": {
                    "endpoint": f"0.0.0.0:{OTLP_MTLS_PORT}",
                    "tls": {
                        "cert_file": f"{CERT_DIR}/collector.pem",
                        "key_file": f"{CERT_DIR}/collector.key",
                        # client_ca_file makes the server require and verify a client cert.
                        "client_ca_file": f"{CERT_DIR}/ca.pem",
                        "min_version": "1.2",
                    },
                }
            }
        },
    }


def _reserved_condition() -> str:
    names = "|".join(indices.reserved_services())
    return f'IsMatch(resource.attributes["service.name"], "^({names})$")'


def _processors(log_specs: tuple[IndexSpec, ...]) -> dict[str, Any]:
    processors: dict[str, Any] = {
        "memory_limiter": {
            "check_interval": "1s",
            "limit_percentage": 80,
            "spike_limit_percentage": 20,
        },
        "batch": {"timeout": "2s", "send_batch_size": 1024},
        # Untrusted lane: a record that claims a trusted service is a forgery; drop it.
        "filter/agent-reserved-services": {
            "error_mode": "ignore",
            "logs": {"log_record": [_reserved_condition()]},
        },
        "transform/agent-lane": {
            "error_mode": "ignore",
            "log_statements": [
                {
                    "context": "log",
                    "statements": [
                        *_renames(log_specs),
                        # Overwrite whatever the sender claimed: provenance is the lane's.
                        'set(attributes["ingest_source"], "agent")',
                    ],
                }
            ],
        },
        # Claude Code's docs name a label `type`; the SQL plugin's Prometheus connector breaks
        # on a label literally called `type`, so it is renamed to `kind` at ingest.
        "transform/rename-type-label": {
            "error_mode": "ignore",
            "metric_statements": [
                {
                    "context": "datapoint",
                    "statements": [
                        'set(attributes["kind"], attributes["type"])'
                        ' where attributes["type"] != nil',
                        'delete_key(attributes, "type")',
                    ],
                }
            ],
        },
    }
    for spec in log_specs:
        if spec.lane == "infra":
            processors[f"transform/stamp-{spec.slug}"] = {
                "error_mode": "ignore",
                "log_statements": [
                    {
                        "context": "log",
                        "statements": [f'set(attributes["ingest_source"], "{spec.ingest_source}")'],
                    }
                ],
            }
    return processors


def _renames(log_specs: tuple[IndexSpec, ...]) -> list[str]:
    statements = []
    for spec in log_specs:
        for old, new in spec.renamed_attributes.items():
            statements.append(
                f'set(attributes["{new}"], attributes["{old}"]) where attributes["{old}"] != nil'
            )
            statements.append(f'delete_key(attributes, "{old}")')
    return statements


def _connectors(log_specs: tuple[IndexSpec, ...]) -> dict[str, Any]:
    infra = [spec for spec in log_specs if spec.lane == "infra"]
    default = next(spec for spec in infra if spec.default_route)
    table = [
        {
            "context": "resource",
            "condition": _service_condition(spec.services),
            "pipelines": [f"logs/{spec.slug}"],
        }
        for spec in infra
    ]
    return {
        ROUTER: {
            "default_pipelines": [f"logs/{default.slug}"],
            "error_mode": "ignore",
            "table": table,
        },
        "spanmetrics": {
            "histogram": {
                "explicit": {"buckets": ["10ms", "50ms", "100ms", "250ms", "1s", "5s", "30s"]}
            },
            "dimensions": [{"name": "project"}, {"name": "agent"}],
            "metrics_flush_interval": "15s",
        },
    }


def _service_condition(services: tuple[str, ...]) -> str:
    return " or ".join(f'attributes["service.name"] == "{s}"' for s in services)


def _queue() -> dict[str, Any]:
    return {"enabled": True, "num_consumers": 2, "queue_size": 5000}


def _retry() -> dict[str, Any]:
    return {
        "enabled": True,
        "initial_interval": "1s",
        "max_interval": "30s",
        "max_elapsed_time": "10m",
    }


def _opensearch_exporter(extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "http": {"endpoint": OPENSEARCH_URL, "timeout": "30s"},
        "mapping": {"mode": "ss4o"},
        "retry_on_failure": _retry(),
        "sending_queue": _queue(),
        **extra,
    }


def _exporters(log_specs: tuple[IndexSpec, ...]) -> dict[str, Any]:
    exporters: dict[str, Any] = {
        f"opensearch/{spec.slug}": _opensearch_exporter({"logs_index": spec.name})
        for spec in log_specs
    }
    exporters["opensearch/traces"] = _opensearch_exporter(
        {"dataset": TRACES_DATASET, "namespace": TRACES_NAMESPACE}
    )
    exporters["prometheusremotewrite"] = {
        "endpoint": PROMETHEUS_WRITE_URL,
        "resource_to_telemetry_conversion": {"enabled": True},
        "retry_on_failure": _retry(),
        "remote_write_queue": {"enabled": True, "queue_size": 10000, "num_consumers": 2},
        "timeout": "30s",
    }
    return exporters


def _pipelines(log_specs: tuple[IndexSpec, ...]) -> dict[str, Any]:
    agent_spec = next(spec for spec in log_specs if spec.lane == "agent")
    pipelines: dict[str, Any] = {
        "logs/agent": {
            "receivers": [AGENT_RECEIVER],
            "processors": [
                "memory_limiter",
                "filter/agent-reserved-services",
                "transform/agent-lane",
                "batch",
            ],
            "exporters": [f"opensearch/{agent_spec.slug}"],
        },
        "traces/agent": {
            "receivers": [AGENT_RECEIVER],
            "processors": ["memory_limiter", "batch"],
            "exporters": ["opensearch/traces", "spanmetrics"],
        },
        "metrics/agent": {
            "receivers": [AGENT_RECEIVER, "spanmetrics"],
            "processors": ["memory_limiter", "transform/rename-type-label", "batch"],
            "exporters": ["prometheusremotewrite"],
        },
        "logs/infra": {
            "receivers": [INFRA_RECEIVER],
            "processors": ["memory_limiter"],
            "exporters": [ROUTER],
        },
    }
    for spec in log_specs:
        if spec.lane == "infra":
            pipelines[f"logs/{spec.slug}"] = {
                "receivers": [ROUTER],
                "processors": ["memory_limiter", f"transform/stamp-{spec.slug}", "batch"],
                "exporters": [f"opensearch/{spec.slug}"],
            }
    return pipelines


def _self_telemetry() -> dict[str, Any]:
    # The collector's own metrics (queue sizes, send failures) for Prometheus to scrape.
    return {
        "metrics": {
            "level": "normal",
            "readers": [
                {
                    "pull": {
                        "exporter": {"prometheus": {"host": "0.0.0.0", "port": SELF_METRICS_PORT}}
                    }
                }
            ],
        }
    }
