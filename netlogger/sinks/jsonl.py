"""JSON lines on disk, rotated by size, kept to a count: the agent's local history.

The rotation itself is the standard library's (RotatingFileHandler renames
egress.jsonl -> .1 -> .2 ...); this sink only decides when, writing whole
batches so a line is never split across files.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator, Sequence
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

import msgspec

from netlogger.pipeline.record import EVENT_NAMES, Gap, Item, Record


class JsonlSink:
    name = "jsonl"
    durable = True  # the agent releases ring space only after this sink has written

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path = path
        self.history = self  # its file is the agent's history (`tail --since`, crash recovery)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._files = RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=keep, encoding="utf-8"
        )
        self._encoder = msgspec.json.Encoder()
        self.written = 0

    def export(self, batch: Sequence[Item]) -> None:
        if not batch:
            return
        data = self._encoder.encode_lines(batch)
        # Bytes go to the binary layer under the handler's text stream: nothing is
        # ever written through the text layer, and UTF-8 JSON needs no re-encoding.
        stream = self._files.stream.buffer
        if stream.tell() and stream.tell() + len(data) > self._files.maxBytes:
            self._files.doRollover()
            stream = self._files.stream.buffer
        stream.write(data)
        stream.flush()
        self.written += len(batch)

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path), "written": self.written}

    def recent_keys(self, max_lines: int) -> set[tuple[str, int]]:
        """(cgroup, seq) of the records among the file's last `max_lines` lines.

        After a crash the ring still holds what the last agent read but did not
        release; those records can repeat, and at most a ring's worth of them.
        """
        if not self.path.exists():
            return set()
        with self.path.open("rb") as f:
            recent = collections.deque(f, maxlen=max_lines)
        return {(i.cgroup_id, i.seq) for i in map(parse_item, recent) if isinstance(i, Record)}

    def force_flush(self, timeout: float = 5.0) -> None:
        self._files.stream.buffer.flush()
        os.fsync(self._files.stream.fileno())

    def shutdown(self) -> None:
        self.force_flush()
        self._files.close()


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


def parse_item(line: bytes) -> Item | None:
    """A history line back into a Record or Gap; None if it is neither."""
    try:
        data = msgspec.json.decode(line)
        if data.get("event.name") == EVENT_NAMES["gap"]:
            return msgspec.convert(data, Gap)
        return msgspec.convert(data, Record)
    except (msgspec.DecodeError, msgspec.ValidationError, AttributeError):
        return None
