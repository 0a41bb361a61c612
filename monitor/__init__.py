"""The bundled monitoring stack: OpenTelemetry Collector, OpenSearch (+ Dashboards), Prometheus.

`python -m monitor ...` and `netlogger monitor ...` scaffold it into a data directory and drive
it with Docker Compose. The stack is a separate concern: it shares with the agent only the record
contract (DESIGN.md §3), kept as data in `monitor/bootstrap/fields/`, and the trusted lane's port,
imported from `netlogger.trusted_lane`. The agent package never imports `monitor`.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
