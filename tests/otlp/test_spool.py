"""The spool on its own: what survives a crash at each step, and what eviction leaves."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs

from netlogger.pipeline.record import EVENT_NAMES, Gap, Record
from netlogger.sinks.otlp import encode
from netlogger.sinks.otlp.spool import Span, Spans, Spool, spans_of
from tests.otlp.receiver import attributes
from tests.otlp.records import HOST, decision

ENCODER = encode.LogEncoder(HOST)


def gap_entries(spans: Spans) -> tuple[bytes, int]:
    gaps = [
        Gap(event_name=EVENT_NAMES["gap"], ts=s.ts, gap_kind="spool_evicted", gap_count=s.count,
            gap_seq_first=s.seq_first, gap_seq_last=s.seq_last, gap_sink="otlp", cgroup_id=c)
        for c, s in spans.items()
    ]  # fmt: skip
    return ENCODER.encode(gaps, 1), len(gaps)


def open_spool(directory: Path, max_bytes: int = 1 << 30, segment_bytes: int = 4096) -> Spool:
    return Spool(
        directory,
        max_bytes,
        segment_bytes,
        frames=encode.frames,
        gap_entries=gap_entries,
        spans_from_data=encode.spans_from_data,
    )


def append(spool: Spool, records: list[Record]) -> None:
    spool.append(ENCODER.encode(records, 1), len(records), spans_of(records))


def drain(spool: Spool) -> list[dict[str, object]]:
    """Take and ack everything, as a sender would; the records' attributes in order."""
    out = []
    while taken := spool.take(timeout=0):
        segment, data = taken
        out += [attributes(r) for r in ScopeLogs.FromString(data).log_records]
        spool.ack(segment)
    return out


def test_a_torn_last_entry_is_cut_off_at_open(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    append(spool, [decision(seq) for seq in range(3)])
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    whole = segment.read_bytes()
    segment.write_bytes(whole + encode.LogEncoder(HOST).encode([decision(3)], 1)[:-5])

    reopened = open_spool(tmp_path)
    assert reopened.figures() == (3, len(whole), 1)
    assert segment.read_bytes() == whole
    append(reopened, [decision(4)])  # appends go to a new segment after the survivor
    assert [a["seq"] for a in drain(reopened)] == [0, 1, 2, 4]
    reopened.close()


def test_an_eviction_interrupted_before_unlinking_is_finished_at_open(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=1)  # one segment per append
    for seq in range(4):
        append(spool, [decision(seq)])
    spool.close()
    # The crash left a gap file for segments 1-2 next to the segments it replaces, and a
    # half-written temporary file.
    entries, _ = gap_entries({"4242": Span(2, 0, 1, decision(0).ts)})
    (tmp_path / f"{1:016d}-{2:016d}.gap").write_bytes(entries)
    (tmp_path / f"{1:016d}-{3:016d}.tmp").write_bytes(b"\x12\x7f")

    reopened = open_spool(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock") == [
        f"{1:016d}-{2:016d}.gap", f"{3:016d}.seg", f"{4:016d}.seg",
    ]  # fmt: skip
    got = drain(reopened)
    assert [(a["event.name"], a.get("gap.count"), a.get("seq")) for a in got] == [
        ("ebpf.egress.gap", 2, None),
        ("ebpf.egress.connect", None, 2),
        ("ebpf.egress.connect", None, 3),
    ]
    reopened.close()


def test_segments_from_a_previous_run_are_evicted_with_exact_gaps(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=1)
    for seq in range(6):
        append(spool, [decision(seq, cgroup_id="11"), decision(seq, cgroup_id="22")])
    spool.close()

    segment_size = (tmp_path / f"{6:016d}.seg").stat().st_size
    reopened = open_spool(tmp_path, max_bytes=3 * segment_size)  # the spans are not in memory
    append(reopened, [decision(6, cgroup_id="11")])  # over the cap: the oldest go
    got = drain(reopened)
    gaps = [a for a in got if a["event.name"] == "ebpf.egress.gap"]
    kept = [(a["cgroup_id"], a["seq"]) for a in got if a["event.name"] != "ebpf.egress.gap"]
    lost_per_cgroup = (6 * 2 + 1 - len(kept)) // 2
    assert [(g["cgroup_id"], g["gap.count"], g["gap.seq_first"], g["gap.seq_last"]) for g in gaps]\
        == [(c, lost_per_cgroup, 0, lost_per_cgroup - 1) for c in ("11", "22")]  # fmt: skip
    assert kept[0] == ("11", lost_per_cgroup)
    assert reopened.evicted_records == 2 * lost_per_cgroup
    reopened.close()


def test_spans_count_what_gap_records_stand_for() -> None:
    gap = Gap(event_name=EVENT_NAMES["gap"], ts="t", gap_kind="throttled", gap_count=10,
              gap_seq_first=5, gap_seq_last=14, cgroup_id="11")  # fmt: skip
    spans = spans_of([decision(4, cgroup_id="11"), gap, decision(15, cgroup_id="11")])
    assert spans == {"11": Span(12, 4, 15, decision(4).ts)}
    assert encode.spans_from_data(
        encode.LogEncoder(HOST).encode([decision(4, cgroup_id="11"), gap], 1)
    ) == {"11": Span(11, 4, 14, decision(4).ts)}
