"""The steps behind `init`, `up` and `down`, in the order they must happen.

`up`: render -> ports distinct and free (before Docker is asked to change anything) ->
network -> `docker compose up -d` -> bounded wait, one line per service as it gets ready.
A failure after the network exists says what it left behind and how to remove it; one that
looks like an image pull says how to bring images to a host without registry access.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from monitor import images, ports, render
from monitor import services as svc
from monitor.compose import ServiceState, Stack, compose_command, wait_ready
from monitor.errors import BootstrapError, ComposeError, MonitorError, StackTimeoutError
from monitor.settings import Monitoring, check_distinct_ports

Echo = Callable[[str], None]


def init(mon: Monitoring, data_dir: Path, *, force: bool) -> list[render.Written]:
    mode = render.Mode.FORCE if force else render.Mode.INIT
    return render.materialize(mon, data_dir, mode)


def up(mon: Monitoring, data_dir: Path, *, timeout: float, echo: Echo) -> dict[str, ServiceState]:
    check_distinct_ports(mon)
    written = render.materialize(mon, data_dir, render.Mode.SYNC)
    for item in written:
        if item.outcome in (render.Outcome.UPDATED, render.Outcome.KEPT_EDITED):
            echo(f"{item.path}: {item.outcome.value}")
    stack = Stack(mon, data_dir)
    try:
        ports.check(mon, stack.published_ports)
        compose_command()  # fail before any change if Compose v2 is missing
        created = stack.ensure_network()
        if created:
            echo(f"network {mon.network}: created")
        try:
            return _start(stack, timeout, echo)
        except MonitorError as exc:
            exc.args = (f"{exc}{failed_up_note(mon, data_dir, created, str(exc))}",)
            raise
    finally:
        stack.close()


_PULL_MARKERS = ("pull access denied", "manifest unknown", "failed to resolve reference",
                 "no such image", "error pulling", "registry", "dial tcp")  # fmt: skip


def failed_up_note(mon: Monitoring, data_dir: Path, created: bool, error: str) -> str:
    """What a failed `up` leaves behind and how to clean up; how to load images offline."""
    whose = "created by this run" if created else "it existed before"
    lines = [
        "",
        f"left behind: network {mon.network} ({whose}), the stack's containers that started, "
        f"and the rendered files in {data_dir}",
        "  remove them: `netlogger monitor down`, then `docker network rm "
        f"{mon.network}` (only if no other Clawker service uses it)",
    ]
    if any(marker in error.lower() for marker in _PULL_MARKERS):
        refs = " ".join(image.ref("tag") for image in images.ALL)
        lines += [
            "images: no registry reachable? on a host that reaches one:",
            f"  docker pull {refs}",
            f"  docker save {refs} | gzip > monitor-images.tar.gz",
            "  then here: `docker load -i monitor-images.tar.gz` and set `monitoring.image_refs: "
            "tag` (or CLAWKER_MONITOR_IMAGE_REFS=tag): loaded images carry no registry digest",
        ]
    return "\n".join(lines)


def _start(stack: Stack, timeout: float, echo: Echo) -> dict[str, ServiceState]:
    deadline = time.monotonic() + timeout
    echo(f"starting {stack.names.project} (waiting up to {timeout:.0f}s)")

    def report(state: ServiceState) -> None:
        if state.ready:
            echo(f"  {state.service}: {_ready_word(state)}")
        else:
            echo(f"  {state.service}: FAILED ({state.state}, exit {state.exit_code})")

    before = {name: st.started_at for name, st in stack.states().items()}
    with stack.compose_background("up", "-d", "--remove-orphans") as running:
        states = wait_ready(stack, running, deadline, report, before)
        code = running.poll()
        output = running.text()
    _raise_for(stack, states, code, output, timeout)
    return states


def _ready_word(state: ServiceState) -> str:
    if state.service == svc.BOOTSTRAP:
        return "bootstrap completed"
    return state.health or "running"


def _raise_for(
    stack: Stack, states: dict[str, ServiceState], code: int | None, output: str, timeout: float
) -> None:
    boot = states[svc.BOOTSTRAP]
    if boot.failed:
        raise BootstrapError(
            f"{boot.container} exited {boot.exit_code}; the collector was not (re)started. "
            f"Last lines:\n{stack.logs(svc.BOOTSTRAP, tail=15).rstrip()}\n"
            f"See `docker logs {boot.container}`; after fixing, run "
            "`monitor down --volumes && monitor up`"
        )
    if code is None:
        waiting = [s.service for s in states.values() if not s.ready]
        raise StackTimeoutError(
            f"stack not ready after {timeout:.0f}s; still waiting for: {', '.join(waiting)} "
            "(see `monitor status`; raise --timeout on slow machines)"
        )
    if code != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise ComposeError(f"docker compose up failed (exit {code}):\n{tail}")
    not_ready = [s.service for s in states.values() if not s.ready]
    if not_ready:
        raise StackTimeoutError(
            f"compose finished but not ready after {timeout:.0f}s: {', '.join(not_ready)}"
        )


def down(mon: Monitoring, data_dir: Path, *, volumes: bool) -> list[str]:
    stack = Stack(mon, data_dir)
    try:
        before = stack.volumes() if volumes else []
        stack.down(volumes=volumes)
        return before
    finally:
        stack.close()
