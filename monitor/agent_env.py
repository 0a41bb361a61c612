"""The environment an agent container needs ("How Agents Connect").

Telemetry is switched on only when the collector is running on the shared network at the
moment the container is created: an agent exporting to an absent collector wastes time and
Claude Code does not retry, so it is told explicitly to stay quiet instead. Quiet means every
setting says so: no exporter, no endpoint, no prompt or tool-detail logging beside a disabled
switch (settings that contradict each other leave the reader guessing which one wins).
"""

from __future__ import annotations

from urllib.parse import quote

from monitor import collector
from monitor import services as svc
from monitor.compose import Stack
from monitor.errors import DockerUnavailableError
from monitor.settings import Monitoring


def collector_running(stack: Stack) -> bool:
    """True when this stack's collector container runs and is attached to the network."""
    container = stack.containers().get(svc.OTEL_COLLECTOR)
    if container is None or container.attrs.get("State", {}).get("Status") != "running":
        return False
    networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
    return stack.mon.network in networks


def environment(
    mon: Monitoring, *, enabled: bool, project: str | None, agent: str | None
) -> dict[str, str]:
    if not enabled:
        return {
            "CLAUDE_CODE_ENABLE_TELEMETRY": "0",
            "CLAUDE_CODE_ENHANCED_TELEMETRY_BETA": "0",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_LOG_TOOL_DETAILS": "0",
            "OTEL_LOG_USER_PROMPTS": "0",
        }
    tele = mon.telemetry
    env = {
        # Agents sit on the network, so they use the service name and the container port.
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{svc.OTEL_COLLECTOR}:{collector.OTLP_HTTP_PORT}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_TRACES_EXPORTER": "otlp",
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        # Span export needs both flags at 1.
        "CLAUDE_CODE_ENHANCED_TELEMETRY_BETA": "1",
        "OTEL_LOG_TOOL_DETAILS": "1" if tele.log_tool_details else "0",
        "OTEL_LOG_USER_PROMPTS": "1" if tele.log_user_prompts else "0",
        "OTEL_METRICS_INCLUDE_ACCOUNT_UUID": "true" if tele.include_account_uuid else "false",
        "OTEL_METRICS_INCLUDE_SESSION_ID": "true" if tele.include_session_id else "false",
    }
    # W3C baggage-style encoding: a comma or "=" in a name must not split the list.
    pairs = (("project", project), ("agent", agent))
    attributes = [f"{k}={quote(v, safe='')}" for k, v in pairs if v]
    if attributes:
        env["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(attributes)
    return env


def detect(stack: Stack) -> tuple[bool, str]:
    """(enabled, why) — an unreachable engine means no collector, not an error."""
    try:
        running = collector_running(stack)
    except DockerUnavailableError as exc:
        return False, f"telemetry disabled: {exc}"
    if running:
        return True, f"collector running on {stack.mon.network}: telemetry enabled"
    return False, f"collector not running on {stack.mon.network}: telemetry disabled"
