"""What the agent asks of every sink (sinks/base.py), and the JSONL sink's crash recovery."""

from __future__ import annotations

import io
from pathlib import Path

import msgspec
import pytest

from netlogger import tail
from netlogger.errors import UsageError
from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.record import EVENT_NAMES, Gap, RingItem
from netlogger.sinks.base import Sink, status_of
from netlogger.sinks.console import ConsoleSink
from netlogger.sinks.jsonl import JsonlSink
from netlogger.sinks.memory import MemorySink
from netlogger.sinks.otlp import OtlpExportSink, Status
from tests.unit.ring_bytes import decoder, event


def records(*seqs: int, cgroup: int = 42) -> list[RingItem]:
    return decoder().decode_all([event(seq=s, cgroup_id=cgroup) for s in seqs])


def test_every_sink_states_durability_history_and_status(tmp_path: Path) -> None:
    jsonl = JsonlSink(tmp_path / "egress.jsonl", 1 << 20, 2)
    sinks: list[Sink] = [ConsoleSink(io.StringIO(), False), jsonl, MemorySink("mem")]
    for sink in sinks:
        sink.export(records(1, 2))
    assert [(s.name, s.durable, s.history) for s in sinks] == [
        ("console", False, None),
        ("jsonl", True, jsonl),
        ("mem", False, None),
    ]
    assert [status_of(s) for s in sinks] == [
        {"written": 2},
        {"path": str(tmp_path / "egress.jsonl"), "written": 2},
        {"held_records": 2, "batches": 1},
    ]
    assert (OtlpExportSink.durable, OtlpExportSink.history) == (False, None)
    jsonl.shutdown()


def test_otlp_status_is_a_dataclass_read_through_as_dict() -> None:
    class OtlpStatusStandIn(MemorySink):
        """Stands in for an OTLP sink's status only; its spool and wire are not under test."""

        def status(self) -> Status:  # type: ignore[override]  # a dataclass, as OTLP's is
            return Status("spooling", "collector:4317", 3, 300, 0, 1, 2, "unavailable")

    assert status_of(OtlpStatusStandIn()) == {
        "state": "spooling",
        "endpoint": "collector:4317",
        "spooled_records": 3,
        "spooled_bytes": 300,
        "sent_records": 0,
        "evicted_records": 1,
        "failures": 2,
        "last_error": "unavailable",
    }


def test_jsonl_names_the_records_it_already_holds(tmp_path: Path) -> None:
    path = tmp_path / "egress.jsonl"
    sink = JsonlSink(path, 1 << 20, 2)
    assert sink.recent_keys(10) == set()  # nothing written yet
    gap = Gap(event_name=EVENT_NAMES["gap"], ts="t", gap_kind="throttled", gap_count=1)
    sink.export([*records(1, 2, 3), gap, *records(9, cgroup=77)])
    sink.shutdown()
    with path.open("ab") as f:
        f.write(msgspec.json.encode(records(4)[0])[:40])  # a torn last line
    # The last four lines: seq 3, the gap (no record), seq 9, the torn line (no record).
    assert sink.recent_keys(4) == {("42", 3), ("77", 9)}
    assert sink.recent_keys(100) == {("42", 1), ("42", 2), ("42", 3), ("77", 9)}


def test_tail_history_comes_from_the_sink_that_keeps_one(tmp_path: Path) -> None:
    jsonl = JsonlSink(tmp_path / "egress.jsonl", 1 << 20, 2)
    assert tail.history_path([MemorySink(), jsonl]) == tmp_path / "egress.jsonl"
    assert tail.history_path([MemorySink()]) is None
    fanout = Fanout([MemorySink()], 10, lambda: "now")
    with pytest.raises(UsageError) as refused:
        tail.serve({"since": "5m"}, fanout, lambda _: None, lambda: True)
    assert str(refused.value) == (
        "--since reads the agent's JSONL history, and this agent has no jsonl sink; "
        "add one to its config"
    )
    fanout.close()
    jsonl.shutdown()


def test_a_console_line_shows_how_many_decisions_a_folded_record_stands_for() -> None:
    from netlogger.pipeline.record import TIMES
    from netlogger.sinks.console import format_record
    from tests.otlp.records import decision

    folded = decision(9, repeat_count=1200, repeat_first_ns=1, repeat_last_ns=2, repeat_seq_first=3)
    assert f"{TIMES}1200" in format_record(folded, color=False)
    assert TIMES not in format_record(decision(10), color=False)
