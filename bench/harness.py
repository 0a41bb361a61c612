"""What every kernel benchmark stands on: a sandboxed plane with a permissive policy.

A network namespace pair, a scope cgroup of its own and a pin root of its own,
all removed on the way out; children of the scope are enrolled on request.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from netlogger import heap, sandbox
from netlogger.config.check import check_source
from netlogger.config.source import parse
from netlogger.enforce import Enforcer, Target
from netlogger.enrich.dns import DnsEnricher
from netlogger.kernel import cgroup, loader, pins
from netlogger.kernel.cgroup import Cgroup
from netlogger.kernel.plane import Plane
from netlogger.kernel.ringbuf import RingReader
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.dnsdecode import DnsDecoder
from netlogger.pipeline.enrich import AttributionEnricher, Enricher, ProcessEnricher
from netlogger.pipeline.pump import BATCH_BYTES
from netlogger.pipeline.record import RingItem
from netlogger.policy.compile import PolicySet
from netlogger.sinks.jsonl import JsonlSink
from netlogger.workload import Workload

# A ring big enough for a whole round, and every record kept: nothing throttled or folded.
UNTHROTTLED = loader.Settings(ring_bytes=64 << 20, allowed_per_sec=0, fold_window_ns=0)
POLICY = "policies:\n  bench:\n    allow:\n      - {cidr: 198.18.0.0/24, ports: [5000]}\n"


@dataclass
class Bench:
    net: sandbox.Net
    scope: Cgroup
    plane: Plane
    policies: PolicySet
    enforcer: Enforcer
    stack: ExitStack
    tag: str

    def child(self, name: str, enroll: bool = True, **labels: str) -> Cgroup:
        cg = self.stack.enter_context(sandbox.cgroup(self.scope, name))
        if enroll:
            self.enforcer.enroll(Target(cg, "bench", **labels))
        return cg

    def outside(self, name: str) -> Cgroup:
        """A cgroup beside the scope: no program ever runs for it."""
        return self.stack.enter_context(sandbox.cgroup(cgroup.root(), f"{name}-{self.tag}"))

    def workload(self, cg: Cgroup) -> Workload:
        return self.stack.enter_context(Workload(self.net.workload_ns, cg.path))


def arguments(doc: str, **defaults: int) -> argparse.Namespace:
    """`--name N` for each default, with the module docstring's first line as help."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, value in defaults.items():
        parser.add_argument(f"--{name}", type=int, default=value)
    return parser.parse_args()


@contextmanager
def bench_plane(settings: loader.Settings = UNTHROTTLED, policy: str = POLICY) -> Iterator[Bench]:
    """`policy`: a config text whose policy `bench` enrolled children get."""
    tag = uuid.uuid4().hex[:8]
    policies = check_source(parse(policy, "bench")).policies
    with ExitStack() as stack:
        net = stack.enter_context(sandbox.network(tag))
        scope = stack.enter_context(sandbox.cgroup(cgroup.root(), f"nlbench-{tag}"))
        pin_root = Path(f"/sys/fs/bpf/nlbench-{tag}")
        stack.callback(pins.teardown, pin_root)
        plane = stack.enter_context(loader.loaded(pin_root, scope, settings))
        enforcer = Enforcer(plane, policies)
        enforcer.apply_policies(policies)
        yield Bench(net, scope, plane, policies, enforcer, stack, tag)


def rates(
    rounds: int, records: int, fill: Callable[[], object], movers: dict[str, Callable[[], int]]
) -> dict[str, list[float]]:
    """Records/s of each mover, each round refilling the ring before every mover runs."""
    out: dict[str, list[float]] = {name: [] for name in movers}
    for _ in range(rounds):
        for name, move in movers.items():
            fill()
            start = time.perf_counter()
            moved = move()
            elapsed = time.perf_counter() - start
            assert moved == records, (name, moved)
            out[name].append(records / elapsed)
    return out


def agent_pipeline(
    bench: Bench,
    out: Path,
    dns: bool = False,
    publish: Callable[[Sequence[RingItem]], None] | None = None,
) -> Callable[[RingReader], int]:
    """The agent's decode -> enrich -> JSONL (a file in `out`) on one thread, with the
    agent's heap settings, batch size and enrichers (attribution, process, DNS names):
    each call moves what `ring` holds and says how many records it moved. `dns` adds
    the DNS answer decoder (the DNS enricher is always there, as in the agent);
    `publish` takes each batch instead of the JSONL sink (the agent's fan-out)."""
    heap.keep_freed_memory()
    policies = bench.policies
    if publish is None:
        sink = JsonlSink(out / "egress.jsonl", 1 << 30, 2)
        bench.stack.callback(sink.shutdown)
        publish = sink.export
    by_id = policies.by_id()
    decoder = Decoder(
        lambda r: policies.rules[r].name if r in policies.rules else None,
        lambda p: by_id[p].name,
        "bench-host",
    )
    enrichers: list[Enricher] = [
        AttributionEnricher(bench.plane.labels.lookup),
        ProcessEnricher(),
        DnsEnricher(),
    ]
    if dns:
        DnsDecoder(decoder)

    def move(ring: RingReader) -> int:
        moved = 0
        while ring.pending_bytes():
            records = decoder.decode_batch(ring.drain(max_bytes=BATCH_BYTES))
            for enricher in enrichers:
                enricher.enrich(records)
            publish(records)
            moved += len(records)
        return moved

    return move
