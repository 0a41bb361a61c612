"""The `netlogger` command line.

Every command catches only NetloggerError and prints `error: Type: message`
on stderr (a traceback too under --verbose); config problems exit 2, runtime
failures exit 1.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from netlogger.errors import NetloggerError

log = logging.getLogger("netlogger")


class _Group(click.Group):
    # `monitor` is loaded on use: it brings the Docker SDK, 0.4 s of imports.
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "monitor"])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "monitor":
            from monitor.cli import cli as monitor_cli

            return monitor_cli
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NetloggerError as exc:
            if (ctx.obj or {}).get("verbose"):
                traceback.print_exc()
            click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            ctx.exit(130)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="libbpf debug output and tracebacks")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """netlogger: eBPF egress logger and firewall for containers.

    \b
    Examples:
      netlogger doctor                 can this host run netlogger?
      netlogger demo                   sandbox + sample policy + traffic, live
      netlogger policy check egress.yaml
    """
    ctx.obj = {"verbose": verbose}
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("netlogger.libbpf").setLevel(logging.ERROR)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def doctor(as_json: bool) -> None:
    """Check that this host can run netlogger; exit 1 naming what is missing.

    \b
    Examples:
      netlogger doctor
      netlogger doctor --json | jq '.[] | select(.status == "fail")'
    """
    from netlogger.doctor import run_checks

    checks = run_checks()
    if as_json:
        click.echo(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        marks = {"ok": "ok", "warn": "warn", "fail": "FAIL"}
        click.echo(
            table(
                [[c.name, marks[c.status], c.detail] for c in checks], ["CHECK", "STATUS", "DETAIL"]
            )
        )
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        click.echo(f"error: NotUsable: {failed[0].name}: {failed[0].detail}", err=True)
        sys.exit(1)


@cli.group()
def policy() -> None:
    """Work with policy files."""


@policy.command("check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def policy_check(file: Path) -> None:
    """Validate FILE (a config or a policies-only file); exit 2 listing every problem.

    \b
    Examples:
      netlogger policy check /etc/netlogger/config.yaml
    """
    from netlogger.config.check import check_file

    checked = check_file(file)
    rows = []
    for name, compiled in checked.policies.policies.items():
        rules = sum(1 for r in checked.policies.rules.values() if r.policy == name)
        rows.append(
            [
                name,
                compiled.mode.name.lower(),
                str(rules),
                str(len(compiled.cidrs)),
                str(len(compiled.resolvers)),
            ]
        )
    click.echo(table(rows, ["POLICY", "MODE", "RULES", "PREFIXES", "RESOLVERS"]))
    click.echo(f"{file}: ok")


@cli.command()
@click.option("--color/--no-color", default=None, help="color the records (default: on a tty)")
def demo(color: bool | None) -> None:
    """Run sample traffic through a sample policy in a sandbox, showing each record.

    Makes its own scope cgroup, pin root and network namespaces, and removes
    them again. Needs root.

    \b
    Example:
      sudo netlogger demo
    """
    from netlogger.demo import Demo

    Demo(sys.stdout, color).run()


@cli.command()
@click.option(
    "--pin-root",
    type=click.Path(path_type=Path),
    default="/sys/fs/bpf/netlogger",
    show_default=True,
)
def teardown(pin_root: Path) -> None:
    """Detach the pinned programs and remove the pinned maps: enforcement stops.

    Refuses while an agent holds the pin root.

    \b
    Example:
      netlogger teardown --pin-root /sys/fs/bpf/netlogger
    """
    from netlogger.kernel import loader

    removed = loader.teardown(pin_root)
    click.echo(
        f"removed {len(removed)} pinned objects under {pin_root}"
        if removed
        else f"nothing pinned under {pin_root}"
    )


def main() -> None:
    cli(prog_name="netlogger")
