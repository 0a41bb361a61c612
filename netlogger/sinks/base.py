"""The sink contract, after the OpenTelemetry SDK's exporters.

The caller owns failures: it logs and counts an exception from a sink and
goes on with the next batch and the other sinks. A sink that took the first
part of a batch before it failed says how much with `PartialExport`, so only
the rest is counted lost.

What the agent asks of every sink beyond the SDK's three calls:
- `durable`: the agent releases ring space only once every durable sink has
  taken the records, so a crash leaves what a durable sink lacks in the ring;
- `status()`: the sink's own state, merged into `status` and the metrics
  (a `state` key, when present, is the sink's state; `evicted_records`
  counts what it had to drop);
- `history`: a record history the agent can read back (`tail --since`, and
  after a crash what is already written), or None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from netlogger.pipeline.record import Item


class History(Protocol):
    """Records kept on disk as JSON lines, oldest first."""

    path: Path

    def recent_keys(self, max_lines: int) -> set[tuple[str, int]]: ...


class PartialExport(Exception):
    """The sink took the first `taken` items of the batch, then failed with `cause`."""

    def __init__(self, taken: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause} (after {taken} records)")
        self.taken = taken
        self.cause = cause


class Reportable(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


class Sink(Protocol):
    name: str
    durable: bool

    @property
    def history(self) -> History | None: ...

    def status(self) -> Mapping[str, Any] | Reportable: ...

    def export(self, batch: Sequence[Item]) -> None: ...

    def force_flush(self, timeout: float = 5.0) -> None: ...

    def shutdown(self) -> None: ...


def status_of(sink: Sink) -> dict[str, Any]:
    state = sink.status()
    return dict(state) if isinstance(state, Mapping) else state.as_dict()
