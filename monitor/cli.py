"""`netlogger monitor ...` / `python -m monitor ...`: a plain click group.

Errors are printed as one line, `error: <Type>: <message>`, on stderr; config errors exit 2,
everything else 1. `--verbose` adds the traceback.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from monitor import agent_env as agent_env_mod
from monitor import certs, lifecycle, paths, settings
from monitor import status as status_mod
from monitor.compose import Stack
from monitor.errors import DockerUnavailableError, MonitorError

P = ParamSpec("P")
R = TypeVar("R")


class Context:
    def __init__(self, data_dir: str | None, settings_file: str | None, verbose: bool) -> None:
        self.data_dir = paths.resolve_data_dir(data_dir)
        self.settings_file = paths.resolve_settings_file(settings_file)
        self.explicit_settings = settings_file is not None
        self.verbose = verbose

    def monitoring(self) -> settings.Monitoring:
        loaded = settings.load(self.settings_file, required=self.explicit_settings)
        return loaded.monitoring


def _reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn MonitorError into the one-line error and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except MonitorError as exc:
            ctx = click.get_current_context()
            obj = ctx.find_object(Context)
            if obj is not None and obj.verbose:
                traceback.print_exc()
            click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


@click.group(
    name="monitor",
    help="""Stand up the telemetry stack: OpenTelemetry Collector, OpenSearch (+ Dashboards)
and Prometheus on the clawker-net network, preconfigured by a one-shot bootstrap.

\b
Example:
  netlogger monitor init && netlogger monitor up
  netlogger monitor status --json
""",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help=f"Stack files (default: ${paths.DATA_DIR_ENV} or ~/.local/share/clawker/monitor).",
)
@click.option(
    "--settings",
    "settings_file",
    type=click.Path(dir_okay=False),
    help=f"Settings file (default: ${paths.SETTINGS_ENV} or ~/.config/clawker/settings.yaml).",
)
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None, settings_file: str | None, verbose: bool) -> None:
    ctx.obj = Context(data_dir, settings_file, verbose)


pass_ctx = click.make_pass_decorator(Context)


@cli.command(
    help="""Write compose.yaml, otel-config.yaml, prometheus.yaml, the bootstrap assets and
the mTLS certificates into the data directory. Existing files are kept unless --force.

\b
Example:
  netlogger monitor init
  netlogger monitor --data-dir /tmp/stack init --force
"""
)
@click.option("--force", is_flag=True, help="Regenerate every file, certificates included.")
@pass_ctx
@_reports_errors
def init(obj: Context, force: bool) -> None:
    mon = obj.monitoring()
    results = lifecycle.init(mon, obj.data_dir, force=force)
    click.echo(f"data directory: {obj.data_dir}")
    for item in results:
        click.echo(f"  {item.path}: {item.outcome.value}")
    click.echo("netlogger's otlp sink for this stack (under sinks: in /etc/netlogger/config.yaml):")
    click.echo("  " + certs.sink_line(certs.paths(obj.data_dir.absolute()), mon.otel_mtls_port))


@cli.command(
    help="""Render the stack from settings, check its host ports, start it with Docker Compose
and wait (bounded) for the bootstrap to finish. Safe to run again: changed settings are applied.

\b
Example:
  netlogger monitor up
  netlogger monitor up --timeout 900
"""
)
@click.option(
    "--timeout",
    type=click.IntRange(min=10),
    default=None,
    help="Seconds to wait for the stack (default: twice monitoring.bootstrap_timeout_s).",
)
@pass_ctx
@_reports_errors
def up(obj: Context, timeout: int | None) -> None:
    mon = obj.monitoring()
    wait = float(timeout if timeout is not None else 2 * mon.bootstrap_timeout_s)
    lifecycle.up(mon, obj.data_dir, timeout=wait, echo=click.echo)
    click.echo("stack is up:")
    for name, url in status_mod.urls(mon).items():
        click.echo(f"  {name}: {url}")


@cli.command(
    help="""Stop and remove the stack's containers. The clawker-net network is kept (other
Clawker services use it); data volumes are kept unless --volumes.

\b
Example:
  netlogger monitor down
  netlogger monitor down --volumes
"""
)
@click.option("--volumes", is_flag=True, help="Also delete the OpenSearch and Prometheus data.")
@pass_ctx
@_reports_errors
def down(obj: Context, volumes: bool) -> None:
    mon = obj.monitoring()
    removed = lifecycle.down(mon, obj.data_dir, volumes=volumes)
    click.echo("stack stopped")
    for name in removed:
        click.echo(f"  volume {name}: removed")


@cli.command(
    help="""Show each service (state, health, exit code), the bootstrap's result and the URLs.
Exits 0 only when the whole stack is healthy. --json always prints JSON, also when
Docker is unreachable (then `error` says why).

\b
Example:
  netlogger monitor status
  netlogger monitor status --json | jq .healthy
"""
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@_reports_errors
def status(obj: Context, as_json: bool) -> None:
    mon = obj.monitoring()
    try:
        stack = Stack(mon, obj.data_dir)
        try:
            report = status_mod.build(mon, stack.states())
        finally:
            stack.close()
    except DockerUnavailableError as exc:
        if not as_json:
            raise
        reason = f"{type(exc).__name__}: {exc}"
        click.echo(json.dumps(status_mod.unreachable(mon, reason), indent=2))
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(report.table())
    sys.exit(0 if report.healthy else 1)


@cli.command(
    "agent-env",
    help="""Print the environment an agent container needs. Telemetry is enabled only when
the collector is running on the network now; otherwise it is explicitly disabled.

\b
Example:
  netlogger monitor agent-env --project p1 --agent dev > agent.env
  docker run --env-file agent.env --network clawker-net ...
""",
)
@click.option("--project", help="Tag telemetry with project=NAME.")
@click.option("--agent", help="Tag telemetry with agent=NAME.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["env", "shell", "json"]),
    default="env",
    show_default=True,
    help="env: KEY=VALUE (docker --env-file); shell: export lines; json: an object.",
)
@pass_ctx
@_reports_errors
def agent_env(obj: Context, project: str | None, agent: str | None, fmt: str) -> None:
    mon = obj.monitoring()
    stack = Stack(mon, obj.data_dir)
    try:
        enabled, why = agent_env_mod.detect(stack)
    finally:
        stack.close()
    click.echo(why, err=True)
    env = agent_env_mod.environment(mon, enabled=enabled, project=project, agent=agent)
    if fmt == "json":
        click.echo(json.dumps(env, indent=2))
    elif fmt == "shell":
        for key, value in env.items():
            click.echo(f"export {key}='{value}'")
    else:
        for key, value in env.items():
            click.echo(f"{key}={value}")


def main() -> None:
    cli(prog_name="monitor")


__all__ = ["cli", "main"]
