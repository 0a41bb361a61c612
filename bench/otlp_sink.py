"""Records per second through the OTLP sink to a local mTLS receiver, against the plain SDK.

    python3 bench/otlp_sink.py [--records N] [--batch B]

Both paths run in this process pinned to one core (gRPC's threads included) and send to the
same receiver, which runs in its own process on another core when there is one:

* sink: `OtlpExportSink.export(batch)` for every batch, then until the spool is empty
  (encoded, spooled to disk, sent, acknowledged);
* SDK:  LoggerProvider + BatchLogRecordProcessor + OTLPLogExporter, `Logger.emit` per
  record with the same attributes, severity, body and timestamps, then `force_flush`.

The figure is end to end (the receiver has counted every record) and the ratio is what to
compare across machines; the absolute rates move with whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import msgspec
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from monitor import certs as monitor_certs
from netlogger.pipeline.record import Record
from netlogger.sinks.otlp import OtlpExportSink, encode
from netlogger.sinks.otlp.settings import Settings, Tls
from tests.otlp.receiver import Receiver
from tests.otlp.records import HOST, decision

SEVERITIES = {"INFO": SeverityNumber.INFO, "WARN": SeverityNumber.WARN}


def workload(count: int) -> list[Record]:
    """A plausible mix: 4 cgroups, 8 processes, 40 destinations, 1 in 10 denied."""
    records = []
    seqs = [0, 0, 0, 0]
    for i in range(count):
        group = i % 4
        seqs[group] += 1
        denied = i % 10 == 0
        records.append(
            decision(
                seqs[group],
                cgroup_id=str(5000 + group),
                pid=3000 + i % 8,
                tid=3000 + i % 8,
                dst_ip=f"10.0.{i % 5}.{i % 8}",
                dst_port=("443", "80", "8443", "53", "22")[i % 5],
                action="denied" if denied else "allowed",
                reason="default_deny" if denied else "rule",
                rule=None if denied else "github",
                bpf_ts_ns=90_000_000_000_000 + i * 1_337,
                sock_cookie=10_000 + i,
            )
        )
    return records


def _serve(certs_dir: str, ready: Any, orders: Any) -> None:
    """The receiver process: acknowledges at once; counts records when asked."""
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[1:]))
    receiver = Receiver(monitor_certs.paths(Path(certs_dir)), parse=False).start()
    ready.send(receiver.port)
    while orders.recv() == "count":
        ready.send(receiver.count_raw())
    receiver.stop()


def run_sink(records: list[Record], batch: int, settings: Settings) -> None:
    sink = OtlpExportSink(settings, HOST)
    try:
        for start in range(0, len(records), batch):
            sink.export(records[start : start + batch])
        while sink.status().spooled_records:
            sink.force_flush(60)
    finally:
        sink.shutdown()


def run_sdk(records: list[Record], batch: int, settings: Settings) -> None:
    tls = settings.tls
    assert tls is not None
    ca, cert, key = tls.pem()
    exporter = OTLPLogExporter(
        endpoint=f"https://{settings.endpoint}",
        credentials=grpc.ssl_channel_credentials(ca, key, cert),
    )
    resource = Resource.create({"service.name": "ebpf-egress", "host.name": HOST})
    provider = LoggerProvider(resource=resource)
    # A queue as long as the run, so the SDK drops nothing and the comparison is like for like.
    provider.add_log_record_processor(
        BatchLogRecordProcessor(
            exporter, max_queue_size=len(records) + 1, max_export_batch_size=batch
        )
    )
    logger = provider.get_logger("netlogger", "bench")
    clock = encode._Clock()
    for rec in records:
        text = encode.SEVERITY[rec.action][1]
        attrs = msgspec.to_builtins(rec)
        attrs["record_id"] = encode.record_id(rec, HOST)
        logger.emit(
            timestamp=clock(rec.ts),
            observed_timestamp=time.time_ns(),
            severity_number=SEVERITIES[text],
            severity_text=text,
            body=encode.decision_body(attrs),
            attributes=attrs,
            event_name=rec.event_name,
        )
    provider.force_flush(600_000)
    provider.shutdown()


def measure(name: str, run: Callable[[], None], count: int, ask: Any, answer: Any) -> float:
    """Records/s of `run`, which returns once the receiver has acknowledged everything."""
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    ask.send("count")
    arrived = answer.recv()
    assert arrived == count, f"{name}: the receiver got {arrived} of {count} records"
    rate = count / elapsed
    print(f"{name:<5} {count:>8} records in {elapsed:6.2f} s  {rate:>10,.0f} records/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--sdk-records", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        certs = monitor_certs.generate(Path(tmp) / "monitor")
        ctx = multiprocessing.get_context("spawn")
        answer, answer_w = ctx.Pipe(duplex=False)
        ask_r, ask = ctx.Pipe(duplex=False)
        server = ctx.Process(
            target=_serve, args=(str(Path(tmp) / "monitor"), answer_w, ask_r), daemon=True
        )
        server.start()
        port = answer.recv()
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core from here on
        settings = Settings(
            host="127.0.0.1",
            port=port,
            tls=Tls(certs.ca_cert, certs.client_cert, certs.client_key),
            spool_dir=Path(tmp) / "spool",
            spool_max_bytes=4 << 30,
        )
        records = workload(args.records)
        sdk_records = records[: args.sdk_records]
        print(f"one core; batches of {args.batch}; receiver over mTLS on 127.0.0.1:{port}")
        ours = measure(
            "sink", lambda: run_sink(records, args.batch, settings), len(records), ask, answer
        )
        sdk = measure(
            "sdk", lambda: run_sdk(sdk_records, args.batch, settings), len(sdk_records), ask,
            answer,
        )  # fmt: skip
        print(f"ratio {ours / sdk:.1f}x the SDK per-record path")
        ask.send("stop")
        server.join(30)


if __name__ == "__main__":
    main()
