"""`netlogger run`: the host agent.

Start-up checks everything it can before it touches the kernel (privileges,
cgroups, sinks, the control socket), then: load or take over the pinned
plane -> apply policies and static enrollments -> start the pipeline
(pump -> fan-out -> sinks), the control socket, metrics and the container
watcher. SIGTERM or SIGINT: stop reading, flush every sink, release what was
written, exit 0. Enforcement stays pinned the whole time.

This module is the lifecycle and the wiring; each part lives in its own:
control/ (requests), tail.py (streams), status.py (reports),
container_watch.py (containers), the JSONL sink (crash recovery).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from netlogger import control, privileges
from netlogger.config.check import Checked
from netlogger.config.model import Sink as SinkSpec
from netlogger.container_watch import ContainerWatch
from netlogger.containers import Engine
from netlogger.control.commands import Commands
from netlogger.enforce import Enforcer, Target
from netlogger.kernel import abi, cgroup, libbpf, loader
from netlogger.kernel.ringbuf import RingReader, span
from netlogger.metrics import MetricsServer
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.enrich import AttributionEnricher, attribution_of
from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.losses import KernelLosses
from netlogger.pipeline.pump import Pump
from netlogger.sinks import factory
from netlogger.sinks.base import Sink
from netlogger.status import AgentInfo, Reporter
from netlogger.units import parse_size

log = logging.getLogger("netlogger.agent")

QUEUE_RECORDS = 200_000  # per sink
HOUSEKEEPING_SECONDS = 5.0


@dataclass(frozen=True)
class RunOptions:
    checked: Checked
    scope: str | None
    pin_root: Path
    control_socket: Path
    metrics: str | None
    sinks: list[SinkSpec]
    state_dir: Path = Path("/var/lib/netlogger")


class Agent:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.config = options.checked.config
        self.policies = options.checked.policies
        self.host_name = socket.gethostname()
        self.stop_event = threading.Event()
        self._started = time.time()
        self._threads: list[threading.Thread] = []
        self._stack = ExitStack()
        self.engine: Engine | None = None

    def _statics(self) -> list[Target]:
        return [
            Target(cgroup.resolve(e.cgroup), e.policy, e.mode, e.agent, e.project, e.container)
            for e in self.config.enroll
        ]

    def _settings(self) -> loader.Settings:
        limits = self.config.limits
        return loader.Settings(
            parse_size(limits.ring_size), limits.allowed_per_sec, limits.allowed_burst
        )

    def start(self) -> None:
        """Everything up, or nothing: a failure undoes what this call started."""
        opts, stack = self.options, self._stack
        privileges.require()
        scope = cgroup.resolve(opts.scope) if opts.scope else cgroup.root()
        statics = self._statics()
        settings = self._settings()
        control.check_free(opts.control_socket)
        sinks = []
        for spec in opts.sinks:
            sink = factory.build(spec, self.host_name, opts.state_dir)
            stack.callback(sink.shutdown)
            sinks.append(sink)
        if self.config.containers:
            self.engine = Engine(self.config.containers.engine)
            stack.callback(self.engine.close)

        self.plane = loader.load(opts.pin_root, scope, settings)
        stack.callback(self.plane.close)
        self.enforcer = Enforcer(self.plane, self.policies)
        self.enforcer.apply_policies(self.policies)
        for target in statics:
            self.enforcer.enroll(target)

        self.pump = self._pipeline(sinks)
        self.fanout = self.pump.fanout
        self._enable_program_stats()
        info = AgentInfo(
            self.host_name,
            opts.pin_root,
            opts.control_socket,
            opts.metrics,
            self._started,
            os.getpid(),
        )
        self.reporter = Reporter(info, self.plane, self.enforcer, self.pump, self.fanout)
        self.commands = Commands(
            self.enforcer,
            self.pump,
            self.fanout,
            self.reporter.status,
            self.config.containers,
            self.engine,
            stack,
        )
        self.control = control.ControlServer(opts.control_socket, self.commands)
        stack.callback(self.control.close)
        self.metrics = MetricsServer(opts.metrics, self.reporter.snapshot) if opts.metrics else None
        if self.metrics:
            stack.callback(self.metrics.close)
        self._spawn("pump", lambda: self.pump.run(self.stop_event))
        if self.engine and self.config.containers:
            watch = ContainerWatch(
                self.engine,
                self.config.containers,
                self.commands.enroll,
                self.commands.unenroll,
                self.enforcer.enrolled,
            )
            self._spawn("containers", lambda: watch.run(self.stop_event))

    def _pipeline(self, sinks: Sequence[Sink]) -> Pump:
        """ring -> decoder -> enrichers -> fan-out -> sinks, not yet running."""
        by_id = self.policies.by_id()
        decoder = Decoder(
            self._rule_name,
            lambda pid: by_id[pid].name if pid in by_id else f"unknown({pid})",
            self.host_name,
        )
        labels = self.plane.labels.lookup
        fanout = Fanout(sinks, QUEUE_RECORDS, decoder.now)
        self._stack.callback(fanout.close)
        losses = KernelLosses(
            self.plane, decoder.now, self.host_name, lambda cg: attribution_of(labels(cg))
        )
        reader = self.plane.reader()
        self._stack.callback(reader.close)
        enrichers = [AttributionEnricher(labels)]
        return Pump(
            reader, decoder, enrichers, fanout, losses, self._already_written(sinks, reader)
        )

    def _already_written(self, sinks: Sequence[Sink], reader: RingReader) -> set[tuple[str, int]]:
        """After a crash: (cgroup, seq) of unreleased ring records a history already holds."""
        if not reader.pending_bytes():
            return set()
        capacity = self.plane.ring_bytes // span(ctypes.sizeof(abi.Event))
        return set().union(*(s.history.recent_keys(capacity) for s in sinks if s.history))

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _enable_program_stats(self) -> None:
        """Kernel run-time statistics stay on while this fd is open."""
        fd = libbpf.bpf_enable_stats(libbpf.BPF_STATS_RUN_TIME)
        if fd < 0:
            log.warning("program run statistics unavailable: %s", os.strerror(-fd))
        else:
            self._stack.callback(os.close, fd)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (set by the caller on `stop_event`); returns records read."""
        self.start()
        names = ", ".join(s.name for s in self.fanout.sinks()) or "none"
        print(
            f"netlogger: running (pid {os.getpid()}), scope {self.plane.scope.path}, "
            f"pin root {self.options.pin_root}, sinks {names}, control socket "
            f"{self.options.control_socket}",
            file=sys.stderr,
            flush=True,
        )
        while not self.stop_event.wait(HOUSEKEEPING_SECONDS):
            self._housekeeping()
        return self.stop()

    def stop(self) -> int:
        self.stop_event.set()
        self.control.close()
        for thread in self._threads:
            thread.join(30)
        self.fanout.close()
        self.pump.release_all()
        for sink in self.fanout.sinks():
            with contextlib.suppress(Exception):
                sink.force_flush()
        self._stack.close()  # sinks shut down, ring reader and plane closed; pins stay
        return self.pump.read

    def _housekeeping(self) -> None:
        """Forget enrollments whose cgroup is gone: its id will never decide again."""
        for entry in self.enforcer.enrolled():
            if entry.path and not Path(entry.path).exists():
                self.commands.unenroll(entry.cgroup_id)
                log.info("unenrolled %s: its cgroup is gone", entry.path)

    def _rule_name(self, rule_id: int) -> str | None:
        info = self.policies.rules.get(rule_id)
        return info.name if info else None
