"""prometheus.yaml: what Prometheus scrapes.

Application metrics arrive by remote write from the collector (so they get the exporter's
retrying queue); scraping covers the two components' own health metrics.
"""

from __future__ import annotations

from typing import Any

from monitor import collector


def build() -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "scrape_configs": [
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": ["localhost:9090"]}],
            },
            {
                "job_name": "otel-collector",
                "static_configs": [{"targets": [f"otel-collector:{collector.SELF_METRICS_PORT}"]}],
            },
        ],
    }
