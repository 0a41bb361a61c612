"""What a `tail` client asked to see: filters over records and gaps, and history.

Filters run in the agent, so a client receives only what it asked for. Gap
records pass the action filter (a lost deny is news to someone filtering on
denies) but not a filter on another agent, project or container.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from netlogger.errors import UsageError
from netlogger.pipeline.record import EVENT_NAMES, Gap, Item, Record
from netlogger.sinks.jsonl import read_lines
from netlogger.units import parse_duration

ACTIONS = ("allowed", "denied", "bypassed")


@dataclass(frozen=True)
class Filter:
    actions: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    projects: frozenset[str] = frozenset()
    containers: tuple[str, ...] = ()  # id prefixes, as `docker ps` shows them
    dst_host: str | None = None  # glob

    @classmethod
    def from_request(cls, request: dict[str, Any]) -> Filter:
        actions = frozenset(request.get("action") or ())
        unknown = actions - set(ACTIONS)
        if unknown:
            raise UsageError(
                f"unknown action {sorted(unknown)[0]!r}; use one of: " + ", ".join(ACTIONS)
            )
        return cls(
            actions,
            frozenset(request.get("agent") or ()),
            frozenset(request.get("project") or ()),
            tuple(request.get("container") or ()),
            request.get("dst_host"),
        )

    def __call__(self, item: Item) -> bool:
        if self.agents and item.agent not in self.agents:
            return False
        if self.projects and item.project not in self.projects:
            return False
        if self.containers and not (
            item.container_id and item.container_id.startswith(self.containers)
        ):
            return False
        if isinstance(item, Gap):
            return self.dst_host is None
        if self.actions and item.action not in self.actions:
            return False
        return self.dst_host is None or fnmatch.fnmatch(item.dst_host or "", self.dst_host)


def cutoff(since: str | None) -> str | None:
    """The oldest record timestamp `--since DUR` asks for, as record timestamps sort."""
    if not since:
        return None
    try:
        seconds = parse_duration(since)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - seconds)) + ".000000000Z"


def parse_item(line: bytes) -> Item | None:
    """A JSONL history line back into a Record or Gap; None if it is neither."""
    try:
        data = msgspec.json.decode(line)
        kind = Gap if data.get("event.name") == EVENT_NAMES["gap"] else Record
        return msgspec.convert(data, kind)
    except (msgspec.DecodeError, msgspec.ValidationError, AttributeError):
        return None


def history(path: Path, since: str, accept: Filter) -> Iterator[Item]:
    """Items from the JSONL history at or after `since` that pass the filter, oldest first."""
    for line in read_lines(path):
        if line[line.find(b'"ts":"') + 6 :][:30].decode(errors="replace") < since:
            continue  # cheap pre-check on the timestamp before a full parse
        item = parse_item(line)
        if item is not None and item.ts >= since and accept(item):
            yield item
