"""Settings: defaults, overrides, and errors that name file, line, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import StackEnv

from monitor import paths, settings
from monitor.cli import cli
from monitor.errors import ConfigError
from netlogger import trusted_lane


def test_defaults_match_the_reference() -> None:
    mon = settings.Monitoring()
    assert mon.host_ports() == {
        "otel_collector_port": 4318,
        "otel_grpc_port": 4317,
        "otel_mtls_port": trusted_lane.PORT,
        "opensearch_port": 9200,
        "opensearch_dashboards_port": 5601,
        "prometheus_port": 9090,
        "prometheus_metrics_port": 8889,
    }
    assert mon.opensearch_heap_mb == 512
    assert mon.retention_days == 7
    assert mon.image_refs == "digest"
    assert mon.telemetry.log_user_prompts is True


def test_file_overrides_and_other_sections_ignored() -> None:
    text = """
agent:
  env: {FOO: bar}
monitoring:
  opensearch_port: 19200
  opensearch_heap_mb: 1024
  telemetry:
    log_user_prompts: false
"""
    loaded = settings.parse(text, "s.yaml")
    assert loaded.monitoring.opensearch_port == 19200
    assert loaded.monitoring.opensearch_heap_mb == 1024
    assert loaded.monitoring.telemetry.log_user_prompts is False
    assert loaded.monitoring.telemetry.include_session_id is True


def test_every_problem_is_reported_with_its_line() -> None:
    text = """monitoring:
  opensearch_port: "nine"
  opensearch_heap_mb: 10
  prometheus_prot: 9091
  telemetry:
    log_user_prompts: maybe
"""
    with pytest.raises(ConfigError) as info:
        settings.parse(text, "s.yaml")
    problems = info.value.problems
    assert len(problems) == 4, problems
    assert problems[0].startswith("s.yaml:2: monitoring.opensearch_port: Expected `int`")
    assert problems[1].startswith("s.yaml:3: monitoring.opensearch_heap_mb: Expected `int` >= 256")
    assert problems[2].startswith("s.yaml:4: monitoring.prometheus_prot: unknown key")
    assert problems[3].startswith("s.yaml:6: monitoring.telemetry.log_user_prompts:")


def test_ports_must_be_distinct() -> None:
    text = "monitoring:\n  opensearch_port: 9090\n"
    with pytest.raises(ConfigError) as info:
        settings.parse(text, "s.yaml")
    assert "port 9090 is also used by monitoring.prometheus_port" in str(info.value)


def test_port_range_checked() -> None:
    with pytest.raises(ConfigError, match="otel_grpc_port"):
        settings.parse("monitoring:\n  otel_grpc_port: 70000\n", "s.yaml")


def test_invalid_yaml_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        settings.parse("monitoring: [unclosed\n", "s.yaml")


def test_cli_config_error_exits_2_with_one_line(stack_env: StackEnv) -> None:
    stack_env.settings_file.write_text("monitoring:\n  opensearch_port: 0\n")
    result = stack_env.run("init")
    assert result.exit_code == 2
    first = result.output.splitlines()[0]
    assert first.startswith("error: ConfigError: invalid settings in ")
    assert "monitoring.opensearch_port: Expected `int` >= 1" in result.output


def test_explicit_missing_settings_file_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--data-dir", str(tmp_path), "--settings", str(tmp_path / "nope.yaml"), "init"]
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_path_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(paths.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(paths.SETTINGS_ENV, raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.default_data_dir() == tmp_path / ".local/share/clawker/monitor"
    assert paths.default_settings_file() == tmp_path / ".config/clawker/settings.yaml"
    monkeypatch.setenv(paths.DATA_DIR_ENV, "/x/data")
    monkeypatch.setenv(paths.SETTINGS_ENV, "/x/settings.yaml")
    assert paths.default_data_dir() == Path("/x/data")
    assert paths.default_settings_file() == Path("/x/settings.yaml")
    assert paths.resolve_data_dir("/opt/d") == Path("/opt/d")


def test_env_image_refs_must_be_known(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(settings.IMAGE_REFS_ENV, "latest")
    with pytest.raises(ConfigError, match="CLAWKER_MONITOR_IMAGE_REFS"):
        settings.load(tmp_path / "absent.yaml")
