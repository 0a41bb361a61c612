"""The command line without privileges: help, examples, mounting of `monitor`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from netlogger.cli import cli


def netlogger(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netlogger", *args], capture_output=True, text=True, timeout=60
    )


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and subcommand under `group`, as the words that name it."""
    ctx = click.Context(group, info_name=" ".join(path) or "netlogger")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


def test_the_walk_reaches_the_groups_and_their_subcommands() -> None:
    found = set(commands(cli))
    assert {("monitor", "up"), ("monitor", "agent-env"), ("policy", "check"), ("run",)} <= found


@pytest.mark.parametrize("command", sorted(commands(cli)), ids=" ".join)
def test_every_command_has_an_example(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"], prog_name="netlogger")
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"netlogger {' '.join(command)}" in result.output.partition("Example")[2]


def test_monitor_is_mounted() -> None:
    result = netlogger("monitor", "--help")
    assert result.returncode == 0
    for command in ("init", "up", "down", "status", "agent-env"):
        assert f"  {command} " in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = netlogger("frobnicate")
    assert result.returncode == 2
    assert "No such command 'frobnicate'" in result.stderr
