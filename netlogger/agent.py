"""`netlogger run`: the host agent.

Start-up checks everything it can before it touches the kernel (privileges,
cgroups, sinks, the control socket), then: load or take over the pinned
plane -> apply policies and static enrollments -> start the pipeline
(pump -> fan-out -> sinks), the control socket, metrics and the container
watcher. SIGTERM or SIGINT: stop reading, flush every sink, release what was
written, exit 0. Enforcement stays pinned the whole time.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from netlogger import control, privileges
from netlogger.config.check import Checked
from netlogger.config.model import Sink as SinkSpec
from netlogger.containers import DEFAULT_ENGINE, Container, Engine
from netlogger.doctor import AF_PACKET_NOTE
from netlogger.enforce import Enforcer, Enrolled, Target
from netlogger.errors import KernelError, UsageError
from netlogger.kernel import abi, cgroup, libbpf, loader
from netlogger.kernel.ringbuf import span
from netlogger.metrics import MetricsServer, Snapshot
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.enrich import Enricher, attribution_of
from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.losses import KernelLosses
from netlogger.pipeline.pump import Pump
from netlogger.pipeline.record import GAP_KINDS, Record
from netlogger.sinks import factory
from netlogger.sinks.jsonl import JsonlSink
from netlogger.tail import Filter, cutoff, history, parse_item
from netlogger.units import parse_duration, parse_size

log = logging.getLogger("netlogger.agent")

QUEUE_RECORDS = 200_000  # per sink
HOUSEKEEPING_SECONDS = 5.0
VERSION = "0.1.0"


@dataclass(frozen=True)
class RunOptions:
    checked: Checked
    scope: str | None
    pin_root: Path
    control_socket: Path
    metrics: str | None
    sinks: list[SinkSpec]
    state_dir: Path = Path("/var/lib/netlogger")


def _has_net_raw(cg: Path) -> bool:
    """Does any task in `cg` or below hold CAP_NET_RAW (and so could open AF_PACKET)?"""
    for procs in cg.rglob("cgroup.procs"):
        for pid in procs.read_text().split():
            with contextlib.suppress(OSError):
                caps = privileges.effective(Path(f"/proc/{pid}/status"))
                if caps >> privileges.CAP_NET_RAW & 1:
                    return True
    return False


class Agent:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.config = options.checked.config
        self.policies = options.checked.policies
        self.host_name = socket.gethostname()
        self.stop_event = threading.Event()
        self._ops = threading.Lock()  # one enforcement change at a time
        self._started = time.time()
        self._threads: list[threading.Thread] = []
        self._stack = ExitStack()
        self.engine: Engine | None = None

    # -- lifecycle --------------------------------------------------------

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

        by_id = self.policies.by_id()
        self.decoder = Decoder(
            self._rule_name,
            lambda pid: by_id[pid].name if pid in by_id else f"unknown({pid})",
            self.host_name,
        )
        self.enricher = Enricher(self.plane.labels.lookup)
        self.fanout = Fanout(sinks, QUEUE_RECORDS, self.decoder.now)
        stack.callback(self.fanout.close)
        losses = KernelLosses(
            self.plane,
            self.decoder.now,
            self.host_name,
            lambda cg: attribution_of(self.plane.labels.lookup(cg)),
        )
        reader = self.plane.reader()
        stack.callback(reader.close)
        self.pump = Pump(
            reader,
            self.decoder,
            self.enricher,
            self.fanout,
            losses,
            self._already_written(sinks, reader),
        )
        self._enable_program_stats()
        self.control = control.ControlServer(opts.control_socket, self)
        stack.callback(self.control.close)
        self.metrics = MetricsServer(opts.metrics, self.snapshot) if opts.metrics else None
        if self.metrics:
            stack.callback(self.metrics.close)
        self._spawn("pump", lambda: self.pump.run(self.stop_event))
        if self.engine:
            self._spawn("containers", self._watch_containers)

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
                with self._ops:
                    self.pump.report_losses(only=entry.cgroup_id)
                    self.enforcer.unenroll(entry.cgroup_id)
                    self.enricher.forget(entry.cgroup_id)
                log.info("unenrolled %s: its cgroup is gone", entry.path)

    def _already_written(self, sinks: list[Any], reader: Any) -> set[tuple[str, int]]:
        """After a crash: (cgroup, seq) of ring records the JSONL file already holds.

        Only the ring's unreleased records can repeat, so only as many of the file's
        last lines as the ring can hold are read.
        """
        jsonl = next((s for s in sinks if isinstance(s, JsonlSink)), None)
        if jsonl is None or not reader.pending_bytes() or not jsonl.path.exists():
            return set()
        capacity = self.plane.ring_bytes // span(ctypes.sizeof(abi.Event))
        with jsonl.path.open("rb") as f:
            recent = collections.deque(f, maxlen=capacity)
        return {(i.cgroup_id, i.seq) for i in map(parse_item, recent) if isinstance(i, Record)}

    def _rule_name(self, rule_id: int) -> str | None:
        info = self.policies.rules.get(rule_id)
        return info.name if info else None

    # -- containers -------------------------------------------------------

    def _container_target(self, c: Container, policy: str | None = None) -> Target:
        spec = self.config.containers
        label_policy = c.labels.get(spec.policy_label) if spec else None
        chosen = policy or label_policy or (spec.default_policy if spec else "default")
        return Target(cgroup.resolve(c.cgroup), chosen, None, c.agent, c.project, c.id)

    def _watch_containers(self) -> None:
        spec, engine = self.config.containers, self.engine
        assert spec is not None and engine is not None
        while not self.stop_event.is_set():
            try:
                running = {c.id: c for c in engine.running(spec.select.label)}
                for c in running.values():
                    self._enroll_target(self._container_target(c))
                for entry in self.enforcer.enrolled():
                    if entry.container_id and entry.container_id not in running:
                        self._unenroll_id(entry.cgroup_id)
                engine.watch(
                    spec.select.label,
                    lambda c: self._enroll_target(self._container_target(c)),
                    self._container_stopped,
                    self.stop_event,
                )
            except Exception as exc:  # engine away: keep enforcing, try again shortly
                log.warning("Docker engine at %s: %s; retrying", spec.engine, exc)
                self.stop_event.wait(HOUSEKEEPING_SECONDS)

    def _container_stopped(self, container_id: str) -> None:
        for entry in self.enforcer.enrolled():
            if entry.container_id == container_id:
                self._unenroll_id(entry.cgroup_id)

    # -- control commands -------------------------------------------------

    def _enroll_target(self, target: Target) -> Enrolled:
        with self._ops:
            entry = self.enforcer.enroll(target)
            self.enricher.forget(entry.cgroup_id)
            return entry

    def _unenroll_id(self, cgroup_id: int) -> Enrolled:
        with self._ops:
            self.enforcer.get(cgroup_id)  # refuses what is not enrolled, before anything moves
            self.pump.report_losses(only=cgroup_id)
            entry = self.enforcer.unenroll(cgroup_id)
            self.enricher.forget(cgroup_id)
            return entry

    def _resolve(self, request: dict[str, Any]) -> tuple[cgroup.Cgroup, Container | None]:
        path, ref = request.get("cgroup"), request.get("container")
        if bool(path) == bool(ref):
            raise UsageError("name exactly one target: --cgroup PATH or --container ID")
        if path:
            return cgroup.resolve(path), None
        if self.engine is None:
            self.engine = Engine(os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE)
            self._stack.callback(self.engine.close)
        container = self.engine.find(str(ref))
        return cgroup.resolve(container.cgroup), container

    def handle(self, request: dict[str, Any]) -> Any:
        op = request["op"]
        if op == "status":
            return self.status()
        cg, container = self._resolve(request)
        if op == "enroll":
            if container:
                target = self._container_target(container, request.get("policy"))
                target = Target(
                    target.cgroup,
                    target.policy,
                    request.get("mode"),
                    request.get("agent") or target.agent,
                    request.get("project") or target.project,
                    target.container_id,
                )
            else:
                target = Target(
                    cg,
                    request.get("policy") or "default",
                    request.get("mode"),
                    request.get("agent") or "",
                    request.get("project") or "",
                )
            return asdict(self._enroll_target(target))
        if op == "unenroll":
            return asdict(self._unenroll_id(cg.id))
        if op == "bypass":
            try:
                seconds = parse_duration(str(request.get("for") or ""))
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            with self._ops:
                return asdict(self.enforcer.bypass(cg.id, seconds))
        if op == "enforce":
            with self._ops:
                return asdict(self.enforcer.enforce(cg.id))
        raise UsageError(f"unknown command {op!r}")

    def stream(
        self, request: dict[str, Any], write: Callable[[bytes], None], closed: Callable[[], bool]
    ) -> None:
        accept = Filter.from_request(request)
        since = cutoff(request.get("since"))
        jsonl = next((s for s in self.fanout.sinks() if isinstance(s, JsonlSink)), None)
        if since and jsonl is None:
            raise UsageError(
                "--since reads the agent's JSONL history, and this agent has no "
                "jsonl sink; add one to its config"
            )
        encode = msgspec.json.Encoder().encode
        sub = self.fanout.subscribe(accept)
        try:
            sent: set[tuple[str, int]] = set()
            if since and jsonl is not None:
                for item in history(jsonl.path, since, accept):
                    if isinstance(item, Record):
                        sent.add((item.cgroup_id, item.seq))
                    write(encode(item) + b"\n")
            while not closed():
                items = sub.next_items(0.5)
                if items is None:
                    break
                lines = [
                    encode(i) + b"\n"
                    for i in items
                    if not (isinstance(i, Record) and (i.cgroup_id, i.seq) in sent)
                ]
                if lines:
                    write(b"".join(lines))
        finally:
            self.fanout.unsubscribe(sub)

    # -- reporting --------------------------------------------------------

    def _losses(self) -> dict[str, int]:
        out = dict.fromkeys(GAP_KINDS, 0) | self.pump.losses.totals
        out["queue_full"] = sum(lane.dropped for lane in self.fanout.stats())
        out["undecodable"] = sum(self.decoder.skipped.values())
        out["spool_evicted"] = sum(
            int(state.get("evicted_records", 0)) for state in self._sink_states().values()
        )
        return out

    def _sink_states(self) -> dict[str, dict[str, Any]]:
        """What sinks with a delivery state of their own (OTLP) say about it."""
        return {s.name: s.status().as_dict() for s in self.fanout.sinks() if hasattr(s, "status")}

    def status(self) -> dict[str, Any]:
        enrolled = []
        for entry in self.enforcer.enrolled():
            item = asdict(entry)
            item["raw_capable"] = bool(entry.path) and _has_net_raw(Path(entry.path))
            enrolled.append(item)
        states = self._sink_states()
        return {
            "agent": {
                "pid": os.getpid(),
                "version": VERSION,
                "host": self.host_name,
                "uptime_s": round(time.time() - self._started, 1),
                "pin_root": str(self.options.pin_root),
                "scope": str(self.plane.scope.path),
                "control_socket": str(self.options.control_socket),
                "metrics": self.options.metrics,
            },
            "enrolled": enrolled,
            "records": {"read": self.pump.read, "by_action": _by_action(self.pump.counts)},
            "losses": self._losses(),
            "ring": {
                "size": self.plane.ring_bytes,
                "pending_bytes": self.pump.reader.pending_bytes(),
                "cpu_ringbuf_lost": self.pump.losses.per_cpu_ring_losses(),
            },
            "sinks": [
                {**asdict(lane), **states.get(lane.name, {})} for lane in self.fanout.stats()
            ],
            "tail_subscribers": self.fanout.subscribers(),
            "notes": [AF_PACKET_NOTE],
        }

    def snapshot(self) -> Snapshot:
        try:
            programs = self.plane.program_stats()
        except KernelError:
            programs = {}
        states = {
            name: str(s.get("state", ""))
            for name, s in self._sink_states().items()
            if s.get("state")
        }
        return Snapshot(
            records=dict(self.pump.counts),
            losses=self._losses(),
            lanes=self.fanout.stats(),
            sink_states=states,
            programs=programs,
            enrolled=len(self.enforcer.enrolled()),
            ring_pending_bytes=self.pump.reader.pending_bytes(),
            ring_size_bytes=self.plane.ring_bytes,
            subscribers=self.fanout.subscribers(),
        )


def _by_action(counts: dict[tuple[str, str], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (_event, action), n in counts.items():
        out[action] = out.get(action, 0) + n
    return out
