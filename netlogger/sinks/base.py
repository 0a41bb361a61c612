"""The sink contract, after the OpenTelemetry SDK's exporters.

The caller owns failures: it logs and counts an exception from a sink and
goes on with the next batch and the other sinks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from netlogger.pipeline.record import Item


class Sink(Protocol):
    name: str

    def export(self, batch: Sequence[Item]) -> None: ...

    def force_flush(self, timeout: float = 5.0) -> None: ...

    def shutdown(self) -> None: ...
