"""compose.yaml: the four long-lived services and the one-shot bootstrap.

Start order is carried by `depends_on` conditions: OpenSearch, Dashboards and Prometheus
become healthy, the bootstrap runs to completion, and only then does the collector start, so
no record can create an index before its template exists. A failed bootstrap leaves the
collector uncreated on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitor import collector, images, paths
from monitor.settings import Monitoring

PURPOSE_LABEL = "dev.clawker.purpose"
PURPOSE = "monitoring"
SERVICE_LABEL = "dev.clawker.service"
CONFIG_HASH_LABEL = "dev.clawker.config-hash"

# Service keys double as DNS names on the network; agents and netlogger use these.
OTEL_COLLECTOR = "otel-collector"
OPENSEARCH = "opensearch-node"
DASHBOARDS = "opensearch-dashboards"
PROMETHEUS = "prometheus"
BOOTSTRAP = "clawker-opensearch-bootstrap"
LONG_LIVED = (OPENSEARCH, DASHBOARDS, PROMETHEUS, OTEL_COLLECTOR)
# Start order, which is also the order `status` lists them in.
ALL_SERVICES = (OPENSEARCH, DASHBOARDS, PROMETHEUS, BOOTSTRAP, OTEL_COLLECTOR)


@dataclass(frozen=True)
class Names:
    """Docker object names derived from `name_prefix`, so two stacks never collide."""

    prefix: str

    @property
    def project(self) -> str:
        return f"{self.prefix}-monitor"

    def container(self, service: str) -> str:
        suffix = {
            OTEL_COLLECTOR: "otel-collector",
            OPENSEARCH: "opensearch",
            DASHBOARDS: "opensearch-dashboards",
            PROMETHEUS: "prometheus",
            BOOTSTRAP: "opensearch-bootstrap",
        }[service]
        return f"{self.prefix}-{suffix}"

    @property
    def opensearch_volume(self) -> str:
        return f"{self.prefix}-opensearch"

    @property
    def prometheus_volume(self) -> str:
        return f"{self.prefix}-prometheus"


@dataclass(frozen=True)
class Inputs:
    """What the compose file depends on besides settings: file hashes and the data owner."""

    hashes: dict[str, str]  # service -> hash of the files it mounts
    user: str  # "uid:gid" of the data directory owner


def build(mon: Monitoring, inputs: Inputs) -> dict[str, Any]:
    names = Names(mon.name_prefix)
    return {
        "name": names.project,
        "services": {
            OPENSEARCH: _opensearch(mon, names, inputs),
            DASHBOARDS: _dashboards(mon, names, inputs),
            PROMETHEUS: _prometheus(mon, names, inputs),
            BOOTSTRAP: _bootstrap(mon, names, inputs),
            OTEL_COLLECTOR: _collector(mon, names, inputs),
        },
        "networks": {"default": {"name": mon.network, "external": True}},
        "volumes": {
            "opensearch-data": {
                "name": names.opensearch_volume,
                "labels": {PURPOSE_LABEL: PURPOSE},
            },
            "prometheus-data": {
                "name": names.prometheus_volume,
                "labels": {PURPOSE_LABEL: PURPOSE},
            },
        },
    }


def _labels(service: str, inputs: Inputs) -> dict[str, str]:
    labels = {PURPOSE_LABEL: PURPOSE, SERVICE_LABEL: service}
    if service in inputs.hashes:
        # Compose recreates a container when its definition changes; a mounted file changing
        # does not change the definition, so its hash is put where Compose will see it.
        labels[CONFIG_HASH_LABEL] = inputs.hashes[service]
    return labels


def _port(host: int, container: int) -> str:
    return f"127.0.0.1:{host}:{container}"


def _common(service: str, names: Names, inputs: Inputs) -> dict[str, Any]:
    return {
        "container_name": names.container(service),
        "labels": _labels(service, inputs),
        "networks": {"default": {"aliases": [service]}},
    }


def _opensearch(mon: Monitoring, names: Names, inputs: Inputs) -> dict[str, Any]:
    heap = mon.opensearch_heap_mb
    return {
        "image": images.OPENSEARCH.ref(mon.image_refs),
        **_common(OPENSEARCH, names, inputs),
        "restart": "unless-stopped",
        "environment": {
            "discovery.type": "single-node",
            "cluster.name": names.project,
            "node.name": OPENSEARCH,
            "bootstrap.memory_lock": "false",
            "OPENSEARCH_JAVA_OPTS": f"-Xms{heap}m -Xmx{heap}m",
            # Local development stack: no security plugin, so no demo certs or admin password.
            "DISABLE_SECURITY_PLUGIN": "true",
            "DISABLE_INSTALL_DEMO_CONFIG": "true",
        },
        # The SQL plugin's data-source master key lives outside compose.yaml (0600).
        "env_file": [paths.OPENSEARCH_ENV_FILE],
        "volumes": ["opensearch-data:/usr/share/opensearch/data"],
        "ports": [_port(mon.opensearch_port, 9200)],
        "healthcheck": {
            "test": [
                "CMD-SHELL",
                "curl -fsS 'http://127.0.0.1:9200/_cluster/health?wait_for_status=yellow"
                "&timeout=5s' >/dev/null || exit 1",
            ],
            "interval": "5s",
            "timeout": "10s",
            "retries": 60,
            "start_period": "30s",
        },
    }


def _dashboards(mon: Monitoring, names: Names, inputs: Inputs) -> dict[str, Any]:
    return {
        "image": images.DASHBOARDS.ref(mon.image_refs),
        **_common(DASHBOARDS, names, inputs),
        "restart": "unless-stopped",
        "environment": {"DISABLE_SECURITY_DASHBOARDS_PLUGIN": "true"},
        "volumes": [
            f"./{paths.DASHBOARDS_FILE}:"
            "/usr/share/opensearch-dashboards/config/opensearch_dashboards.yml:ro"
        ],
        "ports": [_port(mon.opensearch_dashboards_port, 5601)],
        "depends_on": {OPENSEARCH: {"condition": "service_healthy"}},
        "healthcheck": {
            "test": [
                "CMD-SHELL",
                "curl -fsS http://127.0.0.1:5601/api/status >/dev/null || exit 1",
            ],
            "interval": "5s",
            "timeout": "10s",
            "retries": 60,
            "start_period": "30s",
        },
    }


def _prometheus(mon: Monitoring, names: Names, inputs: Inputs) -> dict[str, Any]:
    return {
        "image": images.PROMETHEUS.ref(mon.image_refs),
        **_common(PROMETHEUS, names, inputs),
        "restart": "unless-stopped",
        "command": [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            f"--storage.tsdb.retention.time={mon.retention_days}d",
            # The collector pushes metrics by remote write (with a retrying queue).
            "--web.enable-remote-write-receiver",
        ],
        "volumes": [
            f"./{paths.PROMETHEUS_FILE}:/etc/prometheus/prometheus.yml:ro",
            "prometheus-data:/prometheus",
        ],
        "ports": [_port(mon.prometheus_port, 9090)],
        "healthcheck": {
            "test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/ready"],
            "interval": "5s",
            "timeout": "5s",
            "retries": 30,
            "start_period": "10s",
        },
    }


def _bootstrap(mon: Monitoring, names: Names, inputs: Inputs) -> dict[str, Any]:
    return {
        "image": images.CURL.ref(mon.image_refs),
        **_common(BOOTSTRAP, names, inputs),
        "restart": "no",
        "entrypoint": ["/bin/sh", "/bootstrap/bootstrap.sh"],
        "environment": {
            "OPENSEARCH_URL": "http://opensearch-node:9200",
            "DASHBOARDS_URL": "http://opensearch-dashboards:5601",
            "PROMETHEUS_URL": "http://prometheus:9090",
            "BOOTSTRAP_TIMEOUT_S": str(mon.bootstrap_timeout_s),
        },
        "volumes": [f"./{paths.BOOTSTRAP_DIR}:/bootstrap:ro"],
        "depends_on": {
            OPENSEARCH: {"condition": "service_healthy"},
            DASHBOARDS: {"condition": "service_healthy"},
            PROMETHEUS: {"condition": "service_healthy"},
        },
    }


def _collector(mon: Monitoring, names: Names, inputs: Inputs) -> dict[str, Any]:
    return {
        "image": images.COLLECTOR.ref(mon.image_refs),
        **_common(OTEL_COLLECTOR, names, inputs),
        "restart": "unless-stopped",
        # Run as the owner of the data directory so the 0600 server key stays 0600.
        "user": inputs.user,
        "command": ["--config=/etc/otelcol-contrib/config.yaml"],
        "volumes": [
            f"./{paths.OTEL_CONFIG_FILE}:/etc/otelcol-contrib/config.yaml:ro",
            f"./{paths.CERTS_DIR}:{collector.CERT_DIR}:ro",
        ],
        "ports": [
            _port(mon.otel_collector_port, collector.OTLP_HTTP_PORT),
            _port(mon.otel_grpc_port, collector.OTLP_GRPC_PORT),
            _port(mon.otel_mtls_port, collector.OTLP_MTLS_PORT),
            _port(mon.prometheus_metrics_port, collector.SELF_METRICS_PORT),
        ],
        # The contrib image has no shell or HTTP client, so Docker cannot probe it; `status`
        # treats it as healthy while running, and its health_check extension serves :13133.
        "depends_on": {
            BOOTSTRAP: {"condition": "service_completed_successfully"},
            PROMETHEUS: {"condition": "service_healthy"},
            OPENSEARCH: {"condition": "service_healthy"},
        },
    }
