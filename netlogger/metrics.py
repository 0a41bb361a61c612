"""Prometheus metrics, read from the agent when scraped (nothing on the hot path).

Labels stay low-cardinality: event, action, loss kind, sink and program names;
never addresses, ports or cgroup ids.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from netlogger.errors import UsageError
from netlogger.pipeline.fanout import LaneStats

SINK_STATES = ("up", "degraded", "spooling", "down")


@dataclass
class Snapshot:
    records: dict[tuple[str, str], int]  # (event, action) -> records read
    unknown_enums: dict[str, int]  # record field -> records with a value this agent cannot name
    losses: dict[str, int]  # gap kind -> records lost
    lanes: list[LaneStats]
    sink_states: dict[str, str]
    programs: dict[str, tuple[int, int]]  # program -> (runs, run time ns)
    enrolled: int
    ring_pending_bytes: int
    ring_size_bytes: int
    subscribers: int
    engine_up: int | None = None  # None: no container engine configured
    containers_flagged: int = 0  # selected containers that can get around enforcement


class _Collector:
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        records = CounterMetricFamily(
            "netlogger_records", "Decision records read from the kernel", labels=["event", "action"]
        )
        for (event, action), count in sorted(s.records.items()):
            records.add_metric([event, action], count)
        yield records
        unknown = CounterMetricFamily(
            "netlogger_records_unknown_enum",
            "Records whose field held a value this agent has no name for (decoded as unknown(N))",
            labels=["field"],
        )
        for name, count in sorted(s.unknown_enums.items()):
            unknown.add_metric([name], count)
        yield unknown
        losses = CounterMetricFamily(
            "netlogger_lost_records",
            "Records lost, by where they were lost (each also reported as a gap record)",
            labels=["kind"],
        )
        for kind, count in sorted(s.losses.items()):
            losses.add_metric([kind], count)
        yield losses
        depth = GaugeMetricFamily(
            "netlogger_sink_queue_depth", "Records waiting for a sink", labels=["sink"]
        )
        capacity = GaugeMetricFamily(
            "netlogger_sink_queue_capacity", "Queue bound per sink", labels=["sink"]
        )
        exported = CounterMetricFamily(
            "netlogger_sink_exported_records", "Records a sink took", labels=["sink"]
        )
        errors = CounterMetricFamily("netlogger_sink_errors", "Failed exports", labels=["sink"])
        state = GaugeMetricFamily(
            "netlogger_sink_state", "1 for the state a sink is in", labels=["sink", "state"]
        )
        for lane in s.lanes:
            depth.add_metric([lane.name], lane.depth)
            capacity.add_metric([lane.name], lane.capacity)
            exported.add_metric([lane.name], lane.exported)
            errors.add_metric([lane.name], lane.errors)
            current = s.sink_states.get(lane.name, "up" if lane.healthy else "degraded")
            for name in SINK_STATES:
                state.add_metric([lane.name, name], 1.0 if name == current else 0.0)
        yield from (depth, capacity, exported, errors, state)
        runs = CounterMetricFamily(
            "netlogger_bpf_program_runs", "Program runs (kernel stats)", labels=["program"]
        )
        run_time = CounterMetricFamily(
            "netlogger_bpf_program_run_seconds",
            "Time in each program (kernel stats)",
            labels=["program"],
        )
        for program, (count, ns) in sorted(s.programs.items()):
            runs.add_metric([program], count)
            run_time.add_metric([program], ns / 1e9)
        yield from (runs, run_time)
        yield GaugeMetricFamily("netlogger_enrolled_cgroups", "Enrolled cgroups", value=s.enrolled)
        yield GaugeMetricFamily(
            "netlogger_ring_pending_bytes",
            "Ring bytes not yet released",
            value=s.ring_pending_bytes,
        )
        yield GaugeMetricFamily("netlogger_ring_size_bytes", "Ring size", value=s.ring_size_bytes)
        yield GaugeMetricFamily(
            "netlogger_tail_subscribers", "Connected tail clients", value=s.subscribers
        )
        if s.engine_up is not None:
            yield GaugeMetricFamily(
                "netlogger_engine_up", "1 while the container engine answers", value=s.engine_up
            )
            yield GaugeMetricFamily(
                "netlogger_attribution_degraded",
                "1 while records are attributed from pinned labels and cgroup paths only "
                "(the container engine is unreachable)",
                value=1 - s.engine_up,
            )
            yield GaugeMetricFamily(
                "netlogger_containers_flagged",
                "Selected containers that can get around enforcement (see status)",
                value=s.containers_flagged,
            )


def parse_address(text: str) -> tuple[str, int]:
    """`127.0.0.1:9464` or `[::1]:9464`; only loopback is allowed."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        if not ipaddress.ip_address(host).is_loopback or not 0 < int(port) < 65536:
            raise ValueError
    except ValueError:
        raise UsageError(
            f"metrics address {text!r} must be a loopback host:port, like 127.0.0.1:9464"
        ) from None
    return host, int(port)


class MetricsServer:
    def __init__(self, address: str, snapshot: Callable[[], Snapshot]) -> None:
        host, port = parse_address(address)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(snapshot))
        try:
            self._server, self._thread = start_http_server(port, host, self.registry)
        except OSError as exc:
            raise UsageError(f"cannot serve metrics on {address}: {exc.strerror}") from None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
