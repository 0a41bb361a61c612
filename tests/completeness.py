"""The one completeness check every fault test uses, from the JSONL history alone.

A cgroup's decisions are numbered without holes by the kernel. The history is
complete when every one of those sequence numbers is a decision record or
inside a gap record's range, no record appears twice, and the records plus
the gaps' counts add up to exactly the decisions made: a loss counted twice
(a partly written batch reported lost in whole, a gap reported again) breaks
the sum as surely as a hole breaks the ranges.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

GAP = "ebpf.egress.gap"


def history(path: Path, settled: bool = True) -> list[dict[str, Any]]:
    """Every line of the JSONL file and its rotated predecessors, oldest first.

    Strict: a line that is not one whole JSON object (a torn line, or two merged
    into one) fails the test here, and so does a last line without its newline,
    unless the agent may be writing it right now (not `settled`).
    """
    rotated = sorted(
        (p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    out = []
    for file in [*rotated, *([path] if path.exists() else [])]:
        data = file.read_bytes()
        if not settled and file == path:
            data = data[: data.rfind(b"\n") + 1]
        assert not data or data.endswith(b"\n"), f"{file} ends in a torn line: {data[-80:]!r}"
        for n, line in enumerate(data.splitlines(), 1):
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"{file}:{n} is not one JSON object: {line[:200]!r}") from None
    return out


def problems(lines: list[dict[str, Any]], cgroup_id: int, seqs: range) -> list[str]:
    """What keeps `seqs` of `cgroup_id` from being exactly accounted for; [] when it is."""
    cg = str(cgroup_id)
    records = [x["seq"] for x in lines if x["event.name"] != GAP and x["cgroup_id"] == cg]
    gaps = [x for x in lines if x["event.name"] == GAP and x.get("cgroup_id") == cg]
    out = []
    twice = sorted(s for s, n in collections.Counter(records).items() if n > 1)
    if twice:
        out.append(f"records written twice: {twice[:10]} ({len(twice)} in all)")
    seen = set(records)
    holes = [
        s
        for s in seqs
        if s not in seen and not any(g["gap.seq_first"] <= s <= g["gap.seq_last"] for g in gaps)
    ]
    if holes:
        out.append(f"seqs neither written nor in a gap: {holes[:10]} ({len(holes)} in all)")
    stray = sorted(seen - set(seqs))
    if stray:
        out.append(f"records outside {seqs}: {stray[:10]}")
    counted = len(seen) + sum(g["gap.count"] for g in gaps)
    if counted != len(seqs):
        out.append(f"{len(seen)} records + gap counts {counted - len(seen)} != {len(seqs)}")
    return out


def assert_complete(lines: list[dict[str, Any]], cgroup_id: int, seqs: range) -> None:
    assert problems(lines, cgroup_id, seqs) == []


def gap_counts(lines: list[dict[str, Any]]) -> dict[str, int]:
    """Records lost, by gap kind, as the file reports them."""
    out: dict[str, int] = collections.Counter()
    for x in lines:
        if x["event.name"] == GAP:
            out[x["gap.kind"]] += x["gap.count"]
    return dict(out)
