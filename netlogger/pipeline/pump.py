"""The reader: ring -> decode -> enrich -> fan-out, on one thread.

Ring space is released only as far as the durable sink has written (see
fanout.py). After a crash the next agent re-reads what the last one had read
but not released; `already_written` names those records so they are not
written twice.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from netlogger.kernel.ringbuf import RingReader
from netlogger.pipeline.decode import Decoder
from netlogger.pipeline.enrich import Enricher
from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.losses import KernelLosses
from netlogger.pipeline.record import EVENT_NAMES, Gap, Record

log = logging.getLogger("netlogger.pump")

POLL_SECONDS = 0.02  # the longest a lone record waits: the kernel wakes us only for batches
LOSS_CHECK_SECONDS = 1.0


class Pump:
    def __init__(
        self,
        reader: RingReader,
        decoder: Decoder,
        enricher: Enricher,
        fanout: Fanout,
        losses: KernelLosses,
        already_written: set[tuple[str, int]] | None = None,
    ) -> None:
        self.reader = reader
        self.decoder = decoder
        self.enricher = enricher
        self.fanout = fanout
        self.losses = losses
        self._skip = already_written or set()
        self.read = 0  # records taken from the ring and handed on
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._undecodable_reported = 0
        self.lock = threading.Lock()  # held while a batch is in flight; control ops take it

    def _fresh(self, records: list[Record]) -> list[Record]:
        if not self._skip:
            return records
        fresh = [r for r in records if (r.cgroup_id, r.seq) not in self._skip]
        self._skip.difference_update((r.cgroup_id, r.seq) for r in records)
        return fresh

    def step(self) -> int:
        """Move one batch from the ring to the sinks; returns how many records moved."""
        with self.lock:
            batch = self.reader.drain(release=False)
            records = self._fresh(self.decoder.decode_all(batch))
            enrich = self.enricher.enrich
            for record in records:
                enrich(record)
            self.counts.update((r.event_name, r.action) for r in records)
            self.read += len(records)
            if records or len(batch):
                self.fanout.publish(records, self.reader.position)
            released = self.fanout.released_position(self.reader.position)
            if released >= 0:
                self.reader.release(released)
            return len(records)

    def report_losses(self, only: int | None = None) -> None:
        gaps = self.losses.collect(only)
        skipped = sum(self.decoder.skipped.values())
        if skipped > self._undecodable_reported:
            gaps.append(
                Gap(
                    event_name=EVENT_NAMES["gap"],
                    ts=self.decoder.now(),
                    gap_kind="undecodable",
                    gap_count=skipped - self._undecodable_reported,
                    host_name=self.decoder.host_name,
                )
            )
            self._undecodable_reported = skipped
        self.fanout.publish_gaps(gaps)

    def run(self, stop: threading.Event) -> None:
        next_check = time.monotonic() + LOSS_CHECK_SECONDS
        while not stop.is_set():
            self.reader.wait(POLL_SECONDS)
            try:
                self.step()
                if time.monotonic() >= next_check:
                    self.report_losses()
                    self.decoder.resync_clock()
                    next_check = time.monotonic() + LOSS_CHECK_SECONDS
            except Exception:  # one bad batch must not end the agent
                log.exception("pump step failed; continuing")
        self.report_losses()

    def release_all(self) -> None:
        """After the sinks are flushed: free what the durable sink has written."""
        released = self.fanout.released_position(self.reader.position)
        if released >= 0:
            self.reader.release(released)
