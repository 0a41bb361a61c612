"""`netlogger run`: the host agent.

Start-up checks everything it can before it touches the kernel (privileges,
cgroups, sinks, the control socket, the metrics address), then: load or take
over the pinned plane -> apply policies and static enrollments -> deliver what
a replaced ring still held -> start the pipeline (pump -> fan-out -> sinks),
the control socket and the container watcher. A start that fails anyway
undoes it all: it detaches and unpins what it made (pinned enforcement it took
over stays), and removes its socket. SIGTERM or SIGINT: stop reading, flush
every sink, release what was written, exit 0, whatever the sinks went
through. Enforcement stays pinned the whole time.

This module is the lifecycle and the wiring; each part lives in its own:
control/ (requests), tail.py (streams), status.py (reports),
container_watch.py (containers), reload.py (reload and SIGHUP), the JSONL sink
(crash recovery).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netlogger import control, heap, privileges
from netlogger.audit import Actor, AuditTrail
from netlogger.backstop import Backstop
from netlogger.config.check import Checked, dns_ttl_s, fold_window_ns
from netlogger.config.model import Containers
from netlogger.config.model import Sink as SinkSpec
from netlogger.container_watch import ContainerWatch, Ops
from netlogger.containers import DEFAULT_ENGINE, ContainerNames, Engine
from netlogger.control.commands import Commands
from netlogger.enforce import Enforcer, Target
from netlogger.enrich.dns import STATE_FILE, DnsEnricher, boot_ns, write_atomically
from netlogger.errors import EngineError
from netlogger.kernel import abi, cgroup, libbpf, loader, pins
from netlogger.kernel.plane import Plane
from netlogger.kernel.ringbuf import RingReader, span
from netlogger.metrics import MetricsServer, Snapshot
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.dnsdecode import DnsDecoder
from netlogger.pipeline.enrich import (
    AttributionEnricher,
    ContainerFlags,
    Enricher,
    ProcessEnricher,
    attribution_of,
)
from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.losses import LossLedger
from netlogger.pipeline.pump import Pump
from netlogger.pipeline.record import Gap
from netlogger.reload import Built, Names, Origin, Reloader, build_sinks, shutdown, static_target
from netlogger.sinks import factory
from netlogger.sinks.base import Sink, status_of
from netlogger.sinks.jsonl import last_lines, parse_item
from netlogger.status import AgentInfo, Reporter
from netlogger.units import parse_size

log = logging.getLogger("netlogger.agent")

QUEUE_RECORDS = 200_000  # per sink
HOUSEKEEPING_SECONDS = 5.0
OLD_RING_SECONDS = 30.0  # to write what a replaced ring held; else the next start tries


@dataclass(frozen=True)
class RunOptions:
    checked: Checked
    scope: str | None
    pin_root: Path
    control_socket: Path
    metrics: str | None
    sinks: list[SinkSpec]
    state_dir: Path = Path("/var/lib/netlogger")
    origin: Origin = field(default_factory=Origin)  # what `reload` validates again


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
        self.watch: ContainerWatch | None = None
        self.names = Names(self.policies)
        self._up = threading.Event()  # start() finished: a reload has something to change
        self._sinks: Built = []
        self._every_sink: list[Sink] = []
        self.container_names = ContainerNames()

    def _statics(self) -> list[Target]:
        return [static_target(e) for e in self.config.enroll]

    def _build_sink(self, spec: SinkSpec) -> Sink:
        sink = factory.build(spec, self.host_name, self.options.state_dir)
        self._every_sink.append(sink)  # a reload's removed sinks keep their counts in totals
        return sink

    def _settings(self) -> loader.Settings:
        limits = self.config.limits
        floor, cap = dns_ttl_s(limits)
        return loader.Settings(
            parse_size(limits.ring_size),
            limits.allowed_per_sec,
            limits.allowed_burst,
            dns_ttl_floor_s=floor,
            dns_ttl_cap_s=cap,
            fold_window_ns=fold_window_ns(limits),
        )

    def start(self) -> None:
        """Everything up, or nothing: a failure undoes what this call started."""
        try:
            self._start()
        except BaseException:
            plane = getattr(self, "plane", None)
            if plane is not None:
                _unpin_made(plane)
            with contextlib.suppress(Exception):
                self._stack.close()
            raise
        self.reporter.ready = True

    def _start(self) -> None:
        opts, stack = self.options, self._stack
        privileges.require()
        heap.keep_freed_memory()
        scope = cgroup.resolve(opts.scope) if opts.scope else cgroup.root()
        statics = self._statics()
        settings = self._settings()
        control.check_free(opts.control_socket)
        self._sinks = build_sinks(opts.sinks, self._build_sink)
        stack.callback(shutdown, self._sinks)  # the reloader keeps this list current
        sinks = [sink for _, sink in self._sinks]
        self.metrics = MetricsServer(opts.metrics, self._snapshot) if opts.metrics else None
        if self.metrics:
            stack.callback(self.metrics.close)

        self.plane = loader.load(opts.pin_root, scope, settings)
        stack.callback(self.plane.close)
        self.enforcer = Enforcer(self.plane, self.policies)
        self.enforcer.apply_policies(self.policies)
        self.backstop = Backstop(self.plane)
        self._recover_backstops()

        self.pump = self._pipeline(sinks)
        self.fanout = self.pump.fanout
        self._deliver_old_ring()
        self._enable_program_stats()
        info = AgentInfo(
            self.host_name,
            opts.pin_root,
            opts.control_socket,
            opts.metrics,
            self._started,
            os.getpid(),
        )
        if self.config.containers:  # an engine away at start is retried, never a refusal
            self.watch = self._container_watch(self.config.containers)
        self.reporter = Reporter(
            info,
            self.plane,
            self.enforcer,
            self.pump,
            self.fanout,
            self.backstop,
            self._dns_status,
            self.container_names,
            self.watch,
        )
        audit = AuditTrail(self.fanout.publish_controls, self.host_name, self.container_names)
        self.commands = Commands(
            self.enforcer,
            self.pump,
            self.fanout,
            self.reporter.status,
            lambda: self.reloader.policies(),
            lambda actor: self.reloader.reload(actor),
            self.config.containers,
            self.watch.engine if self.watch else None,
            stack,
            self.backstop,
            audit,
            self.container_names,
            self.reporter.entry,
        )
        for target in statics:  # before the socket opens: no request sees them half done
            self.commands.enroll(target, Actor.agent("config"))
        self.reloader = Reloader(
            opts.origin,
            opts.checked,
            self._sinks,
            self._build_sink,
            self.names,
            self.enforcer,
            self.fanout,
            self.commands,
        )
        self.control = control.ControlServer(opts.control_socket, self.commands)
        stack.callback(self.control.close)
        self._spawn("pump", lambda: self.pump.run(self.stop_event))
        if self.watch:
            watch = self.watch
            self._spawn("containers", lambda: watch.run(self.stop_event))
        self._up.set()

    def _recover_backstops(self) -> None:
        """After a restart: the backstop again on containers enrolled before it."""
        ids = [e.container_id for e in self.enforcer.enrolled() if e.container_id]
        if not ids or self.backstop.why_not is not None:
            return
        spec = self.config.containers
        try:
            engine = Engine(
                spec.engine if spec else os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE
            )
        except EngineError as exc:  # degraded, not a refusal: the watch covers them later
            log.warning("backstop not recovered now: %s", exc)
            return
        try:
            self.backstop.recover(ids, engine.find)
        finally:
            engine.close()

    def _container_watch(self, spec: Containers) -> ContainerWatch:
        # Bound late: the watcher starts only after the commands exist.
        ops = Ops(
            lambda target, c, why: self.commands.enroll(target, Actor.agent(why), None, c),
            lambda cgroup_id, why: self.commands.unenroll(cgroup_id, Actor.agent(why)),
            self.enforcer.enrolled,
            lambda name, expected: self.commands.expect(name, expected),
            lambda name: self.commands.unexpect(name),
            self.enforcer.expected,
        )
        mkdir = self.plane.tracing.get("nl_cgroup_mkdir", "not loaded")
        return ContainerWatch(
            spec,
            ops,
            lambda: set(self.policies.named()),
            None if mkdir == "attached" else mkdir,
            self.plane.scope.path,
        )

    def _pipeline(self, sinks: Sequence[Sink]) -> Pump:
        """ring -> decoder -> enrichers -> fan-out -> sinks, not yet running."""
        decoder = Decoder(self.names.rule, self.names.policy, self.host_name)
        self.dns_decoder = DnsDecoder(decoder)
        labels = self.plane.labels.lookup
        losses = LossLedger(
            self.plane, decoder.now, self.host_name, lambda cg: attribution_of(labels(cg))
        )
        losses.add_source(
            "spool_evicted",
            lambda: sum(int(status_of(s).get("evicted_records", 0)) for s in self._every_sink),
        )
        for history in (s.history for s in sinks if s.history):
            recent = map(parse_item, last_lines(history.path))
            losses.recover(i for i in recent if isinstance(i, Gap))
        fanout = Fanout(sinks, QUEUE_RECORDS, decoder.now, losses.count)
        self._stack.callback(fanout.close)
        reader = self.plane.reader()
        self._stack.callback(reader.close)
        answers = self.plane.dns_reader()
        self._stack.callback(answers.close)
        self.dns = DnsEnricher()
        restored = self.dns.load(self._dns_state(), boot_ns())
        if restored:
            log.info("DNS cache: %d live entries restored from %s", restored, self._dns_state())

        def flags(container_id: str) -> ContainerFlags | None:
            return self.watch.flags(container_id) if self.watch else None

        enrichers: list[Enricher] = [
            AttributionEnricher(labels, flags, self.container_names),
            self.dns,
            ProcessEnricher(),
        ]
        return Pump(
            reader,
            decoder,
            enrichers,
            fanout,
            losses,
            self._already_written(sinks, reader),
            answers,
            flush_folds=self.plane.flush_folds,
        )

    def _dns_status(self) -> dict[str, Any]:
        with self.pump.lock:
            cache = self.dns.stats()
        return {"cache": cache, "unreadable": dict(self.dns_decoder.unreadable)}

    def _dns_state(self) -> Path:
        return self.options.state_dir / STATE_FILE

    def _save_dns(self) -> None:
        """Expire the DNS cache and, if it changed, persist it (the write outside the lock)."""
        with self.pump.lock:
            self.dns.expire(boot_ns())
            data = self.dns.snapshot() if self.dns.changed else None
        if data is not None:
            try:
                self.options.state_dir.mkdir(parents=True, exist_ok=True)
                write_atomically(self._dns_state(), data)
            except OSError as exc:  # names survive in memory; only a restart would lose them
                log.warning("DNS cache not saved to %s: %s", self._dns_state(), exc)

    def _already_written(self, sinks: Sequence[Sink], reader: RingReader) -> set[tuple[str, int]]:
        """After a crash: (cgroup, seq) of unreleased ring records a history already holds.

        A ring a resize replaced holds such records too, before the current one's.
        """
        old = self.plane.old_ring()
        ring_bytes = self.plane.ring_bytes + (old.size if old else 0)
        if old:
            old.close()
        elif not reader.pending_bytes():
            return set()
        capacity = ring_bytes // span(ctypes.sizeof(abi.Event))
        return set().union(*(s.history.recent_keys(capacity) for s in sinks if s.history))

    def _deliver_old_ring(self) -> None:
        old = self.plane.old_ring()
        if old is None:
            return
        with old:
            written = self.pump.deliver_old_ring(old, OLD_RING_SECONDS)
        if written:
            self.plane.drop_old_ring()
        else:
            log.warning("records of the replaced ring are not written yet; the next start retries")

    def _snapshot(self) -> Snapshot:
        if not getattr(self, "reporter", None) or not self.reporter.ready:
            raise RuntimeError("the agent is still starting")
        return self.reporter.snapshot()

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
        self._save_dns()
        for sink in self.fanout.sinks():
            _quietly(sink.force_flush, f"flush sink {sink.name}")
        self._stack.close()  # sinks shut down, ring reader and plane closed; pins stay
        return self.pump.read

    def on_sighup(self) -> None:
        if self._up.is_set():
            self.reloader.on_signal()
        else:
            log.warning("SIGHUP while starting: ignored; send it again once the agent runs")

    def _housekeeping(self) -> None:
        """Forget cgroups that are gone, enrolled or retired (their ids never decide again),
        and container names long unenrolled; expire and persist the DNS cache."""
        for cgroup_id in self.enforcer.gone():
            self.commands.forget(cgroup_id, Actor.agent("cgroup_gone"))
            log.info("forgot cgroup id %d: its cgroup is gone", cgroup_id)
        self.container_names.trim({e.container_id for e in self.enforcer.enrolled()})
        self._save_dns()


def _quietly(action: Callable[[], None], what: str) -> None:
    """Shutdown goes on past a sink's failure: it is logged, and the exit stays 0."""
    try:
        action()
    except Exception as exc:
        log.warning("cannot %s: %s", what, exc)


def _unpin_made(plane: Plane) -> None:
    """Undo the pins of a start that failed: links it attached and maps it created.

    A start that took over pinned links leaves every pin as it found it.
    """
    if plane.report.swapped:
        return
    root = plane.pin_root
    for name in plane.report.attached:
        pins.link_path(root, name).unlink(missing_ok=True)
    for name in plane.report.created:
        pins.map_path(root, name).unlink(missing_ok=True)
    for directory in (root / "links", root / "maps", root):
        with contextlib.suppress(OSError):  # not empty: pins this start did not make
            directory.rmdir()
