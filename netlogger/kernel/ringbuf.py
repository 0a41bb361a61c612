"""Drain a BPF ring buffer in batches, straight from its memory mapping.

libbpf's ring_buffer__poll calls back once per record; from Python that costs
a ctypes transition per record. The ring is a documented memory layout, so
this reader maps it and walks it itself: one copy of the committed region,
one consumer-position store per batch.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (ours to
write); page 1 the producer position; then the data area, mapped twice in a
row so any region up to the ring's size is contiguous. Each record has an
8-byte header: u32 length with BUSY (not yet committed) and DISCARD bits, u32
page offset; records start 8-byte aligned.
"""

from __future__ import annotations

import ctypes
import mmap
import select
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

BUSY = 1 << 31
DISCARD = 1 << 30
HEADER = 8

# Native formats ("Q", not "=Q") read a field with one aligned load, where
# standard-size formats go byte by byte and could see a position half-updated.
_u64 = struct.Struct("Q")
_u32 = struct.Struct("I")


def span(length: int) -> int:
    """Ring bytes a record of `length` takes, header included."""
    return (length + HEADER + 7) & ~7


@dataclass(frozen=True)
class Batch:
    """Records drained in one pass: the copied ring region and where each record starts.

    When every record has the same length (`uniform`), starts are evenly spaced
    and a decoder can unpack the whole region in one call.
    """

    data: bytes
    starts: Sequence[int]
    uniform: int = 0  # the common record length, or 0 when they differ

    def __len__(self) -> int:
        return len(self.starts)

    def __iter__(self) -> Iterator[bytes]:
        data = self.data
        if self.uniform:
            size = self.uniform
            return (data[s : s + size] for s in self.starts)
        return (data[s : s + _u32.unpack_from(data, s - HEADER)[0]] for s in self.starts)


def _uniform_prefix(region: bytes, length: int) -> int:
    """How many leading records carry exactly `length` with neither BUSY nor DISCARD set.

    Headers sit at a fixed stride, so each of their four bytes is checked for the whole
    region at once with a strided slice: C speed, no Python step per record.
    """
    step = span(length)
    count = len(region) // step
    expected = length.to_bytes(4, "little")
    for lane in range(4):
        column = region[lane : count * step : step]
        count = min(count, len(column) - len(column.lstrip(expected[lane : lane + 1])))
    return count


def scan(region: bytes, record_size: int = 0) -> tuple[Batch, int]:
    """The committed records at the start of `region`, and how many bytes they span.

    Stops at the first record still in flight (BUSY), or that does not fit whole in
    `region`; skips discarded ones.
    """
    starts: list[int] | range = []
    offset = 0
    if record_size:
        step = span(record_size)
        offset = _uniform_prefix(region, record_size) * step
        starts = range(HEADER, offset, step)
        if offset == len(region):
            return Batch(region, starts, record_size), offset
    starts = list(starts)
    while offset + HEADER <= len(region):
        length = _u32.unpack_from(region, offset)[0]
        if length & BUSY:
            break  # a producer reserved this and has not submitted yet
        if offset + span(length & ~DISCARD) > len(region):
            break  # cut off by a read limit: the next read starts with it
        if not length & DISCARD:
            starts.append(offset + HEADER)
        offset += span(length & ~DISCARD)
    return Batch(region, starts), offset


class RingReader:
    """Reads committed records from a BPF_MAP_TYPE_RINGBUF map fd. Not thread-safe.

    `record_size` names the length most records have, which enables the uniform
    fast path; records of other lengths are still read, one step each.

    Reading and releasing are separate: `drain(release=False)` reads ahead and
    leaves the records in the ring until `release(position)`, so a reader that
    dies before its records are safely stored leaves them for the next one.
    """

    def __init__(self, map_fd: int, size: int, record_size: int = 0) -> None:
        self.size = size
        self.record_size = record_size
        self._mask = size - 1
        page = mmap.PAGESIZE
        self._page = page
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        # One 8-byte store per update. struct.pack_into zero-fills before it writes, and a
        # consumer position of 0, even for an instant, tells producers the ring is full.
        self._consumer_pos = ctypes.c_uint64.from_buffer(self._consumer)
        self._data = mmap.mmap(
            map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)
        self.position = self._consumer_pos.value  # where the next drain starts reading

    def _producer(self) -> int:
        return int(_u64.unpack_from(self._data, 0)[0])

    def pending_bytes(self) -> int:
        return self._producer() - self.position

    def drain(self, release: bool = True, max_bytes: int = 0) -> Batch:
        """Every committed record not read yet (or those within the next `max_bytes`
        ring bytes), oldest first.

        With `release`, their space in the ring is freed at once; without, it stays
        taken until `release()` is called with a position at or past them.
        """
        # Never read behind what is released: another consumer may have moved it on.
        start, prod = max(self.position, self._consumer_pos.value), self._producer()
        at = self._page + (start & self._mask)
        if max_bytes and self.record_size:  # whole records: the batch stays uniform
            max_bytes = max(max_bytes - max_bytes % span(self.record_size), span(self.record_size))
        size = min(prod - start, max_bytes) if max_bytes else prod - start
        batch, consumed = scan(self._data[at : at + size], self.record_size)
        self.position = start + consumed
        if release:
            self.release(self.position)
        return batch

    def release(self, position: int) -> None:
        """Free the ring up to `position` (a value `position` had after some drain)."""
        if position > self._consumer_pos.value:
            self._consumer_pos.value = position

    def wait(self, timeout: float) -> bool:
        """Block until the kernel signals new records or `timeout` seconds pass."""
        if self.pending_bytes():
            return True
        return bool(self._epoll.poll(timeout))

    def close(self) -> None:
        del self._consumer_pos  # releases its export of the mapping, so it can close
        self._epoll.close()
        self._consumer.close()
        self._data.close()

    def __enter__(self) -> RingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
