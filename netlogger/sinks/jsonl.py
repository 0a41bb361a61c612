"""JSON lines on disk, rotated by size, kept to a count: the agent's local history.

The sink outlives what its file system does to it. Each batch is one write(2)
of whole lines; when the file system stops it partway (ENOSPC), the torn line
is cut off again and only the records whose lines did not reach the file are
reported lost (`PartialExport`). The file is reopened at its path when it was
deleted, moved or replaced, as logging.handlers.WatchedFileHandler does. A
rotation that fails (a read-only moment) keeps writing to the current file
and tries again with the next batch. A torn last line left by a crash is cut
off before anything is appended. Rotation names files as RotatingFileHandler
does: egress.jsonl -> .1 -> .2 ...
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from netlogger.errors import UsageError
from netlogger.pipeline.decisions import Decisions
from netlogger.pipeline.record import EVENT_NAMES, Control, DnsRecord, Gap, Item, Record
from netlogger.sinks.base import PartialExport

log = logging.getLogger("netlogger.jsonl")

_AGENT_LOSSES = ("sink_failed", "queue_full")  # decision records an agent sink lost
_TAIL_BYTES = 1 << 16  # far more than one line: where a torn last line is looked for


def cut_torn_tail(fd: int) -> int:
    """Cut what follows the last newline of the file at `fd`; returns the new size."""
    size = os.fstat(fd).st_size
    if not size:
        return 0
    start = max(0, size - _TAIL_BYTES)
    tail = os.pread(fd, size - start, start)
    whole = start + tail.rfind(b"\n") + 1 if b"\n" in tail else start
    if whole != size:
        os.ftruncate(fd, whole)
    return whole


class JsonlSink:
    name = "jsonl"
    durable = True  # the agent releases ring space only after this sink has written

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path = path
        self.history = self  # its file is the agent's history (`tail --since`, crash recovery)
        self.max_bytes = max_bytes
        self.keep = keep
        self._encoder = msgspec.json.Encoder()
        self._fd = -1
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._size = 0
        self._torn = False  # a failed write may have left a partial line
        self.written = 0
        try:  # refuses a start whose file cannot be opened
            path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except OSError as exc:
            raise UsageError(f"cannot open the JSONL file {path}: {exc.strerror}") from None

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            size = cut_torn_tail(fd)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._close()
        self._fd, self._file, self._size, self._torn = fd, (st.st_dev, st.st_ino), size, False

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd, self._file = -1, None

    def _watch(self) -> None:
        """Reopen at the path unless the file there is still the one this sink has open."""
        try:
            st = os.stat(self.path)
            here: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            here = None
        if self._fd < 0 or here != self._file:
            if self._fd >= 0:
                log.warning("jsonl: %s was deleted or replaced; reopening it", self.path)
            self._open()
        elif self._torn:
            self._size, self._torn = cut_torn_tail(self._fd), False

    def _rotate(self) -> None:
        names = [
            self.path,
            *(self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.keep + 1)),
        ]
        try:
            for older, newer in reversed(list(itertools.pairwise(names))):
                if older.exists():
                    os.replace(older, newer)
        except OSError as exc:  # keep the current file; the next batch tries again
            log.warning("jsonl: cannot rotate %s: %s; writing on to it", self.path, exc)
            return
        self._open()

    def export(self, batch: Sequence[Item]) -> None:
        if not batch:
            return
        if isinstance(batch, Decisions):
            data = batch.json_lines(self._encoder)
        else:
            data = self._encoder.encode_lines(batch)
        self._watch()
        if self.keep and self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        self._write(data)
        self.written += len(batch)

    def _write(self, data: bytes) -> None:
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                done += os.write(self._fd, view[done:])
        except OSError as exc:
            whole = data.rfind(b"\n", 0, done) + 1
            self._size += whole
            self._torn = True
            with contextlib.suppress(OSError):  # else cut before the next write
                self._size, self._torn = cut_torn_tail(self._fd), False
            taken = data.count(b"\n", 0, whole)
            self.written += taken
            raise PartialExport(taken, exc) from exc
        self._size += done

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path), "written": self.written}

    def recent_keys(self, max_lines: int) -> set[tuple[str, int]]:
        """(cgroup, seq) of the records among the file's last `max_lines` lines.

        After a crash the ring still holds what the last agent read but did not
        release; those records can repeat, and at most a ring's worth of them.
        Records this sink reported lost (its own sink_failed / queue_full gaps) count
        as held too: they are accounted for, and writing them now would count them twice.
        """
        if not self.path.exists():
            return set()
        with self.path.open("rb") as f:
            recent = collections.deque(f, maxlen=max_lines)
        keys: set[tuple[str, int]] = set()
        for item in map(parse_item, recent):
            if isinstance(item, Record):
                keys.add((item.cgroup_id, item.seq))
            elif isinstance(item, Gap):
                keys.update(self._lost_here(item))
        return keys

    def _lost_here(self, gap: Gap) -> Iterator[tuple[str, int]]:
        """(cgroup, seq) of the records this sink reported lost in `gap`."""
        if gap.gap_kind not in _AGENT_LOSSES or gap.gap_sink != self.name:
            return
        first, last = gap.gap_seq_first, gap.gap_seq_last
        if gap.cgroup_id is None or first is None or last is None:
            return
        for seq in range(first, last + 1):
            yield gap.cgroup_id, seq

    def force_flush(self, timeout: float = 5.0) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)

    def shutdown(self) -> None:
        try:
            self.force_flush()
        finally:
            self._close()


def last_lines(path: Path, nbytes: int = _TAIL_BYTES) -> list[bytes]:
    """The whole lines among the last `nbytes` of the file (none when it is missing)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - nbytes))
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.splitlines(keepends=True)
    if size > nbytes and lines:
        lines = lines[1:]  # it began mid-line
    return [line for line in lines if line.endswith(b"\n")]


def history_files(path: Path) -> list[Path]:
    """The current file and its rotated predecessors, oldest first."""
    rotated = sorted(
        path.parent.glob(path.name + ".*"),
        key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0,
    )
    return [p for p in reversed(rotated) if p.suffix[1:].isdigit()] + (
        [path] if path.exists() else []
    )


def read_lines(path: Path) -> Iterator[bytes]:
    """Every line of the history, oldest first; a torn last line is skipped."""
    for file in history_files(path):
        with file.open("rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    yield line


_KINDS: dict[str, type[Item]] = {
    EVENT_NAMES["gap"]: Gap,
    EVENT_NAMES["dns"]: DnsRecord,
    EVENT_NAMES["control"]: Control,
}


def parse_item(line: bytes) -> Item | None:
    """A history line back into a Record, DnsRecord, Gap or Control; None if it is none of them."""
    try:
        data = msgspec.json.decode(line)
        item: Item = msgspec.convert(data, _KINDS.get(data.get("event.name"), Record))
        return item
    except (msgspec.DecodeError, msgspec.ValidationError, AttributeError):
        return None
