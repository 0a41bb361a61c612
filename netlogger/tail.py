"""`tail` in the agent: what a client asked to see, from history and then live.

Filters run in the agent, so a client receives only what it asked for. Gap
records pass the action filter (a lost deny is news to someone filtering on
denies) but not a filter on another agent, project or container. `--dst-host`
matches a decision's `dst_host` and a DNS answer's question name.

With `--since`, the stream starts with the history a sink keeps (the JSONL
file) and goes on with the live feed; a record in both is sent once.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from netlogger.errors import UsageError
from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.record import DnsRecord, Gap, Item
from netlogger.sinks.base import Sink
from netlogger.sinks.jsonl import parse_item, read_lines
from netlogger.units import parse_duration

POLL_SECONDS = 0.5  # how often a quiet stream checks whether its client is still there

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
        if self.dst_host is None:
            return True
        name = item.qname if isinstance(item, DnsRecord) else item.dst_host
        return fnmatch.fnmatch(name or "", self.dst_host)


def cutoff(since: str | None) -> str | None:
    """The oldest record timestamp `--since DUR` asks for, as record timestamps sort."""
    if not since:
        return None
    try:
        seconds = parse_duration(since)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - seconds)) + ".000000000Z"


def history(path: Path, since: str, accept: Filter) -> Iterator[Item]:
    """Items from the JSONL history at or after `since` that pass the filter, oldest first."""
    for line in read_lines(path):
        if line[line.find(b'"ts":"') + 6 :][:30].decode(errors="replace") < since:
            continue  # cheap pre-check on the timestamp before a full parse
        item = parse_item(line)
        if item is not None and item.ts >= since and accept(item):
            yield item


def history_path(sinks: Sequence[Sink]) -> Path | None:
    """The file of the first sink that keeps a history, if any does."""
    return next((s.history.path for s in sinks if s.history is not None), None)


def serve(
    request: dict[str, Any],
    fanout: Fanout,
    write: Callable[[bytes], None],
    closed: Callable[[], bool],
) -> None:
    """Stream what `request` asks for to `write` until `closed()` or the fan-out closes."""
    accept = Filter.from_request(request)
    since = cutoff(request.get("since"))
    path = history_path(fanout.sinks())
    if since and path is None:
        raise UsageError(
            "--since reads the agent's JSONL history, and this agent has no "
            "jsonl sink; add one to its config"
        )
    encode = msgspec.json.Encoder().encode
    sub = fanout.subscribe(accept)
    try:
        sent: set[tuple[str, int]] = set()
        if since and path is not None:
            for item in history(path, since, accept):
                if not isinstance(item, Gap):
                    sent.add((item.cgroup_id, item.seq))
                write(encode(item) + b"\n")
        if request.get("follow") is False:
            return  # history only: `policy suggest` reads it and is done
        while not closed():
            items = sub.next_items(POLL_SECONDS)
            if items is None:
                break
            lines = [
                encode(i) + b"\n"
                for i in items
                if isinstance(i, Gap) or (i.cgroup_id, i.seq) not in sent
            ]
            if lines:
                write(b"".join(lines))
    finally:
        fanout.unsubscribe(sub)
