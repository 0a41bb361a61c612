"""The schema of the agent's config file (DESIGN.md §4), as msgspec structs.

Types here say what shape a value has; `check.py` says what values make sense
(CIDRs parse, ports are in range, policies referenced exist).
"""

from __future__ import annotations

from typing import Literal

import msgspec

DEFAULT_PIN_ROOT = "/sys/fs/bpf/netlogger"
DEFAULT_CONTROL_SOCKET = "/run/netlogger/control.sock"


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class Rule(_Strict, frozen=True):
    cidr: str | None = None
    domain: str | None = None
    ports: list[int | str] = []  # empty: every port
    proto: Literal["tcp", "udp", "any"] = "any"
    name: str | None = None


class Dns(_Strict, frozen=True):
    resolvers: list[str] = []


class Policy(_Strict, frozen=True):
    mode: Literal["enforce", "audit"] = "enforce"
    log_loopback: bool = False
    dns: Dns = Dns()
    icmp: Literal["allow", "deny"] = "deny"
    allow: list[Rule] = []


class ConsoleSink(_Strict, tag="console", tag_field="type", frozen=True):
    color: Literal["auto", "always", "never"] = "auto"


class JsonlSink(_Strict, tag="jsonl", tag_field="type", frozen=True):
    path: str = "/var/log/netlogger/egress.jsonl"
    max_bytes: int | str = "100MB"
    keep: int = 5


class OtlpSink(_Strict, tag="otlp", tag_field="type", frozen=True):
    """OTLP/gRPC logs to the collector's trusted lane (netlogger.sinks.otlp).

    ca/cert/key: PEM files; unset, OTEL_EXPORTER_OTLP_LOGS_{CERTIFICATE,CLIENT_CERTIFICATE,
    CLIENT_KEY}, else the files `netlogger monitor init` makes. http:// only to loopback.
    """

    endpoint: str = "https://localhost:4319"
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    spool_dir: str | None = None  # default: <state dir>/otlp-spool
    spool_max_bytes: int | str = "256MiB"  # oldest records are evicted (and counted) past this
    timeout: str = "10s"  # per export request
    retry_initial: str = "1s"  # first backoff after a failure; doubles up to retry_max
    retry_max: str = "30s"
    headers: dict[str, str] = {}  # gRPC metadata; unset: OTEL_EXPORTER_OTLP_LOGS_HEADERS


Sink = ConsoleSink | JsonlSink | OtlpSink


class StaticEnrollment(_Strict, frozen=True):
    cgroup: str
    policy: str = "default"
    agent: str = ""
    project: str = ""
    container: str = ""
    mode: Literal["enforce", "audit"] | None = None  # None: the policy's mode


class Selector(_Strict, frozen=True):
    label: str = "dev.clawker.agent"


class Containers(_Strict, frozen=True):
    engine: str = "unix:///var/run/docker.sock"
    select: Selector = Selector()
    policy_label: str = "dev.clawker.policy"
    default_policy: str = "default"


class Limits(_Strict, frozen=True):
    ring_size: int | str = "8MiB"
    allowed_per_sec: int = 1000  # allowed records per enrolled cgroup; 0: no limit
    allowed_burst: int = 2000
    # Repeats of one decision within fold_window of its last record are counted in the
    # kernel and carried by a later record (repeat.count), not written one by one.
    fold: bool = True
    fold_window: str = "10ms"
    # An address a DNS answer admitted lives for the answer's TTL clamped to these (whole
    # seconds): the floor covers resolvers that answer with TTL 0 and a connect soon after.
    dns_ttl_floor: str = "60s"
    dns_ttl_cap: str = "1h"


class Config(_Strict, frozen=True):
    scope: str | None = None  # default: the cgroup v2 root
    pin_root: str = DEFAULT_PIN_ROOT
    control_socket: str = DEFAULT_CONTROL_SOCKET
    metrics: str | None = None
    limits: Limits = Limits()
    state_dir: str = "/var/lib/netlogger"  # sink state that must survive restarts (spools)
    sinks: list[Sink] = msgspec.field(default_factory=lambda: [ConsoleSink()])
    # Without policies there is still one: `default`, which allows nothing.
    policies: dict[str, Policy] = msgspec.field(default_factory=lambda: {"default": Policy()})
    enroll: list[StaticEnrollment] = []
    containers: Containers | None = None
