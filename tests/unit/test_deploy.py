"""The deployment specs grant exactly the capabilities and mounts the agent needs."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from netlogger import privileges

DEPLOY = Path(__file__).parents[2] / "deploy"
MOUNTS = {
    "/sys/fs/cgroup",
    "/sys/fs/bpf",
    "/run/netlogger",
    "/var/log/netlogger",
    "/var/lib/netlogger",
    "/var/run/docker.sock",
    "/etc/netlogger/config.yaml",
    "/etc/netlogger/tls",
}


def test_systemd_unit_bounds_capabilities_to_the_deployed_set() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((DEPLOY / "netlogger.service").read_text())
    caps = unit["Service"]["CapabilityBoundingSet"].split()
    assert caps == privileges.DEPLOYED
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert unit["Service"]["ExecStart"].split()[1:] == [
        "run",
        "--config",
        "/etc/netlogger/config.yaml",
    ]


def test_compose_service_grants_the_deployed_set_and_host_mounts() -> None:
    spec = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["netlogger"]
    assert spec["cap_drop"] == ["ALL"]
    assert ["CAP_" + c for c in spec["cap_add"]] == privileges.DEPLOYED
    assert (spec["cgroup"], spec["pid"], spec["network_mode"]) == ("host", "host", "host")
    assert {v.split(":")[1] for v in spec["volumes"]} == MOUNTS


def test_compose_file_is_valid_for_compose_v2() -> None:
    docker = shutil.which("docker")
    ok = (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    )
    if not ok:
        if os.environ.get("CI"):
            pytest.fail("docker compose v2 is missing (.ci/monitor-setup.sh installs it)")
        pytest.skip("docker compose v2 is missing")
    (DEPLOY / "netlogger.yaml").touch()  # the config the service mounts, for validation only
    try:
        result = subprocess.run(
            [docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
            capture_output=True,
            text=True,
        )
    finally:
        (DEPLOY / "netlogger.yaml").unlink()
    assert result.returncode == 0, result.stderr
