"""The reader: ring -> decode -> enrichers, in order -> fan-out, on one thread.

Repeats the kernel folds (bpf/emit.bpf.c) reach the ring with a decision's
next record, or when the pump runs the kernel's flush: at least once a
second, and once more on stop before the last drain, so no count is left
behind in the kernel.

Ring space is released only as far as the durable sink has written (see
fanout.py). After a crash the next agent re-reads what the last one had read
but not released; `already_written` names those records so they are not
written twice. Losses go through the one ledger (losses.py); their gaps are
marked reported only once the durable sinks have written them.

DNS answers come in a ring of their own (`answers`), drained on the same
thread after each batch of decisions is read and before it is enriched: the
kernel records an answer before the workload can read it, so every answer a
decision in the batch depends on is already in that drain, and the DNS
enricher sees it first. The DNS ring is released as soon as it is decoded:
an answer's lasting effect is the cache (persisted, see enrich/dns.py), and
the DNS records themselves are history, not proof of a decision.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from netlogger.kernel.ringbuf import Batch, RingReader
from netlogger.pipeline.decisions import tally
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.enrich import Enricher
from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.losses import Report
from netlogger.pipeline.record import Gap, RingItem

log = logging.getLogger("netlogger.pump")

POLL_SECONDS = 0.02  # the longest a lone record waits: the kernel wakes us only for batches
LOSS_CHECK_SECONDS = 1.0
FLUSH_SECONDS = 0.5  # folded repeats wait at most this (plus a poll) for the kernel's flush
# Ring bytes read per step (about 7,000 decisions): a batch's JSON text then stays a few
# megabytes, in cache and in the heap kept for reuse (heap.py), where a whole ring's
# worth was hundreds of megabytes, each page a fault.
BATCH_BYTES = 1 << 20


class Ring(Protocol):
    """What the pump reads from (kernel.ringbuf.RingReader)."""

    position: int

    def drain(self, release: bool = True, max_bytes: int = 0) -> Batch: ...

    def release(self, position: int) -> None: ...

    def wait(self, timeout: float) -> bool: ...

    def pending_bytes(self) -> int: ...


class Losses(Protocol):
    """The loss ledger (pipeline.losses.LossLedger)."""

    def collect(self, only: int | None = None, undecodable: int = 0) -> Report: ...

    def count(self, gaps: Sequence[Gap]) -> None: ...

    def totals(self) -> dict[str, int]: ...

    def forget(self, cgroup_id: int) -> None: ...

    def per_cpu_ring_losses(self) -> int: ...

    def kernel_no_state(self) -> int: ...


class Pump:
    def __init__(
        self,
        reader: Ring,
        decoder: Decoder,
        enrichers: Sequence[Enricher],
        fanout: Fanout,
        losses: Losses,
        already_written: set[tuple[str, int]] | None = None,
        answers: Ring | None = None,
        flush_folds: Callable[[], None] = lambda: None,
    ) -> None:
        self.reader = reader
        self.answers = answers
        self.decoder = decoder
        self.enrichers = tuple(enrichers)
        self.fanout = fanout
        self.losses = losses
        self.flush_folds = flush_folds
        self._skip = already_written or set()
        self.read = 0  # records taken from the ring and handed on
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.lock = threading.Lock()  # held while a batch is in flight; control ops take it

    def _fresh(self, records: Sequence[RingItem]) -> Sequence[RingItem]:
        if not self._skip:
            return records
        fresh = [r for r in records if (r.cgroup_id, r.seq) not in self._skip]
        self._skip.difference_update((r.cgroup_id, r.seq) for r in records)
        return fresh

    def _take(self, batch: Batch, answers: Batch | None = None) -> list[Sequence[RingItem]]:
        """The batch's DNS answers (when any), then its decisions, decoded and enriched."""
        parts: list[Sequence[RingItem]] = []
        if answers is not None and len(answers):
            parts.append(self.decoder.decode_all(answers))
        parts.append(self._fresh(self.decoder.decode_batch(batch)))
        for enricher in self.enrichers:
            for part in parts:
                enricher.enrich(part)
        for part in parts:
            self.counts.update(tally(part))
            self.read += len(part)
        return parts

    def step(self) -> int:
        """Move one batch from the ring to the sinks; returns how many records moved."""
        with self.lock:
            batch = self.reader.drain(release=False, max_bytes=BATCH_BYTES)
            answers = self.answers.drain() if self.answers is not None else None
            *answered, decisions = self._take(batch, answers)
            for part in answered:
                self.fanout.publish(part)
            if decisions or len(batch):
                self.fanout.publish(decisions, self.reader.position)
            released = self.fanout.released_position(self.reader.position)
            if released >= 0:
                self.reader.release(released)
            return len(decisions) + sum(map(len, answered))

    def deliver_old_ring(self, old: RingReader, timeout: float) -> bool:
        """Hand on what a replaced ring (another `ring_size`) still holds; True once written."""
        with self.lock:
            (decisions,) = self._take(old.drain(release=False))
            self.fanout.publish(decisions)
        return self.fanout.settled(timeout)

    def forget(self, cgroup_id: int) -> None:
        """The enrollment of `cgroup_id` changed: no enricher may answer from its cache."""
        for enricher in self.enrichers:
            enricher.forget(cgroup_id)

    def report_losses(self, only: int | None = None) -> None:
        """Gaps for new losses; control commands call this too, so it takes the lock."""
        with self.lock:  # the decoder's counts change only under it
            report = self.losses.collect(only, sum(self.decoder.skipped.values()))
            self.fanout.publish_gaps(report.gaps, report.commit)

    def unknown_enums(self) -> dict[str, int]:
        """Records per field that held a value this agent cannot name."""
        with self.lock:
            return dict(self.decoder.unknown)

    def run(self, stop: threading.Event) -> None:
        next_check = time.monotonic() + LOSS_CHECK_SECONDS
        next_flush = time.monotonic() + FLUSH_SECONDS
        while not stop.is_set():
            self.reader.wait(POLL_SECONDS)
            try:
                if time.monotonic() >= next_flush:
                    self.flush_folds()
                    next_flush = time.monotonic() + FLUSH_SECONDS
                self.step()
                if time.monotonic() >= next_check:
                    self.report_losses()
                    self.decoder.resync_clock()
                    next_check = time.monotonic() + LOSS_CHECK_SECONDS
            except Exception:  # one bad batch must not end the agent
                log.exception("pump step failed; continuing")
        self.flush_folds()
        self.catch_up()
        self.report_losses()

    def catch_up(self) -> None:
        """Step until what the ring held when called is read (not what comes after:
        the programs go on deciding while the agent stops)."""
        end = self.reader.position + self.reader.pending_bytes()
        while self.reader.position < end:
            before = self.reader.position
            self.step()
            if self.reader.position == before:
                return  # a record still in flight: nothing more to read now

    def release_all(self) -> None:
        """After the sinks are flushed: free what the durable sink has written."""
        released = self.fanout.released_position(self.reader.position)
        if released >= 0:
            self.reader.release(released)
