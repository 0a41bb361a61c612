"""Durable delivery against a real receiver that goes away: order, no loss, eviction, crash."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from monitor.certs import CertPaths
from netlogger.pipeline.record import Record
from netlogger.sinks.otlp import OtlpExportSink
from tests.otlp.conftest import MakeSink
from tests.otlp.receiver import Receiver, attributes, wait_until
from tests.otlp.records import HOST, decision

REPO = Path(__file__).resolve().parents[2]
REFERENCE_BREAKER_FAILURES = 3  # the reference exporter gives up for good after this many


def received_ids(receiver: Receiver) -> list[str]:
    return [str(attributes(rec)["record_id"]) for rec in receiver.records()]


def assert_all_in_order(receiver: Receiver, sent: list[Record]) -> None:
    """Every record arrived, in order; a repeat is only a resend of the identical record."""
    ids = received_ids(receiver)
    first_seen = list(dict.fromkeys(ids))
    assert first_seen == [f"{HOST}:{r.cgroup_id}:{r.seq}:{r.bpf_ts_ns}" for r in sent]
    records = receiver.records()
    by_id = {}
    for rec in records:
        rid = attributes(rec)["record_id"]
        assert by_id.setdefault(rid, rec.SerializeToString()) == rec.SerializeToString()


def down_receiver(certs: CertPaths) -> Receiver:
    """A receiver that has a port but is not listening (yet)."""
    receiver = Receiver(certs).start()
    receiver.stop()
    return receiver


def test_an_outage_longer_than_the_reference_breaker_loses_nothing(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    sink = make_sink(receiver.port)
    sent = [decision(seq) for seq in range(100)]
    sink.export(sent[:20])
    # Acknowledged, not just received: a stop between the two makes a (marked) resend.
    assert wait_until(lambda: sink.status().sent_records == 20)

    receiver.stop()
    for start in range(20, 100, 10):
        sink.export(sent[start : start + 10])
    assert wait_until(lambda: sink.status().failures > REFERENCE_BREAKER_FAILURES + 2)
    status = sink.status()
    assert status.state == "spooling"
    assert status.spooled_records == 80 and status.spooled_bytes > 0
    assert status.sent_records == 20

    receiver.start()  # same port
    assert receiver.wait_for(100)
    sink.force_flush(20)
    assert_all_in_order(receiver, sent)
    status = sink.status()
    assert list(status.as_dict()) == [
        "state", "endpoint", "spooled_records", "spooled_bytes", "sent_records",
        "evicted_records", "failures", "last_error",
    ]  # fmt: skip
    assert (status.state, status.spooled_records, status.spooled_bytes) == ("up", 0, 0)
    assert status.sent_records == 100 and status.failures == 0


def test_the_agent_starts_without_a_collector_and_delivers_when_it_appears(
    certs: CertPaths, make_sink: MakeSink
) -> None:
    receiver = down_receiver(certs)
    sink = make_sink(receiver.port)  # no error: the collector is simply not there yet
    sent = [decision(seq) for seq in range(30)]
    sink.export(sent)
    assert wait_until(lambda: sink.status().failures >= 1)
    assert sink.status().state == "spooling"
    assert sink.status().last_error.startswith("cannot connect: Connection refused (")
    receiver.start()
    try:
        assert receiver.wait_for(30)
        assert_all_in_order(receiver, sent)
    finally:
        receiver.stop()


def test_a_full_spool_evicts_the_oldest_and_a_gap_says_how_many(
    certs: CertPaths, make_sink: MakeSink
) -> None:
    receiver = down_receiver(certs)
    cap = 64 * 1024
    sink = make_sink(receiver.port, spool_max_bytes=cap)
    # Two cgroups interleaved, so each gets its own gap with its own count and range.
    sent = [decision(seq // 2, cgroup_id=("11", "22")[seq % 2]) for seq in range(600)]
    for start in range(0, len(sent), 20):
        sink.export(sent[start : start + 20])
    status = sink.status()
    assert status.evicted_records > 0
    assert status.spooled_bytes <= cap
    receiver.start()
    try:
        assert wait_until(lambda: sink.status().spooled_records == 0)
        got = receiver.records()
    finally:
        receiver.stop()

    gaps = [attributes(r) for r in got if r.event_name == "ebpf.egress.gap"]
    kept = [attributes(r) for r in got if r.event_name != "ebpf.egress.gap"]
    # The gaps come first, where the evicted (oldest) records were; the rest follow in order.
    assert [r.event_name for r in got[: len(gaps)]] == ["ebpf.egress.gap"] * len(gaps)
    assert [(a["cgroup_id"], a["seq"]) for a in kept] == [
        (r.cgroup_id, r.seq) for r in sent[len(sent) - len(kept) :]
    ]
    assert len(gaps) == 2  # consecutive evictions merge into one gap per cgroup
    for gap in gaps:
        cgroup = gap["cgroup_id"]
        lost = [r for r in sent[: len(sent) - len(kept)] if r.cgroup_id == cgroup]
        assert gap["gap.kind"] == "spool_evicted"
        assert gap["gap.sink"] == "otlp"
        assert gap["gap.count"] == len(lost)
        assert (gap["gap.seq_first"], gap["gap.seq_last"]) == (lost[0].seq, lost[-1].seq)
        assert gap["ts"] == lost[0].ts
        assert gap["host.name"] == HOST
    assert sum(g["gap.count"] for g in gaps) == status.evicted_records
    assert status.evicted_records + len(kept) == len(sent)


def test_shutdown_keeps_the_spool_and_the_next_start_replays_it(
    certs: CertPaths, make_sink: MakeSink, tmp_path: Path
) -> None:
    receiver = down_receiver(certs)
    spool = tmp_path / "kept"
    sink = make_sink(receiver.port, spool)
    sent = [decision(seq) for seq in range(40)]
    sink.export(sent)
    sink.shutdown()
    assert sink.status().state == "down"
    assert sink.status().spooled_records == 40
    receiver.start()
    try:
        make_sink(receiver.port, spool)
        assert receiver.wait_for(40)
        assert_all_in_order(receiver, sent)
    finally:
        receiver.stop()


def test_kill_9_while_spooling_then_restart_replays_the_spool(
    certs: CertPaths, make_sink: MakeSink, tmp_path: Path
) -> None:
    receiver = down_receiver(certs)
    spool = tmp_path / "crash"
    certs_dir = certs.ca_cert.parent.parent
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.otlp.spool_driver", str(spool), str(receiver.port),
         str(certs_dir), "100000"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert driver.stdout is not None
        spooled = 0
        while spooled < 2000:  # kill it mid-stream, while it is still exporting
            line = driver.stdout.readline()
            assert line.startswith("spooled "), line
            spooled = int(line.split()[1])
        driver.send_signal(signal.SIGKILL)
        assert driver.wait(10) == -signal.SIGKILL
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        if driver.stdout:
            driver.stdout.close()

    receiver.start()
    try:
        sink: OtlpExportSink = make_sink(receiver.port, spool)
        assert wait_until(lambda: sink.status().spooled_records == 0)
        ids = received_ids(receiver)
    finally:
        receiver.stop()
    seqs = [int(rid.split(":")[2]) for rid in dict.fromkeys(ids)]
    # Everything acknowledged as spooled came back, in order, and nothing out of thin air.
    assert len(seqs) >= spooled
    assert seqs == list(range(len(seqs)))
    assert all(count == 1 for count in Counter(ids).values())


def test_backoff_stays_at_its_cap_through_a_long_outage() -> None:
    # Thousands of failures in a row (hours of outage) once overflowed 2.0 ** n.
    from types import SimpleNamespace

    from netlogger.sinks.otlp import OtlpExportSink

    state = SimpleNamespace(
        settings=SimpleNamespace(retry_initial=0.5, retry_max=30.0), _failures=5000
    )
    delay = OtlpExportSink._backoff(state)  # type: ignore[arg-type]  # only the two fields it reads
    assert 24.0 <= delay <= 36.0
