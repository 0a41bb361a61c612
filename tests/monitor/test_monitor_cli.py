"""CLI surface, status verdicts and the agent environment, without a Docker engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from conftest import StackEnv

from monitor import agent_env, status
from monitor import services as svc
from monitor.cli import cli
from monitor.compose import ServiceState
from monitor.settings import Monitoring, Telemetry

REPO = Path(__file__).resolve().parents[2]


def test_cli_is_a_plain_group_with_the_contract_commands() -> None:
    assert isinstance(cli, click.Group)
    assert set(cli.commands) == {"init", "up", "down", "status", "agent-env"}


@pytest.mark.parametrize("command", [[], ["init"], ["up"], ["down"], ["status"], ["agent-env"]])
def test_every_help_has_an_example(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output


def test_python_dash_m_monitor_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "--data-dir",
            str(tmp_path),
            "--settings",
            str(tmp_path / "none.yaml"),
            "--help",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: monitor" in done.stdout


def test_unreachable_engine_is_one_line_error(
    stack_env: StackEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{stack_env.root}/no-such.sock")
    result = stack_env.run("status")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: DockerUnavailableError: cannot reach the Docker engine")


def test_agent_env_without_engine_disables_telemetry(
    stack_env: StackEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{stack_env.root}/no-such.sock")
    result = stack_env.run("agent-env", "--format", "shell")
    assert result.exit_code == 0
    assert "export CLAUDE_CODE_ENABLE_TELEMETRY='0'" in result.output


def _state(service: str, **kw: object) -> ServiceState:
    base: dict[str, object] = {
        "service": service,
        "container": f"c-{service}",
        "state": "running",
        "health": "healthy",
        "exit_code": None,
        "ports": (),
    }
    if service == svc.BOOTSTRAP:
        base.update(state="exited", health=None, exit_code=0)
    if service == svc.OTEL_COLLECTOR:
        base.update(health=None)
    base.update(kw)
    return ServiceState(**base)  # type: ignore[arg-type]


def _report(**overrides: ServiceState) -> status.Report:
    states = {s: overrides.get(s, _state(s)) for s in svc.ALL_SERVICES}
    return status.build(Monitoring(), states)


def test_status_healthy_when_everything_is_ready() -> None:
    report = _report()
    assert report.healthy
    assert report.bootstrap_result == "completed"
    doc = report.to_json()
    assert doc["healthy"] is True and doc["urls"]["Prometheus"] == "http://localhost:9090"
    assert "stack: healthy" in report.table()
    assert "no check" in report.table()  # the collector has no Docker healthcheck


@pytest.mark.parametrize(
    ("service", "change", "bootstrap_result"),
    [
        (svc.BOOTSTRAP, {"exit_code": 1}, "failed (exit 1)"),
        (svc.BOOTSTRAP, {"state": "running", "exit_code": None}, "running"),
        (svc.BOOTSTRAP, {"state": "missing", "exit_code": None, "container": None}, "not run"),
        (svc.OPENSEARCH, {"health": "unhealthy"}, "completed"),
        (svc.OTEL_COLLECTOR, {"state": "exited", "exit_code": 2}, "completed"),
        (svc.PROMETHEUS, {"health": "starting"}, "completed"),
    ],
)
def test_status_not_healthy(service: str, change: dict[str, object], bootstrap_result: str) -> None:
    report = _report(**{service: _state(service, **change)})
    assert not report.healthy
    assert report.bootstrap_result == bootstrap_result
    assert report.to_json()["healthy"] is False
    assert "stack: NOT healthy" in report.table()


def test_agent_environment_follows_the_reference() -> None:
    mon = Monitoring(telemetry=Telemetry(log_user_prompts=False, include_account_uuid=False))
    on = agent_env.environment(mon, enabled=True, project="p 1", agent="a,b")
    assert on["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert {
        on[k] for k in ("OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER", "OTEL_TRACES_EXPORTER")
    } == {"otlp"}
    assert on["CLAUDE_CODE_ENABLE_TELEMETRY"] == "1"
    assert on["CLAUDE_CODE_ENHANCED_TELEMETRY_BETA"] == "1"
    assert on["OTEL_LOG_USER_PROMPTS"] == "0"
    assert on["OTEL_LOG_TOOL_DETAILS"] == "1"
    assert on["OTEL_METRICS_INCLUDE_ACCOUNT_UUID"] == "false"
    assert on["OTEL_RESOURCE_ATTRIBUTES"] == "project=p%201,agent=a%2Cb"
    off = agent_env.environment(mon, enabled=False, project=None, agent=None)
    assert off["CLAUDE_CODE_ENABLE_TELEMETRY"] == "0"
    assert "OTEL_RESOURCE_ATTRIBUTES" not in off


def test_status_json_shape_is_stable() -> None:
    doc = _report().to_json()
    assert set(doc) == {"healthy", "project", "network", "bootstrap", "services", "urls"}
    assert [s["service"] for s in doc["services"]] == list(svc.ALL_SERVICES)
    json.dumps(doc)


class _FakeStack:
    def logs(self, service: str, tail: int = 30) -> str:
        return "bootstrap: FAILED: index template x (HTTP 400)\n"


def _states(**overrides: ServiceState) -> dict[str, ServiceState]:
    return {s: overrides.get(s, _state(s)) for s in svc.ALL_SERVICES}


def test_up_outcomes_map_to_errors() -> None:
    from monitor import lifecycle
    from monitor.errors import BootstrapError, ComposeError, StackTimeoutError

    stack: Any = _FakeStack()
    lifecycle._raise_for(stack, _states(), 0, "", 60)  # all ready: no error
    failed = _states(**{svc.BOOTSTRAP: _state(svc.BOOTSTRAP, exit_code=3)})
    with pytest.raises(BootstrapError, match=r"(?s)exited 3.*HTTP 400"):
        lifecycle._raise_for(stack, failed, 1, "", 60)
    starting = _states(**{svc.OPENSEARCH: _state(svc.OPENSEARCH, health="starting")})
    with pytest.raises(StackTimeoutError, match="still waiting for: opensearch-node"):
        lifecycle._raise_for(stack, starting, None, "", 60)
    with pytest.raises(ComposeError, match="pull access denied"):
        lifecycle._raise_for(stack, _states(), 1, "Error: pull access denied\n", 60)


def test_status_json_is_json_when_docker_is_unreachable(
    stack_env: StackEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{stack_env.root}/no-such.sock")
    result = stack_env.run("status", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc == {
        "healthy": False,
        "project": stack_env.project,
        "network": stack_env.network,
        "bootstrap": {"result": "unknown", "exit_code": None},
        "services": [],
        "urls": {},
        "error": "DockerUnavailableError: cannot reach the Docker engine: no socket at "
        f"unix://{stack_env.root}/no-such.sock; start dockerd or set DOCKER_HOST",
    }


def test_agent_env_off_never_contradicts_itself() -> None:
    mon = Monitoring(telemetry=Telemetry(log_user_prompts=True, log_tool_details=True))
    off = agent_env.environment(mon, enabled=False, project="p1", agent="a1")
    assert off == {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "0",
        "CLAUDE_CODE_ENHANCED_TELEMETRY_BETA": "0",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOG_TOOL_DETAILS": "0",
        "OTEL_LOG_USER_PROMPTS": "0",
    }
