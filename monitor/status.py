"""The stack's health as one report: per service, the bootstrap's result, and the verdict.

Healthy means: OpenSearch, Dashboards and Prometheus running and passing their healthchecks,
the collector running (its image cannot run a Docker healthcheck), and the bootstrap exited 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from monitor import services as svc
from monitor.compose import ServiceState
from monitor.settings import Monitoring


@dataclass(frozen=True)
class Report:
    project: str
    network: str
    services: tuple[ServiceState, ...]
    urls: dict[str, str]

    @property
    def bootstrap(self) -> ServiceState:
        return next(s for s in self.services if s.service == svc.BOOTSTRAP)

    @property
    def bootstrap_result(self) -> str:
        st = self.bootstrap
        if st.state == "missing":
            return "not run"
        if st.state == "exited":
            return "completed" if st.exit_code == 0 else f"failed (exit {st.exit_code})"
        return st.state

    @property
    def healthy(self) -> bool:
        return all(s.ready for s in self.services)

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "project": self.project,
            "network": self.network,
            "bootstrap": {
                "result": self.bootstrap_result,
                "exit_code": self.bootstrap.exit_code,
            },
            "services": [{**asdict(s), "ready": s.ready} for s in self.services],
            "urls": self.urls if self.healthy else {},
        }

    def table(self) -> str:
        rows = [("SERVICE", "CONTAINER", "STATE", "HEALTH", "EXIT", "PORTS")]
        for s in self.services:
            rows.append(
                (
                    s.service,
                    s.container or "-",
                    s.state,
                    _health(s),
                    "-" if s.exit_code is None else str(s.exit_code),
                    ", ".join(s.ports) or "-",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        ]
        lines.append("")
        lines.append(f"bootstrap: {self.bootstrap_result}")
        lines.append(f"stack: {'healthy' if self.healthy else 'NOT healthy'}")
        if self.healthy:
            lines.extend(f"{name}: {url}" for name, url in self.urls.items())
        return "\n".join(lines)


def _health(s: ServiceState) -> str:
    if s.service == svc.BOOTSTRAP:
        return "-"
    if s.health:
        return s.health
    return "no check" if s.state == "running" else "-"


def urls(mon: Monitoring) -> dict[str, str]:
    return {
        "OpenSearch Dashboards": f"http://localhost:{mon.opensearch_dashboards_port}",
        "OpenSearch API": f"http://localhost:{mon.opensearch_port}",
        "Prometheus": f"http://localhost:{mon.prometheus_port}",
        "OTLP/HTTP (agents)": f"http://localhost:{mon.otel_collector_port}",
        "OTLP/gRPC (agents)": f"localhost:{mon.otel_grpc_port}",
        "OTLP/gRPC + mTLS (netlogger)": f"https://localhost:{mon.otel_mtls_port}",
    }


def unreachable(mon: Monitoring, reason: str) -> dict[str, Any]:
    """`status --json` when Docker cannot be asked: the same keys, and why."""
    return {
        "healthy": False,
        "project": svc.Names(mon.name_prefix).project,
        "network": mon.network,
        "bootstrap": {"result": "unknown", "exit_code": None},
        "services": [],
        "urls": {},
        "error": reason,
    }


def build(mon: Monitoring, states: dict[str, ServiceState]) -> Report:
    names = svc.Names(mon.name_prefix)
    ordered = tuple(states[s] for s in svc.ALL_SERVICES)
    return Report(names.project, mon.network, ordered, urls(mon))
