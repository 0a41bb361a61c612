"""The OTLP logs sink: every record to the collector's trusted lane, nothing lost to an outage.

    export(batch) --encode--> spool (on disk, bounded) --sender thread--> OTLP/gRPC + mTLS
                  encode.py      spool.py                              wire.py

`export` only encodes and appends, so the agent's reader never waits on the network. One
sender thread sends the oldest spooled segment, deletes it when the collector acknowledged
it, and on failure backs off exponentially (with jitter) and then probes with an empty export
request (half-open) before replaying the backlog in order. Delivery is at least once: a
segment whose acknowledgement was lost is sent again, and every record carries a stable
`record_id` (see encode.py) so downstream can drop the duplicate.

The wire is the OpenTelemetry SDK's gRPC log exporter (endpoint, TLS credentials, headers,
compression, deadline, channel re-creation). What the sink bypasses is the SDK's per-record
machinery: records are encoded straight to protobuf bytes (encode.py) and the exporter is
handed an already serialized request, because building SDK LogRecords and protobuf objects
per record is what limits throughput. The exporter's own retries are switched off: the
spool owns retrying.

States (`status().state`):
    up        the last request succeeded and nothing is waiting beyond the next batch
    degraded  the last request succeeded and a backlog is being replayed
    spooling  the collector is unreachable or refused us; records wait on disk
    down      shut down, or the spool cannot be written (records are being lost)
"""

from __future__ import annotations

import importlib.metadata
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource

from netlogger.config.model import OtlpSink
from netlogger.errors import StateError
from netlogger.pipeline.record import EVENT_NAMES, Gap, Item
from netlogger.sinks.base import History
from netlogger.sinks.otlp import encode, wire
from netlogger.sinks.otlp.settings import Settings
from netlogger.sinks.otlp.settings import from_config as settings_from_config
from netlogger.sinks.otlp.spool import DNS_SPAN_PREFIX, Span, Spans, Spool, spans_of

log = logging.getLogger(__name__)

SERVICE_NAME = "ebpf-egress"  # the collector routes this name to the clawker-ebpf-egress index
SCOPE_NAME = "netlogger"


@dataclass(frozen=True)
class Status:
    state: str  # up / degraded / spooling / down
    endpoint: str
    spooled_records: int
    spooled_bytes: int
    sent_records: int
    evicted_records: int
    failures: int  # consecutive failed requests
    last_error: str  # one line; "" until something fails

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_config(cfg: OtlpSink, host_name: str, state_dir: Path) -> OtlpExportSink:
    """Validate the sink's config, then open its spool and start its sender.

    Raises UsageError (a bad value: names the key and what to do) or StateError (the spool is
    unusable or in use) before any thread starts.
    """
    return OtlpExportSink(settings_from_config(cfg, state_dir), host_name)


def _version() -> str:
    try:
        return importlib.metadata.version("netlogger")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _resource(host_name: str) -> bytes:
    # Resource.create adds the SDK's telemetry.sdk.* and OTEL_RESOURCE_ATTRIBUTES; ours win,
    # so service.name cannot be redirected to another index by the environment.
    identity: dict[str, Any] = {
        "service.name": SERVICE_NAME,
        "service.version": _version(),
        "host.name": host_name,
    }
    machine_id = _machine_id()
    if machine_id:
        identity["host.id"] = machine_id
    return encode.resource(dict(Resource.create(identity).attributes))


def _machine_id() -> str:
    try:
        return Path("/etc/machine-id").read_text().strip()
    except OSError:
        return ""


class OtlpExportSink:
    name = "otlp"
    durable = False  # its own spool keeps what the collector has not acknowledged
    history: History | None = None

    def __init__(self, settings: Settings, host_name: str) -> None:
        self.settings = settings
        self._encoder = encode.LogEncoder(host_name)
        self._host_name = host_name
        self._resource = _resource(host_name)
        self._scope = encode.scope(SCOPE_NAME, _version())
        self._spool = Spool(
            settings.spool_dir,
            settings.spool_max_bytes,
            settings.segment_bytes,
            frames=encode.frames,
            gap_entries=self._gap_entries,
            spans_from_data=encode.spans_from_data,
        )
        try:
            self._exporter = wire.Exporter(settings)
        except BaseException:
            self._spool.close()  # release the spool's lock for whoever tries next
            raise
        self._chunk = max(1, settings.segment_bytes // 2048)  # records per append
        self._state = "spooling"  # nothing confirmed yet
        self._failures = 0
        self._sent = 0
        self._last_error = ""
        self._grpc_error = ""  # the last failure as gRPC put it
        self._evictions_logged = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netlogger-otlp", daemon=True)
        self._thread.start()

    # -- the Sink protocol -------------------------------------------------------------------

    def export(self, batch: Sequence[Item]) -> None:
        """Encode and spool; returns without touching the network."""
        if self._stop.is_set():
            raise StateError("otlp sink: export after shutdown")
        observed = time.time_ns()
        for start in range(0, len(batch), self._chunk):
            chunk = batch[start : start + self._chunk]
            entries = self._encoder.encode(chunk, observed)
            try:
                self._spool.append(entries, len(chunk), spans_of(chunk))
            except OSError as exc:
                self._state, self._last_error = "down", f"spool: {exc}"
                raise StateError(f"otlp sink: cannot spool records: {exc}") from exc
        self._report_evictions()

    def force_flush(self, timeout: float = 5.0) -> None:
        """Wait up to `timeout` for the spool to drain (it will not while the collector is away)."""
        self._spool.wake()
        self._spool.wait_empty(timeout)

    def shutdown(self) -> None:
        """Stop the sender; unsent records stay in the spool for the next start."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._spool.wake()
        self._exporter.shutdown()  # closes the channel: an in-flight request ends now
        self._thread.join()
        self._spool.close()
        self._state = "down"

    def status(self) -> Status:
        records, size, segments = self._spool.figures()
        state = self._state
        if state == "up" and segments > 1:
            state = "degraded"
        return Status(
            state=state,
            endpoint=self.settings.endpoint,
            spooled_records=records,
            spooled_bytes=size,
            sent_records=self._sent,
            evicted_records=self._spool.evicted_records,
            failures=self._failures,
            last_error=self._last_error,
        )

    # -- sending -----------------------------------------------------------------------------

    def _run(self) -> None:
        probe = wire.Request(encode.request(self._resource, self._scope, b""), 0)
        self._send(probe)  # learn at once whether the collector is there
        while not self._stop.is_set():
            # After a failure: wait out the backoff, then a half-open probe; if that fails too,
            # back off further.
            if self._failures and (self._stop.wait(self._backoff()) or not self._send(probe)):
                continue
            taken = self._spool.take(timeout=1.0)
            if taken is None:
                continue
            segment, entries = taken
            request = encode.request(self._resource, self._scope, entries)
            if self._send(wire.Request(request, segment.count)):
                self._spool.ack(segment)
                self._sent += segment.count
            else:
                self._spool.release(segment)

    def _backoff(self) -> float:
        settings = self.settings
        # The exponent is capped: a day-long outage must not overflow the float.
        doublings = min(self._failures - 1, 62)
        base = min(settings.retry_max, settings.retry_initial * 2.0**doublings)
        return base * random.uniform(0.8, 1.2)

    def _send(self, request: wire.Request) -> bool:
        if self._stop.is_set():
            return False
        if self._exporter.send(request):
            self._delivered()
            return True
        if not self._stop.is_set():
            self._failed(wire.describe(self._exporter.outcome.error))
        return False

    def _delivered(self) -> None:
        if self._state != "up":
            records, _, _ = self._spool.figures()
            log.info(
                "otlp: delivering to %s; %d spooled records to replay",
                self.settings.endpoint,
                records,
            )
        self._state, self._failures, self._evictions_logged = "up", 0, False
        self._grpc_error = ""
        response = self._exporter.outcome.response
        rejected = response.partial_success.rejected_log_records if response else 0
        if rejected:
            self._last_error = f"collector rejected {rejected} records: " + (
                response.partial_success.error_message if response else ""
            )
            log.warning("otlp: %s", self._last_error)

    def _failed(self, error: str) -> None:
        if error != self._grpc_error:
            # Something new went wrong: find out why, in words, once (not on every probe).
            self._grpc_error = error
            why = wire.diagnose(self.settings)
            self._last_error = f"{why} ({error})" if why else error
            log.warning(
                "otlp: cannot deliver to %s: %s; spooling to %s",
                self.settings.endpoint,
                self._last_error,
                self.settings.spool_dir,
            )
        self._state = "spooling"
        self._failures += 1

    # -- evictions ---------------------------------------------------------------------------

    def _evicted_gap(self, key: str | None, span: Span) -> Gap:
        dns = bool(key and key.startswith(DNS_SPAN_PREFIX))
        return Gap(
            event_name=EVENT_NAMES["gap"],
            ts=span.ts,
            gap_kind="dns_spool_evicted" if dns else "spool_evicted",
            gap_count=span.count,
            gap_seq_first=span.seq_first,
            gap_seq_last=span.seq_last,
            gap_sink=self.name,
            cgroup_id=key.removeprefix(DNS_SPAN_PREFIX) if key else key,
            host_name=self._host_name,
        )

    def _gap_entries(self, spans: Spans) -> tuple[bytes, int]:
        gaps = [self._evicted_gap(key, span) for key, span in spans.items()]
        return self._encoder.encode(gaps, time.time_ns()), len(gaps)

    def _report_evictions(self) -> None:
        # Once per outage: the count keeps growing in status() and the gap records.
        lost = self._spool.take_evicted()
        if lost and not self._evictions_logged:
            self._evictions_logged = True
            log.warning(
                "otlp: spool %s reached its cap (%d bytes): evicted the %d oldest records "
                "(a spool_evicted gap record stands in for them)",
                self.settings.spool_dir,
                self.settings.spool_max_bytes,
                lost,
            )
