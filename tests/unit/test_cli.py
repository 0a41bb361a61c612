"""The command line without privileges: help, examples, mounting of `monitor`."""

from __future__ import annotations

import subprocess
import sys

import pytest


def netlogger(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netlogger", *args], capture_output=True, text=True, timeout=60
    )


def test_monitor_is_mounted() -> None:
    result = netlogger("monitor", "--help")
    assert result.returncode == 0
    for command in ("init", "up", "down", "status", "agent-env"):
        assert f"  {command} " in result.stdout


@pytest.mark.parametrize("command", [["doctor"], ["demo"], ["policy", "check"], ["teardown"]])
def test_every_command_has_an_example(command: list[str]) -> None:
    result = netlogger(*command, "--help")
    assert result.returncode == 0
    assert "Example" in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = netlogger("frobnicate")
    assert result.returncode == 2
    assert "No such command 'frobnicate'" in result.stderr
