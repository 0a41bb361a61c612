"""The ring walk on hand-made regions: uniform fast path, in-flight, discarded, mixed sizes."""

from __future__ import annotations

import struct

from netlogger.kernel.ringbuf import BUSY, DISCARD, HEADER, scan, span


def record(payload: bytes, flags: int = 0) -> bytes:
    body = payload + bytes(span(len(payload)) - HEADER - len(payload))
    return struct.pack("II", len(payload) | flags, 0) + body


def test_uniform_region_takes_the_fast_path() -> None:
    recs = [bytes([i]) * 120 for i in range(5)]
    region = b"".join(record(r) for r in recs)
    batch, used = scan(region, 120)
    assert (used, batch.uniform, list(batch)) == (len(region), 120, recs)
    assert batch.starts == range(HEADER, len(region), 128)


def test_stops_at_a_record_in_flight() -> None:
    region = record(b"a" * 120) + record(b"b" * 120, BUSY) + record(b"c" * 120)
    for size in (0, 120):
        batch, used = scan(region, size)
        assert (list(batch), used) == ([b"a" * 120], 128)


def test_skips_discarded_and_reads_other_sizes() -> None:
    region = (
        record(b"a" * 120) + record(b"x" * 120, DISCARD) + record(b"short") + record(b"b" * 120)
    )
    batch, used = scan(region, 120)
    assert batch.uniform == 0
    assert list(batch) == [b"a" * 120, b"short", b"b" * 120]
    assert used == len(region)


def test_empty_and_partial_header() -> None:
    assert scan(b"", 120)[1] == 0
    batch, used = scan(record(b"a" * 120) + b"\x00\x00", 120)
    assert (len(batch), used) == (1, 128)


def test_a_record_cut_off_by_a_read_limit_waits_for_the_next_read() -> None:
    region = record(b"a" * 120) + record(b"short") + record(b"b" * 120)
    batch, used = scan(region[: 128 + 16 + 100], 120)
    assert (list(batch), used) == ([b"a" * 120, b"short"], 128 + 16)
