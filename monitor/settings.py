"""The `monitoring:` section of Clawker's settings.yaml, validated with msgspec.

Other top-level sections belong to other Clawker components and are ignored here; inside
`monitoring:` an unknown key is an error (a typo must not silently fall back to a default).
Every problem is reported at once, each as `FILE:LINE: monitoring.KEY: reason`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from monitor.errors import ConfigError
from netlogger import trusted_lane

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]

# Tests and CI run against locally built stand-in images, which cannot match a registry digest;
# this variable switches the rendered image references to `repo:tag` without editing settings.
IMAGE_REFS_ENV = "CLAWKER_MONITOR_IMAGE_REFS"


class Telemetry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Claude Code telemetry controls, handed to agents by `agent-env`."""

    log_tool_details: bool = True
    log_user_prompts: bool = True
    include_account_uuid: bool = True
    include_session_id: bool = True


class Monitoring(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Every knob of the stack. Ports are host ports, always bound to 127.0.0.1."""

    otel_collector_port: Port = 4318  # OTLP/HTTP, agent lane
    otel_grpc_port: Port = 4317  # OTLP/gRPC, agent lane
    otel_mtls_port: Port = trusted_lane.PORT  # OTLP/gRPC + mTLS, trusted infra lane (netlogger)
    opensearch_port: Port = 9200
    opensearch_dashboards_port: Port = 5601
    opensearch_heap_mb: Annotated[int, msgspec.Meta(ge=256, le=65536)] = 512
    prometheus_port: Port = 9090
    prometheus_metrics_port: Port = 8889  # the collector's own metrics, scraped by Prometheus
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 7
    bootstrap_timeout_s: Annotated[int, msgspec.Meta(ge=10, le=3600)] = 300
    image_refs: Literal["digest", "tag"] = "digest"
    # A second stack side by side (tests, CI) needs its own names for containers and volumes.
    name_prefix: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,30}$")] = "clawker"
    network: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")] = (
        "clawker-net"
    )
    telemetry: Telemetry = msgspec.field(default_factory=Telemetry)

    def host_ports(self) -> dict[str, int]:
        """Setting key -> host port, for every port the stack publishes."""
        return {name: getattr(self, name) for name in PORT_KEYS}


PORT_KEYS = (
    "otel_collector_port",
    "otel_grpc_port",
    "otel_mtls_port",
    "opensearch_port",
    "opensearch_dashboards_port",
    "prometheus_port",
    "prometheus_metrics_port",
)


class Settings(msgspec.Struct, kw_only=True):
    """The whole file as far as the monitor is concerned."""

    monitoring: Monitoring = msgspec.field(default_factory=Monitoring)
    source: str = "<defaults>"


def load(path: Path, *, required: bool = False) -> Settings:
    """Read and validate `path`; a missing file means defaults unless `required`."""
    if not path.exists():
        if required:
            raise ConfigError(f"settings file {path} does not exist (create it or drop --settings)")
        return _with_env(Settings())
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from exc
    return _with_env(parse(text, str(path)))


def parse(text: str, source: str) -> Settings:
    """Validate YAML text; raise ConfigError listing every problem with its line."""
    try:
        root_node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError("settings file is not valid YAML", [f"{where}: {exc}"]) from exc
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError("settings file must be a mapping", [f"{source}:1: top level"])
    section = data.get("monitoring")
    if section is None:
        return Settings(source=source)
    lines = _LineFinder(root_node)
    problems = _check_section(section, source, lines)
    if problems:
        raise ConfigError(f"invalid settings in {source}", problems)
    monitoring = msgspec.convert(section, Monitoring)
    return Settings(monitoring=monitoring, source=source)


def _with_env(settings: Settings) -> Settings:
    override = os.environ.get(IMAGE_REFS_ENV)
    if not override:
        return settings
    if override not in ("digest", "tag"):
        raise ConfigError(f"${IMAGE_REFS_ENV} must be 'digest' or 'tag', not {override!r}")
    settings.monitoring.image_refs = "digest" if override == "digest" else "tag"
    return settings


def _check_section(section: Any, source: str, lines: _LineFinder) -> list[str]:
    """Validate key by key so one bad value does not hide the next one."""
    if not isinstance(section, dict):
        return [f"{source}:{lines.find(['monitoring'])}: monitoring: must be a mapping"]
    problems: list[str] = []
    fields = {f.name: f for f in msgspec.structs.fields(Monitoring)}
    for key, value in section.items():
        where = f"{source}:{lines.find(['monitoring', key])}: monitoring.{key}"
        field = fields.get(key)
        if field is None:
            problems.append(f"{where}: unknown key (known: {', '.join(sorted(fields))})")
            continue
        if key == "telemetry":
            problems.extend(_check_telemetry(value, source, lines))
            continue
        try:
            msgspec.convert(value, field.type)
        except msgspec.ValidationError as exc:
            problems.append(f"{where}: {_reason(exc)} (got {value!r})")
    if not problems:
        problems.extend(_check_ports(section, source, lines))
    return problems


def _check_telemetry(value: Any, source: str, lines: _LineFinder) -> list[str]:
    base = ["monitoring", "telemetry"]
    if not isinstance(value, dict):
        return [f"{source}:{lines.find(base)}: monitoring.telemetry: must be a mapping"]
    problems = []
    known = {f.name for f in msgspec.structs.fields(Telemetry)}
    for key, item in value.items():
        where = f"{source}:{lines.find([*base, key])}: monitoring.telemetry.{key}"
        if key not in known:
            problems.append(f"{where}: unknown key (known: {', '.join(sorted(known))})")
        elif not isinstance(item, bool):
            problems.append(f"{where}: expected true or false (got {item!r})")
    return problems


def _check_ports(section: dict[str, Any], source: str, lines: _LineFinder) -> list[str]:
    """Two services on one host port can never both start: refuse before Docker is touched."""
    merged = msgspec.convert(section, Monitoring)
    owners: dict[int, list[str]] = {}
    for key, port in merged.host_ports().items():
        owners.setdefault(port, []).append(key)
    problems = []
    for port, keys in owners.items():
        if len(keys) > 1:
            # Blame a key the file sets (a default cannot be "fixed" where it is written).
            blamed = next((k for k in reversed(keys) if k in section), keys[-1])
            others = [k for k in keys if k != blamed]
            line = lines.find(["monitoring", blamed])
            problems.append(
                f"{source}:{line}: monitoring.{blamed}: port {port} is also used by "
                f"{', '.join('monitoring.' + k for k in others)}; every port must be distinct"
            )
    return problems


def _reason(exc: msgspec.ValidationError) -> str:
    # msgspec appends " - at `$...`"; the key is already named by the caller.
    text = str(exc)
    return text.split(" - at ", 1)[0]


class _LineFinder:
    """Maps a key path to its 1-based line in the YAML source, for located errors."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def find(self, path: list[str]) -> int:
        node = self.root
        line = 1
        for key in path:
            if not isinstance(node, yaml.MappingNode):
                return line
            for key_node, value_node in node.value:
                if key_node.value == key:
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        return line


def check_distinct_ports(monitoring: Monitoring) -> None:
    """Same rule as in the file, for settings that came from defaults or the environment."""
    owners: dict[int, list[str]] = {}
    for key, port in monitoring.host_ports().items():
        owners.setdefault(port, []).append(key)
    clashes = [f"port {p}: {', '.join(k)}" for p, k in owners.items() if len(k) > 1]
    if clashes:
        raise ConfigError("host ports must be distinct", clashes)
