"""Records kept in a list: a real sink for tests, like OpenTelemetry's InMemoryLogExporter."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from netlogger.pipeline.record import Item
from netlogger.sinks.base import History


class MemorySink:
    history: History | None = None

    def __init__(self, name: str = "memory", durable: bool = False) -> None:
        self.name = name
        self.durable = durable
        self._items: list[Item] = []
        self._batches = 0
        self._lock = threading.Lock()
        self._closed = False

    def export(self, batch: Sequence[Item]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name}: export after shutdown")
            self._items.extend(batch)
            self._batches += 1

    def items(self) -> list[Item]:
        """Everything exported so far, in export order."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"held_records": len(self._items), "batches": self._batches}

    def force_flush(self, timeout: float = 5.0) -> None:
        pass  # nothing is buffered: export stores at once

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
