"""`up`, `status`, `agent-env` and `down` against a real dockerd, with stand-in images.

Stand-ins (tests/monitor/standins/build.sh) carry the real image references in `tag` mode:
OpenSearch and Dashboards are fake REST APIs, Prometheus is the real Debian binary, the
collector checks its config and certificates then idles, and the curl image runs the real
bootstrap.sh. Every test uses its own names, ports and network, and removes them.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from conftest import StackEnv

from monitor import services as svc
from netlogger import trusted_lane

pytestmark = pytest.mark.docker


def _containers(client: Any, env: StackEnv) -> dict[str, Any]:
    found = client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={env.project}"}
    )
    return {c.labels["com.docker.compose.service"]: c for c in found}


def _volumes(client: Any, env: StackEnv) -> set[str]:
    return {v.name for v in client.volumes.list() if v.name.startswith(f"{env.prefix}-")}


def _networks(client: Any, env: StackEnv) -> list[Any]:
    return client.networks.list(names=[env.network])


def test_up_creates_labelled_stack_and_is_idempotent(
    live_stack: StackEnv, docker_client: Any
) -> None:
    env = live_stack
    first = env.run("up")
    assert first.exit_code == 0, first.output
    for service in svc.ALL_SERVICES:
        assert f"  {service}: " in first.output, service  # one progress line per service
    assert "stack is up:" in first.output

    (network,) = _networks(docker_client, env)
    containers = _containers(docker_client, env)
    assert set(containers) == set(svc.ALL_SERVICES)
    for name, container in containers.items():
        assert container.labels["dev.clawker.purpose"] == "monitoring", name
        assert env.network in container.attrs["NetworkSettings"]["Networks"], name
    expected_ports = {
        svc.OPENSEARCH: {"9200/tcp": env.settings["opensearch_port"]},
        svc.DASHBOARDS: {"5601/tcp": env.settings["opensearch_dashboards_port"]},
        svc.PROMETHEUS: {"9090/tcp": env.settings["prometheus_port"]},
        svc.OTEL_COLLECTOR: {
            "4318/tcp": env.settings["otel_collector_port"],
            "4317/tcp": env.settings["otel_grpc_port"],
            f"{trusted_lane.PORT}/tcp": env.settings["otel_mtls_port"],
            "8889/tcp": env.settings["prometheus_metrics_port"],
        },
    }
    for service, ports in expected_ports.items():
        bindings = containers[service].attrs["HostConfig"]["PortBindings"]
        for spec, host_port in ports.items():
            assert bindings[spec] == [{"HostIp": "127.0.0.1", "HostPort": str(host_port)}]
    assert _volumes(docker_client, env) == {f"{env.prefix}-opensearch", f"{env.prefix}-prometheus"}
    for name in _volumes(docker_client, env):
        labels = docker_client.volumes.get(name).attrs["Labels"]
        assert labels["dev.clawker.purpose"] == "monitoring"
    assert network.attrs["Driver"] == "bridge"

    # The real bootstrap.sh ran against the OpenSearch stand-in, in dependency order.
    code, log = containers[svc.OPENSEARCH].exec_run(
        ["cat", "/usr/share/opensearch/data/standin/requests.log"]
    )
    assert code == 0
    requests = log.decode().splitlines()
    order = [
        "PUT /_component_template/clawker-common",
        "PUT /_index_template/clawker-ebpf-egress",
        "PUT /_plugins/_ism/policies/clawker-retention",
        "PUT /clawker-ebpf-egress-000001",
        "POST /_plugins/_query/_datasources",
    ]
    assert [requests.index(r) for r in order] == sorted(requests.index(r) for r in order)

    status = env.run("status", "--json")
    assert status.exit_code == 0, status.output
    report = json.loads(status.output)
    assert report["healthy"] is True
    assert report["bootstrap"] == {"result": "completed", "exit_code": 0}

    table = env.run("status")
    assert table.exit_code == 0
    assert "stack: healthy" in table.output and "bootstrap: completed" in table.output

    agent = env.run("agent-env", "--project", "p1", "--agent", "dev", "--format", "json")
    assert agent.exit_code == 0
    agent_env = json.loads(agent.output[agent.output.index("{") :])
    assert agent_env["CLAUDE_CODE_ENABLE_TELEMETRY"] == "1"
    assert agent_env["OTEL_RESOURCE_ATTRIBUTES"] == "project=p1,agent=dev"

    ids = {name: c.id for name, c in containers.items() if name != svc.BOOTSTRAP}
    second = env.run("up")
    assert second.exit_code == 0, second.output
    again = _containers(docker_client, env)
    assert {n: c.id for n, c in again.items() if n != svc.BOOTSTRAP} == ids, "nothing recreated"
    assert again[svc.BOOTSTRAP].attrs["State"]["ExitCode"] == 0
    assert len(_networks(docker_client, env)) == 1


def test_changed_settings_are_applied_by_up(live_stack: StackEnv, docker_client: Any) -> None:
    env = live_stack
    assert env.run("up").exit_code == 0
    old_id = _containers(docker_client, env)[svc.PROMETHEUS].id
    (new_port,) = [p for p in _free(1)]
    env.write_settings(prometheus_port=new_port)
    result = env.run("up")
    assert result.exit_code == 0, result.output
    prometheus = _containers(docker_client, env)[svc.PROMETHEUS]
    assert prometheus.id != old_id
    binding = prometheus.attrs["HostConfig"]["PortBindings"]["9090/tcp"]
    assert binding == [{"HostIp": "127.0.0.1", "HostPort": str(new_port)}]


def _free(count: int) -> list[int]:
    from conftest import free_ports

    return free_ports(count)


def test_busy_port_refused_before_docker_is_touched(
    live_stack: StackEnv, docker_client: Any
) -> None:
    env = live_stack
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", env.settings["opensearch_port"]))
        squatter.listen()
        result = env.run("up")
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: PortInUseError: host port in use by another process: ")
    assert f"{env.settings['opensearch_port']} (monitoring.opensearch_port)" in line
    assert _containers(docker_client, env) == {}
    assert _volumes(docker_client, env) == set()
    assert _networks(docker_client, env) == []


def test_failed_bootstrap_is_reported_and_not_healthy(
    live_stack: StackEnv, docker_client: Any
) -> None:
    env = live_stack
    assert env.run("up").exit_code == 0
    # The OpenSearch stand-in answers 500 to template PUTs while this file exists.
    opensearch = _containers(docker_client, env)[svc.OPENSEARCH]
    code, _ = opensearch.exec_run(["touch", "/usr/share/opensearch/data/standin/fail"])
    assert code == 0
    result = env.run("up")
    assert result.exit_code == 1
    assert "error: BootstrapError:" in result.output
    assert "FAILED: component template clawker-common (HTTP 500)" in result.output

    status = env.run("status", "--json")
    assert status.exit_code == 1
    report = json.loads(status.output)
    assert report["healthy"] is False
    assert report["bootstrap"] == {"result": "failed (exit 1)", "exit_code": 1}
    table = env.run("status")
    assert table.exit_code == 1
    assert "stack: NOT healthy" in table.output


def test_down_keeps_data_unless_volumes(live_stack: StackEnv, docker_client: Any) -> None:
    env = live_stack
    assert env.run("up").exit_code == 0
    down = env.run("down")
    assert down.exit_code == 0, down.output
    assert _containers(docker_client, env) == {}
    assert len(_volumes(docker_client, env)) == 2
    assert len(_networks(docker_client, env)) == 1, "clawker-net is shared: kept"

    agent = env.run("agent-env")
    assert "CLAUDE_CODE_ENABLE_TELEMETRY=0" in agent.output
    status = env.run("status")
    assert status.exit_code == 1

    assert env.run("up").exit_code == 0
    gone = env.run("down", "--volumes")
    assert gone.exit_code == 0, gone.output
    assert f"volume {env.prefix}-opensearch: removed" in gone.output
    assert _volumes(docker_client, env) == set()
    assert _containers(docker_client, env) == {}


def test_failed_up_says_what_it_left_behind_and_how_to_load_images(
    live_stack: StackEnv, docker_client: Any
) -> None:
    """No registry here: digest references cannot be pulled, so compose fails for real."""
    env = live_stack
    env.settings["image_refs"] = "digest"
    env.write_settings()
    result = env.run("up", "--timeout", "60")
    assert result.exit_code == 1
    assert "error: ComposeError: docker compose up failed" in result.output
    lines = result.output.splitlines()
    at = lines.index(
        f"left behind: network {env.network} (created by this run), the stack's containers "
        f"that started, and the rendered files in {env.data_dir}"
    )
    assert lines[at + 1] == (
        f"  remove them: `netlogger monitor down`, then `docker network rm {env.network}` "
        "(only if no other Clawker service uses it)"
    )
    assert lines[at + 2] == "images: no registry reachable? on a host that reaches one:"
    assert lines[at + 4].startswith("  docker save otel/opentelemetry-collector-contrib:0.144.0 ")
    assert lines[at + 5].startswith("  then here: `docker load -i monitor-images.tar.gz`")
    assert [n.name for n in _networks(docker_client, env)] == [env.network]  # as it says
