"""`tail` in the agent: what a client asked to see, from history and then live.

Filters run in the agent, and the one `Filter` serves both the history and
the live feed, so a client receives only what it asked for, the same either way.
Gap records pass the filters on the verdict (action, would-deny, reason, policy:
a lost deny is news to someone filtering on denies) but not those naming a
destination, agent, project or container. Control records (the audit trail)
pass unless a filter on decisions (action, would-deny, reason, destination) is
given; a policy filter matches their policy before or after.
`--dst-host` matches a decision's `dst_host` and a DNS answer's question name;
DNS answers pass the filters on action and policy and fail the other decision ones.

With `--since`, `--last` or `--no-follow`, the stream starts with the history a
sink keeps (the JSONL file); then it follows the live feed (a record in both is
sent once), or, with `--no-follow`, ends with an end mark, so the client can
tell "that was all" from "the agent went away".
"""

from __future__ import annotations

import collections
import fnmatch
import ipaddress
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from netlogger.control.server import STOPPING
from netlogger.errors import UsageError
from netlogger.pipeline.fanout import Fanout
from netlogger.pipeline.record import Control, DnsRecord, Gap, Item, Record
from netlogger.sinks.base import Sink
from netlogger.sinks.jsonl import parse_item, read_lines
from netlogger.units import parse_duration

POLL_SECONDS = 0.5  # how often a quiet stream checks whether its client is still there

ACTIONS = ("allowed", "denied", "bypassed")
END = b'{"ok": true, "end": true}\n'  # after the history of a --no-follow stream
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _strings(request: dict[str, Any], key: str) -> frozenset[str]:
    value = request.get(key) or ()
    return frozenset([value] if isinstance(value, str | int) else value)


def _networks(values: Iterable[str]) -> tuple[Network, ...]:
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise UsageError(
                f"--dst-ip {value!r} is not an address or CIDR (e.g. 10.0.0.0/8, 2001:db8::1)"
            ) from None
    return tuple(out)


def _ports(values: Iterable[Any]) -> frozenset[str]:
    out = set()
    for value in values:
        text = str(value)
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise UsageError(f"--port {value!r} is not a port number (1-65535)")
        out.add(str(int(text)))
    return frozenset(out)


def _in(ip: str | None, nets: tuple[Network, ...]) -> bool:
    if not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == net.version and addr in net for net in nets)


@dataclass(frozen=True)
class Filter:
    actions: frozenset[str] = frozenset()
    would_deny: bool = False  # only audit-mode records that enforce would have denied
    agents: frozenset[str] = frozenset()
    projects: frozenset[str] = frozenset()
    containers: tuple[str, ...] = ()  # id prefixes, as `docker ps` shows them, or names
    dst_host: str | None = None  # glob
    dst_nets: tuple[Network, ...] = ()
    ports: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    policies: frozenset[str] = frozenset()

    @classmethod
    def from_request(cls, request: dict[str, Any], names: Mapping[str, str] = {}) -> Filter:
        actions = _strings(request, "action")
        unknown = actions - set(ACTIONS)
        if unknown:
            raise UsageError(
                f"unknown action {sorted(unknown)[0]!r}; use one of: " + ", ".join(ACTIONS)
            )
        wanted = _strings(request, "container")
        # A name also matches by the ids the agent knows under it: records written before
        # the agent learnt the name carry only the id.
        ids = tuple(cid for cid, name in names.items() if name in wanted)
        return cls(
            actions=actions,
            would_deny=bool(request.get("would_deny")),
            agents=_strings(request, "agent"),
            projects=_strings(request, "project"),
            containers=tuple(wanted) + ids,
            dst_host=request.get("dst_host"),
            dst_nets=_networks(_strings(request, "dst_ip")),
            ports=_ports(_strings(request, "port")),
            reasons=_strings(request, "reason"),
            policies=_strings(request, "policy"),
        )

    @property
    def _on_decisions(self) -> bool:
        return bool(self.actions or self.would_deny or self.reasons or self._on_destination)

    @property
    def _on_destination(self) -> bool:
        return bool(self.dst_host is not None or self.dst_nets or self.ports)

    def __call__(self, item: Item) -> bool:
        if self.agents and item.agent not in self.agents:
            return False
        if self.projects and item.project not in self.projects:
            return False
        if self.containers and not self._container(item):
            return False
        if isinstance(item, Gap):
            return not self._on_destination
        if isinstance(item, Control):
            return not self._on_decisions and (
                not self.policies or bool({item.policy_before, item.policy_after} & self.policies)
            )
        if isinstance(item, DnsRecord):
            return self._dns(item)
        return self._decision(item)

    def _dns(self, rec: DnsRecord) -> bool:
        if self.would_deny or self.reasons or self.ports or self.dst_nets:
            return False
        if self.actions and rec.action not in self.actions:
            return False
        if self.policies and rec.policy not in self.policies:
            return False
        return self.dst_host is None or fnmatch.fnmatch(rec.qname or "", self.dst_host)

    def _container(self, item: Item) -> bool:
        name = getattr(item, "container_name", None)
        if name and name in self.containers:
            return True
        return bool(item.container_id) and item.container_id.startswith(self.containers)

    def _decision(self, rec: Record) -> bool:
        if self.actions and rec.action not in self.actions:
            return False
        if self.would_deny and not rec.would_deny:
            return False
        if self.reasons and rec.reason not in self.reasons:
            return False
        if self.policies and rec.policy not in self.policies:
            return False
        if self.ports and rec.dst_port not in self.ports:
            return False
        if self.dst_nets and not _in(rec.dst_ip, self.dst_nets):
            return False
        return self.dst_host is None or fnmatch.fnmatch(rec.dst_host or "", self.dst_host)


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
        if since and line[line.find(b'"ts":"') + 6 :][:30].decode(errors="replace") < since:
            continue  # cheap pre-check on the timestamp before a full parse
        item = parse_item(line)
        if item is not None and item.ts >= since and accept(item):
            yield item


def history_path(sinks: Sequence[Sink]) -> Path | None:
    """The file of the first sink that keeps a history, if any does."""
    return next((s.history.path for s in sinks if s.history is not None), None)


def _key(item: Item) -> Hashable | None:
    """What identifies an item across history and the live feed (gaps coalesce: none)."""
    if isinstance(item, Record):
        return (item.cgroup_id, item.seq)
    if isinstance(item, DnsRecord):  # a sequence of its own
        return ("dns", item.cgroup_id, item.seq)
    if isinstance(item, Control):
        return ("control", item.ts, item.command, item.target)
    return None


def _last(request: dict[str, Any]) -> int | None:
    last = request.get("last")
    if last is None:
        return None
    if not isinstance(last, int) or isinstance(last, bool) or last < 1:
        raise UsageError(f"--last {last!r} is not a positive number of records")
    return last


def serve(
    request: dict[str, Any],
    fanout: Fanout,
    write: Callable[[bytes], None],
    closed: Callable[[], bool],
    names: Mapping[str, str] = {},
) -> None:
    """Stream what `request` asks for to `write` until `closed()` or the fan-out closes."""
    accept = Filter.from_request(request, names)
    follow = request.get("follow", True) is not False
    last = _last(request)
    since = cutoff(request.get("since"))
    path = history_path(fanout.sinks())
    wants_history = since is not None or last is not None or not follow
    if wants_history and path is None:
        flag = "--since" if since else "--last" if last is not None else "--no-follow"
        raise UsageError(
            f"{flag} reads the agent's JSONL history, and this agent has no jsonl sink; "
            "add one to its config"
        )
    encode = msgspec.json.Encoder().encode
    sub = fanout.subscribe(accept) if follow else None
    try:
        sent: set[Hashable] = set()
        if wants_history and path is not None:
            past: Iterable[Item] = history(path, since or "", accept)
            if last is not None:
                past = collections.deque(past, maxlen=last)
            for item in past:
                sent.add(_key(item))
                write(encode(item) + b"\n")
        if sub is None:
            write(END)
            return
        while not closed():
            items = sub.next_items(POLL_SECONDS)
            if items is None:  # the fan-out closed: the agent is stopping
                raise STOPPING
            lines = [encode(i) + b"\n" for i in items if (k := _key(i)) is None or k not in sent]
            if lines:
                write(b"".join(lines))
    finally:
        if sub is not None:
            fanout.unsubscribe(sub)
