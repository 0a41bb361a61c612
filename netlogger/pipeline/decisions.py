"""A ring batch of decision records, decoded once per group: the agent's hot path.

Most of a decision repeats from one record to the next: who decided, where to,
the verdict, the process. Building a 50-field Record for every one of them is
what limited the agent (about 100 k records/s on this machine), so a batch keeps
the ring bytes as they came and, per record, a reference to its group: the
records of the batch with the same static bytes (who decided, the destination,
the verdict) and the same task (pid, tid, uid, gid). A group
holds one template Record with everything its records share; enrichers fill
in the template, once per group (`to_enrich`), and the JSON lines are written
from a per-group format in which only the per-record fields (`PER_RECORD`) are
formatted for each record.

To everything else a batch is a Sequence[Record]: indexing or iterating builds
each Record on demand, equal to what the JSON line says. An enricher that must
see records one by one (DNS labels, which age with every record) asks for them
with `materialise`; from then on the batch holds those Records themselves.
A batch is complete once the pump has run its enrichers; sinks only read it,
from their own threads.
"""

from __future__ import annotations

import collections
import itertools
import operator
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast, overload

import msgspec

from netlogger.pipeline.clock import NS, second_prefix, timestamp
from netlogger.pipeline.record import Record, RingItem

# What each record has of its own; everything else is its group's. `ts` is formatted
# from `bpf_ts_ns`; the repeat.* fields exist only on folded records.
PER_RECORD = ("ts", "bpf_ts_ns", "seq", "sock_cookie")
# Below this many records a group's pieces cost more than they save.
TEMPLATE_MIN = 8
_CHUNK = 2048  # records joined at a time
# Values no real field holds: a probe line finds where the per-record values go.
_SENTINEL_TS = "\x01"
_SENTINELS = {name: (1 << 62) + i for i, name in enumerate(PER_RECORD[1:], 1)}
# In Record's field order ts, bpf_ts_ns and seq are one run, sock_cookie follows the
# group's fields: a line is the group's pieces around these.
_TS_RUN = f'"ts":"\\u0001","bpf_ts_ns":{_SENTINELS["bpf_ts_ns"]},"seq":{_SENTINELS["seq"]}'
_COOKIE = f'"sock_cookie":{_SENTINELS["sock_cookie"]}'


@dataclass(frozen=True)
class Pieces:
    """The constant text of a group's JSON line, as str: the line is `lead` + the second
    of the record's time + "." + its nine-digit fraction + `Z","bpf_ts_ns":` + bpf_ts_ns +
    `,"seq":` + seq + `middle` + sock_cookie + `tail`."""

    lead: str
    middle: str
    tail: str


def json_pieces(template: Record) -> Pieces | None:
    """`template`'s JSON line cut where the per-record values go, or None when they are
    not where Record's field order puts them (then each record is encoded on its own)."""
    probe = msgspec.json.encode(msgspec.structs.replace(template, ts=_SENTINEL_TS, **_SENTINELS))
    line = probe.decode()
    if line.count(_TS_RUN) != 1 or line.count(_COOKIE) != 1:
        return None
    head, rest = line.split(_TS_RUN)
    middle, tail = rest.split(_COOKIE)
    return Pieces(head + '"ts":"', middle + '"sock_cookie":', tail + "\n")


@dataclass(eq=False)
class Group:
    """The records of one batch that share their static bytes and task."""

    template: Record  # the shared fields; PER_RECORD fields are zero here
    count: int = 0
    unknown: tuple[str, ...] = ()  # enum fields whose value had no name
    # The template's JSON pieces, once its enrichment is final (json_lines makes them):
    # None for a small group, or one json_pieces cannot cut.
    pieces: Pieces | None = field(default=None, repr=False)
    _cut: bool = field(default=False, repr=False)

    def cut(self) -> None:
        if not self._cut:
            self.pieces = json_pieces(self.template) if self.count >= TEMPLATE_MIN else None
            self._cut = True


Row = tuple[int, int, int, int, int, int]  # ts_ns, seq, sock_cookie, first_ns, seq_first, repeats
REPEATS = 5  # a row's repeat_count: above 1, the record is folded


class Decisions(Sequence[Record]):
    """Decision records of one ring region; see the module docstring.

    `rows` unpacks each record's own fields from `region` (a Row); `refs` holds each
    record's group (or, once materialised, the Record), one of `groups`; `index` the
    row of each record (rows the decoder skipped are in none). `offset_ns` moves the
    kernel's clock to the wall clock. A slice is a Decisions too, over the same bytes.
    """

    def __init__(
        self,
        region: bytes | memoryview,
        rows: struct.Struct,
        refs: list[Group | Record],
        groups: list[Group],
        offset_ns: int,
        index: Sequence[int],
        whole: bool = True,
    ) -> None:
        self._region = region
        self._rows = rows
        self._refs = refs
        self.groups = groups
        self.offset_ns = offset_ns
        self._index = index
        # The Records materialise() made, tracked in a batch as the decoder made it (a
        # slice's are found by looking: slices are read, never enriched).
        self._own: list[Record] | None = [] if whole else None

    def __len__(self) -> int:
        return len(self._refs)

    @property
    def refs(self) -> Sequence[Group | Record]:
        """Each record's group, or its Record once materialised."""
        return self._refs

    @overload
    def __getitem__(self, i: int) -> Record: ...

    @overload
    def __getitem__(self, i: slice) -> Decisions: ...

    def __getitem__(self, i: int | slice) -> Record | Decisions:
        if isinstance(i, slice):
            refs = self._refs[i]
            return Decisions(
                self._region, self._rows, refs, self.groups, self.offset_ns, self._index[i], False
            )
        ref = self._refs[i]
        if isinstance(ref, Record):
            return ref
        row = self._rows.unpack_from(self._region, self._index[i] * self._rows.size)
        return self.build(ref.template, row)

    def __iter__(self) -> Iterator[Record]:
        for ref, row in self.rows():
            yield ref if isinstance(ref, Record) else self.build(ref.template, row)

    def rows(self) -> Iterator[tuple[Group | Record, Row]]:
        """Each record's group (or Record) and Row, in order."""
        index, size = self._index, self._rows.size
        rows: Iterable[tuple[Any, ...]]
        if isinstance(index, range) and index.step == 1:
            rows = self._rows.iter_unpack(self._region[index.start * size : index.stop * size])
        else:
            unpack, region = self._rows.unpack_from, self._region
            rows = (unpack(region, i * size) for i in index)
        return zip(self._refs, cast(Iterable[Row], rows), strict=True)

    def build(self, template: Record, row: Row) -> Record:
        """The Record of `row` in the group of `template`."""
        ts_ns, seq, cookie, first_ns, seq_first, repeats = row
        rec = msgspec.structs.replace(
            template, ts=timestamp(ts_ns + self.offset_ns), bpf_ts_ns=ts_ns, seq=seq,
            sock_cookie=cookie,
        )  # fmt: skip
        if repeats > 1:
            rec.repeat_count, rec.repeat_first_ns, rec.repeat_last_ns = repeats, first_ns, ts_ns
            rec.repeat_seq_first = seq_first
        return rec

    def _subset(self, positions: Sequence[int]) -> Decisions:
        refs = list(map(self._refs.__getitem__, positions))
        index = list(map(self._index.__getitem__, positions))
        return Decisions(self._region, self._rows, refs, self.groups, self.offset_ns, index, False)

    def _distinct(self) -> dict[int, Group | Record]:
        """Each distinct reference by id (Records do not hash), found in C."""
        return dict(zip(map(id, self._refs), self._refs, strict=True))

    def where(self, accept: Callable[[Record], bool]) -> Decisions:
        """The records `accept` takes, asked once per group (with the group's template)
        and once per Record of its own: `accept` must look only at what a group shares,
        never at PER_RECORD or repeat.* fields."""
        taken = {
            key: accept(ref.template if isinstance(ref, Group) else ref)
            for key, ref in self._distinct().items()
        }
        keep = itertools.compress(
            range(len(self._refs)), map(taken.__getitem__, map(id, self._refs))
        )
        return self._subset(list(keep))

    def folded(self) -> list[int]:
        """Positions of the folded records (repeat_count above 1), found in C passes."""
        rows = map(operator.itemgetter(1), self.rows())
        repeats = map(operator.itemgetter(REPEATS), rows)
        return list(itertools.compress(range(len(self._refs)), map((1).__lt__, repeats)))

    def losses(self) -> dict[str, tuple[int, int, int, Record]]:
        """Per cgroup: the decisions these records stand for (folded ones count each
        repeat), the least and greatest sequence number among them, and a record of the
        cgroup (its labels name who lost them). For loss gaps, without building Records."""
        out: dict[str, tuple[int, int, int, Record]] = {}
        for ref, row in self.rows():
            rec = ref.template if isinstance(ref, Group) else ref
            seq, repeats = row[1], row[REPEATS]
            first = row[4] if repeats > 1 else seq
            known = out.get(rec.cgroup_id)
            if known is None:
                out[rec.cgroup_id] = (max(repeats, 1), first, seq, rec)
            else:
                n, low, high, _ = known
                out[rec.cgroup_id] = (n + max(repeats, 1), min(low, first), max(high, seq), rec)
        return out

    def templates(self) -> list[Record]:
        """What enrichers fill in: each group's template and each materialised Record."""
        own = self._own
        if own is None:  # a slice: its Records are found by looking
            own = [r for r in self._refs if type(r) is Record]
        return [g.template for g in self.groups] + own

    def materialise(self, groups: set[Group]) -> list[Record]:
        """The records of `groups`, built now and held from now on, in order."""
        if not groups:
            return []
        out: list[Record] = []
        refs = self._refs
        for i, (ref, row) in enumerate(self.rows()):
            if type(ref) is Group and ref in groups:
                refs[i] = rec = self.build(ref.template, row)
                out.append(rec)
        self._own = None if self._own is None else self._own + out
        self.groups = [g for g in self.groups if g not in groups]
        return out

    def tally(self) -> collections.Counter[tuple[str, str]]:
        """Records per (event name, action)."""
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        by_id = self._distinct()
        for key, n in collections.Counter(map(id, self._refs)).items():
            ref = by_id[key]
            rec = ref.template if isinstance(ref, Group) else ref
            counts[rec.event_name, rec.action] += n
        return counts

    def json_lines(self, encoder: msgspec.json.Encoder) -> bytes:
        """Every record as the line `encoder.encode_lines` would write for it.

        Joined a chunk at a time: the pieces of a whole large batch would not stay in cache.
        """
        for group in self.groups:
            group.cut()
        chunks: list[bytes] = []
        out: list[str] = []
        extend = out.extend
        offset, second_ns, second = self.offset_ns, -1, ""
        rows = self.rows()
        while True:
            for ref, row in itertools.islice(rows, _CHUNK):
                pieces = ref.pieces if type(ref) is Group else None
                ts_ns, seq, cookie, _first, _seq_first, repeats = row
                if pieces is not None and repeats <= 1:
                    wall = ts_ns + offset
                    if not 0 <= wall - second_ns < NS:
                        second_ns = wall - wall % NS
                        second = second_prefix(second_ns // NS) + "."
                    # The fraction: nine digits, zero-padded by the 1 that NS puts before them.
                    run = f'{str(wall - second_ns + NS)[1:]}Z","bpf_ts_ns":{ts_ns},"seq":{seq}'
                    extend((pieces.lead, second, run, pieces.middle, str(cookie), pieces.tail))
                    continue
                rec = ref if isinstance(ref, Record) else self.build(ref.template, row)
                extend((encoder.encode(rec).decode(), "\n"))
            if not out:
                return b"".join(chunks)
            chunks.append("".join(out).encode())
            out.clear()


def to_enrich(items: Sequence[RingItem]) -> Iterable[RingItem]:
    """The records an enricher fills in: a Decisions batch's templates, else every item."""
    return items.templates() if isinstance(items, Decisions) else items


def tally(items: Sequence[RingItem]) -> collections.Counter[tuple[str, str]]:
    """Records per (event name, action), of any batch."""
    if isinstance(items, Decisions):
        return items.tally()
    return collections.Counter((r.event_name, r.action) for r in items)
