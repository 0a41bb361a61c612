"""The `netlogger` command line.

Every command catches only NetloggerError and prints `error: Type: message`
on stderr (a traceback too under --verbose). The error's type decides the exit
code: 2 for usage and validation (UsageError, CgroupError, ConfigError, and
click's own usage errors), 1 for runtime failures. Color: on a terminal unless
NO_COLOR is set; --color forces it, --no-color drops it.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import signal
import sys
import threading
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from netlogger import __version__, control
from netlogger.errors import NetloggerError, UsageError
from netlogger.views import enrolled_rows, status_text, table

log = logging.getLogger("netlogger")


PLUGIN_GROUP = "netlogger.commands"

socket_option = click.option(
    "--control-socket",
    type=click.Path(path_type=Path),
    default=None,
    help=f"the agent's socket (default: ${control.ENV_SOCKET} or {control.DEFAULT_SOCKET})",
)


def _plugins() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)}


class _Group(click.Group):
    # Commands from other packages (the `monitor` stack) plug in through an entry point, so
    # the agent imports none of them; each loads on use (monitor brings the Docker SDK, 0.4 s).
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_plugins()])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        plugin = _plugins().get(name) if command is None else None
        return plugin.load() if plugin is not None else command

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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="libbpf debug output and tracebacks")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """netlogger: eBPF egress logger and firewall for containers.

    \b
    Examples:
      netlogger doctor                 can this host run netlogger?
      netlogger demo                   sandbox + sample policy + traffic, live
      netlogger policy check egress.yaml
      netlogger policy suggest --agent a1 > a1.yaml
      netlogger reload
      netlogger run --config /etc/netlogger/config.yaml
      netlogger enroll --container web-1 --agent a1 --project p1
      netlogger tail --action denied
      netlogger --version
    """
    ctx.obj = {"verbose": verbose}
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("netlogger.libbpf").setLevel(logging.ERROR)
        # The OTLP sink reports delivery trouble itself, once; the SDK would on every retry.
        logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").setLevel(
            logging.CRITICAL
        )


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
    """Work with policies: check a file, suggest one from history, test one in the kernel.

    \b
    Examples:
      netlogger policy check /etc/netlogger/config.yaml
      netlogger policy suggest --agent a1 --since 2h
      netlogger policy test --policy default 10.1.2.3:443
    """


@policy.command("check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def policy_check(file: Path) -> None:
    """Validate FILE (a config or a policies-only file); exit 2 listing every problem.

    \b
    Examples:
      netlogger policy check /etc/netlogger/config.yaml
    """
    from netlogger.config.check import validate

    checked = validate(file)
    rows = []
    for name, compiled in checked.policies.policies.items():
        rules = sum(1 for r in checked.policies.rules.values() if r.policy == name)
        rows.append(
            [
                name,
                compiled.mode.name.lower(),
                str(rules),
                str(len(compiled.cidrs)),
                str(len(compiled.domains)),
                str(len(compiled.resolvers)),
            ]
        )
    click.echo(table(rows, ["POLICY", "MODE", "RULES", "PREFIXES", "DOMAINS", "RESOLVERS"]))
    click.echo(f"{file}: ok")


@policy.command("suggest")
@click.option(
    "--since", help="history this old (default: 24h from the agent, all of a --from file)"
)
@click.option("--agent", multiple=True, help="only this agent's decisions (repeatable)")
@click.option("--project", multiple=True, help="only this project (repeatable)")
@click.option("--container", multiple=True, help="only this container id (prefix)")
@click.option(
    "--from",
    "files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="read this JSONL history instead of asking the agent (repeatable)",
)
@click.option("--name", default="suggested", show_default=True, help="the proposed policy's name")
@click.option(
    "--diff",
    "against",
    type=click.Path(path_type=Path, dir_okay=False),
    help="print what would change against the policy of that name (or the only one) in FILE",
)
@socket_option
def policy_suggest(
    since: str | None,
    agent: tuple[str, ...],
    project: tuple[str, ...],
    container: tuple[str, ...],
    files: tuple[Path, ...],
    name: str,
    against: Path | None,
    control_socket: Path | None,
) -> None:
    """Print a policy that allows what the workloads were seen to need (from audit history).

    Domain rules where the destination had a name, a wildcard where many names
    share a registrable domain, /32 and /128 rules for addresses never resolved;
    every rule commented with its decisions, first and last seen, and agents.
    Resolver bypasses are findings in a comment, never allows.

    \b
    Examples:
      netlogger policy suggest --agent a1 --since 2h > a1.yaml
      netlogger policy suggest --from /var/log/netlogger/egress.jsonl --name ci
      netlogger policy suggest --agent a1 --name default --diff /etc/netlogger/config.yaml
    """
    from netlogger.policy import suggest as sg
    from netlogger.tail import Filter

    accept = Filter(
        agents=frozenset(agent), projects=frozenset(project), containers=tuple(container)
    )
    if files:
        records = sg.from_files(files, accept, since)
    else:
        records = sg.from_agent(control.socket_path(control_socket), accept, since or "24h")
    suggestion = sg.suggest(records, name)
    text = sg.render(suggestion)
    if against is None:
        click.echo(text, nl=False)
        return
    changes = sg.diff(sg.current_policy(against, name), suggestion.policy())
    click.echo("\n".join(changes) if changes else f"{against}: no change")


@policy.command("test")
@click.option("--policy", "policy_name", required=True, help="the policy to decide with")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="take the policy from this config or policy file (no running agent needed)",
)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per destination")
@click.argument("dests", nargs=-1, required=True, metavar="DEST...")
@socket_option
def policy_test(
    policy_name: str,
    config_file: Path | None,
    as_json: bool,
    dests: tuple[str, ...],
    control_socket: Path | None,
) -> None:
    """What the kernel would decide for each DEST under a policy, in enforce mode.

    DEST is IP[:PORT][/tcp|udp] (IPv6 with a port: [IP]:PORT); the port defaults
    to 443, the protocol to tcp. The answer comes from the real programs: a
    throwaway scope cgroup and pin root, the policy compiled into the maps, and
    a real connect() (tcp) or sendto() (udp) from a process in a network
    namespace of its own, so nothing leaves the host. Needs root. Without
    --config it decides with the running agent's policies.

    \b
    Examples:
      netlogger policy test --policy default 10.1.2.3:443 10.1.2.3:22
      netlogger policy test --policy ci --config ci.yaml --json 198.18.0.53:53/udp
    """
    from netlogger.policy import probe

    if config_file is not None:
        from netlogger.config.check import validate

        policies = validate(config_file).policies
    else:
        policies = probe.agent_policies(control.socket_path(control_socket))
    verdicts = probe.decide(policies, policy_name, [probe.parse_dest(d) for d in dests])
    if as_json:
        for v in verdicts:
            click.echo(json.dumps(asdict(v)))
    else:
        rows = [[v.dest, v.action, v.reason, v.rule or "-"] for v in verdicts]
        click.echo(table(rows, ["DEST", "ACTION", "REASON", "RULE"]))


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
    from netlogger.kernel import pins

    removed = pins.teardown(pin_root)
    click.echo(
        f"removed {len(removed)} pinned objects under {pin_root}"
        if removed
        else f"nothing pinned under {pin_root}"
    )


def target_options(fn: Any) -> Any:
    fn = click.option("--container", help="a container id or name (Docker)")(fn)
    fn = click.option("--cgroup", help="a cgroup v2 directory")(fn)
    return socket_option(fn)


def _target(cgroup: str | None, container: str | None) -> dict[str, Any]:
    if bool(cgroup) == bool(container):
        raise UsageError("name exactly one target: --cgroup PATH or --container ID")
    return {"cgroup": cgroup, "container": container}


def _show_entry(entry: dict[str, Any], as_json: bool) -> None:
    click.echo(json.dumps(entry) if as_json else enrolled_rows([entry]))


def _unenrolled(entry: dict[str, Any]) -> str:
    """What `unenroll` did, in one line."""
    what = entry["path"] or f"cgroup id {entry['cgroup_id']}"
    name = entry.get("container_name") or entry["container_id"][:12]
    container = f", container {name}" if name else ""
    return (
        f"unenrolled {what} (cgroup id {entry['cgroup_id']}{container}; was {entry['mode']} "
        f"under policy {entry['policy']}, {entry['seq']} decisions): its traffic now passes "
        "unrecorded"
    )


@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="agent config (YAML)",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="a file with only `policies:`; replaces the config's policies",
)
@click.option("--scope", help="cgroup the programs attach to (default: the cgroup v2 root)")
@click.option(
    "--sink",
    "sink_specs",
    multiple=True,
    help="console, jsonl:PATH or otlp:ENDPOINT; replaces the config's sinks",
)
@click.option("--pin-root", type=click.Path(path_type=Path), help="bpffs directory for pins")
@socket_option
@click.option("--metrics", help="loopback host:port for Prometheus, e.g. 127.0.0.1:9464")
def run(
    config_file: Path | None,
    policy_file: Path | None,
    scope: str | None,
    sink_specs: tuple[str, ...],
    pin_root: Path | None,
    control_socket: Path | None,
    metrics: str | None,
) -> None:
    """Run the host agent in the foreground until SIGTERM or SIGINT.

    Enforcement stays pinned when it stops; the next start takes it over.
    SIGHUP re-reads the config, as `netlogger reload` does.

    \b
    Examples:
      netlogger run --config /etc/netlogger/config.yaml
      netlogger run --policy egress.yaml --sink console --sink jsonl:/var/log/nl.jsonl
    """
    from netlogger.agent import Agent, RunOptions
    from netlogger.config.check import validate
    from netlogger.reload import Origin
    from netlogger.sinks.factory import parse_spec

    given = {
        "scope": scope,
        "pin_root": str(pin_root) if pin_root else None,
        "control_socket": str(control_socket) if control_socket else None,
        "metrics": metrics,
        "sinks": [parse_spec(s) for s in sink_specs] or None,
    }
    # The flags are checked with the file, by the same validation as `policy check`.
    flags = {k: v for k, v in given.items() if v}
    checked = validate(config_file, policy_file, flags)
    cfg = checked.config
    options = RunOptions(
        checked=checked,
        scope=cfg.scope,
        pin_root=Path(cfg.pin_root),
        control_socket=control.socket_path(cfg.control_socket),
        metrics=cfg.metrics,
        sinks=list(cfg.sinks),
        state_dir=Path(cfg.state_dir),
        origin=Origin(config_file, policy_file, flags),
    )
    agent = Agent(options)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop_event.set())
    # The handler only starts the reload: it takes the lock the main thread may hold.
    signal.signal(
        signal.SIGHUP,
        lambda *_: threading.Thread(target=agent.on_sighup, name="reload").start(),
    )
    read = agent.run()
    click.echo(
        f"netlogger: stopped; {read} records read from the kernel, all handed to the "
        "sinks; enforcement stays pinned",
        err=True,
    )


@cli.command()
@target_options
@click.option("--agent", default="", help="agent label for records")
@click.option("--project", default="", help="project label for records")
@click.option(
    "--policy", default=None, help="policy name (default: default, or the container's policy label)"
)
@click.option(
    "--mode",
    type=click.Choice(["enforce", "audit"]),
    default=None,
    help="override the policy's mode",
)
@click.option("--json", "as_json", is_flag=True)
def enroll(
    cgroup: str | None,
    container: str | None,
    control_socket: Path | None,
    agent: str,
    project: str,
    policy: str | None,
    mode: str | None,
    as_json: bool,
) -> None:
    """Put a cgroup or container under a policy.

    \b
    Examples:
      netlogger enroll --cgroup /sys/fs/cgroup/agents/a1 --agent a1 --project p1
      netlogger enroll --container 3f2a9c --policy strict --mode audit
    """
    entry = control.request(
        control.socket_path(control_socket),
        "enroll",
        **_target(cgroup, container),
        agent=agent,
        project=project,
        policy=policy,
        mode=mode,
    )
    _show_entry(entry, as_json)


@cli.command()
@target_options
@click.option("--json", "as_json", is_flag=True)
def unenroll(
    cgroup: str | None, container: str | None, control_socket: Path | None, as_json: bool
) -> None:
    """Stop governing a cgroup or container (its traffic passes unrecorded).

    \b
    Example:
      netlogger unenroll --cgroup /sys/fs/cgroup/agents/a1
    """
    entry = control.request(
        control.socket_path(control_socket), "unenroll", **_target(cgroup, container)
    )
    click.echo(json.dumps(entry) if as_json else _unenrolled(entry))


@cli.command()
@target_options
@click.option("--for", "duration", required=True, help="how long, e.g. 30s, 10m, 1h")
@click.option("--json", "as_json", is_flag=True)
def bypass(
    cgroup: str | None,
    container: str | None,
    control_socket: Path | None,
    duration: str,
    as_json: bool,
) -> None:
    """Let everything through for a while, recorded as bypassed.

    The kernel ends the window on its own clock: a crashed agent cannot leave it open.

    \b
    Example:
      netlogger bypass --container web-1 --for 10m
    """
    args = {**_target(cgroup, container), "for": duration}  # `for` is a keyword in Python
    entry = control.request(control.socket_path(control_socket), "bypass", **args)
    _show_entry(entry, as_json)


@cli.command()
@target_options
@click.option("--json", "as_json", is_flag=True)
def enforce(
    cgroup: str | None, container: str | None, control_socket: Path | None, as_json: bool
) -> None:
    """End a bypass (and audit) now: enforce the policy.

    \b
    Example:
      netlogger enforce --container web-1
    """
    entry = control.request(
        control.socket_path(control_socket), "enforce", **_target(cgroup, container)
    )
    _show_entry(entry, as_json)


@cli.command()
@socket_option
@click.option("--json", "as_json", is_flag=True, help="what changed, as JSON")
def reload(control_socket: Path | None, as_json: bool) -> None:
    """Re-read the running agent's config and apply what changed, all or nothing.

    The agent validates the whole config again (the files and flags it started
    with); any problem changes nothing and exits 2 with every problem located.
    Changed policies, static enrollments and sinks are applied; the rest is not
    touched. A cgroup whose policy changes moves from the old policy to the new
    one in one map write: no moment of default-deny, none of mixed rules.
    `limits`, `scope`, `pin_root`, sockets, `metrics` and `containers` need a
    restart, and a reload that changes them is refused. SIGHUP does the same.

    \b
    Examples:
      netlogger reload
      kill -HUP "$(pidof -s netlogger)"   # the same, reported on the agent's stderr
    """
    result = control.request(control.socket_path(control_socket), "reload", timeout=120)
    if as_json:
        click.echo(json.dumps(result))
        return
    changed = {k: v for k, v in result.items() if v}
    lines = [f"{key}: {', '.join(items)}" for key, items in changed.items()]
    click.echo("reloaded: " + ("; ".join(lines) if lines else "nothing changed"))


@cli.command()
@socket_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["narrow", "wide"]),
    default="narrow",
    help="wide: every column, full paths and ids (default: fits 100 columns)",
)
def status(control_socket: Path | None, as_json: bool, output: str) -> None:
    """Enrolled cgroups, modes, counters, losses and sink health of the running agent.

    \b
    Examples:
      netlogger status
      netlogger status -o wide
      netlogger status --json | jq '.losses'
    """
    result = control.request(control.socket_path(control_socket), "status")
    click.echo(json.dumps(result, indent=2) if as_json else status_text(result, output == "wide"))


@cli.command()
@socket_option
@click.option("--json", "as_json", is_flag=True, help="one JSON record per line")
@click.option(
    "--action",
    multiple=True,
    type=click.Choice(["allowed", "denied", "bypassed"]),
    help="only this verdict (repeatable)",
)
@click.option(
    "--would-deny", is_flag=True, help="only audit-mode records that enforce would have denied"
)
@click.option("--agent", multiple=True, help="only this agent (repeatable)")
@click.option("--project", multiple=True, help="only this project (repeatable)")
@click.option("--container", multiple=True, help="only this container: id prefix or name")
@click.option("--dst-ip", multiple=True, help="only destinations in this CIDR or address")
@click.option("--port", multiple=True, type=int, help="only this destination port (repeatable)")
@click.option("--reason", multiple=True, help="only this reason, e.g. default_deny (repeatable)")
@click.option("--policy", multiple=True, help="only records under this policy (repeatable)")
@click.option("--dst-host", help="only destinations whose name matches this glob")
@click.option("--since", help="start with history this old, e.g. 10m (from the JSONL sink)")
@click.option("--last", type=click.IntRange(min=1), help="start with the last N matching records")
@click.option(
    "--follow/--no-follow",
    default=True,
    help="keep following live (default), or print the history and exit 0",
)
@click.option("--color/--no-color", default=None, help="color (default: on a tty, unless NO_COLOR)")
def tail(
    control_socket: Path | None,
    as_json: bool,
    action: tuple[str, ...],
    would_deny: bool,
    agent: tuple[str, ...],
    project: tuple[str, ...],
    container: tuple[str, ...],
    dst_ip: tuple[str, ...],
    port: tuple[int, ...],
    reason: tuple[str, ...],
    policy: tuple[str, ...],
    dst_host: str | None,
    since: str | None,
    last: int | None,
    follow: bool,
    color: bool | None,
) -> None:
    """Follow decisions and control actions live from the running agent.

    Filters of different kinds combine (and); a repeated one widens (or). When
    the agent goes away, tail says so on stderr and exits 1.

    \b
    Examples:
      netlogger tail
      netlogger tail --action denied --agent a1
      netlogger tail --would-deny --container web-1
      netlogger tail --dst-ip 10.0.0.0/8 --port 443 --reason rule
      netlogger tail --policy strict --last 20 --no-follow
      netlogger tail --since 10m --no-follow --json | jq 'select(.reason == "default_deny")'
    """
    from netlogger.sinks.console import format_item, use_color
    from netlogger.sinks.jsonl import parse_item

    colored = use_color(sys.stdout, color)
    items = control.stream(
        control.socket_path(control_socket),
        "tail",
        action=list(action),
        would_deny=would_deny,
        agent=list(agent),
        project=list(project),
        container=list(container),
        dst_ip=list(dst_ip),
        port=list(port),
        reason=list(reason),
        policy=list(policy),
        dst_host=dst_host,
        since=since,
        last=last,
        follow=follow,
    )
    try:
        for raw in items:
            if as_json:
                click.echo(json.dumps(raw))
            else:
                item = parse_item(json.dumps(raw).encode())
                if item is not None:  # color=: click would strip it from a pipe
                    click.echo(format_item(item, colored), color=colored)
    except BrokenPipeError:
        pass


def main() -> None:
    cli(prog_name="netlogger")
