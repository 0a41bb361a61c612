"""The bundled monitoring stack: OpenTelemetry Collector, OpenSearch (+ Dashboards), Prometheus.

`python -m monitor ...` and `netlogger monitor ...` scaffold it into a data directory and drive
it with Docker Compose. Nothing here imports `netlogger`: the stack is a separate concern that
only shares the record contract (DESIGN.md §3), kept as data in `monitor/bootstrap/fields/`.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
