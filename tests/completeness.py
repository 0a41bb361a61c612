"""The one completeness check every fault test uses, from the JSONL history alone.

A cgroup's decisions are numbered without holes by the kernel. The history is
complete when every one of those sequence numbers is a decision record, inside
a folded record's range (`repeat.seq_first` to its `seq`) or inside a gap
record's range, no record appears twice, and the decisions the records stand
for (`repeat.count`, else 1) plus the gaps' counts add up to exactly the
decisions made: a loss counted twice
(a partly written batch reported lost in whole, a gap reported again) breaks
the sum as surely as a hole breaks the ranges.
"""

from __future__ import annotations

import bisect
import collections
import json
from pathlib import Path
from typing import Any

GAP = "ebpf.egress.gap"
# The kinds that take a decision seq; DNS answers count their own, control actions none.
DECISIONS = {
    "ebpf.egress.connect", "ebpf.egress.sendmsg", "ebpf.egress.sock_create", "ebpf.egress.packet"
}  # fmt: skip


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
    mine = [x for x in lines if x["event.name"] in DECISIONS and x["cgroup_id"] == cg]
    records = [x["seq"] for x in mine]
    gaps = [
        x
        for x in lines
        if x["event.name"] == GAP
        and x.get("cgroup_id") == cg
        and not x["gap.kind"].startswith("dns_")
    ]
    ranges = [(g["gap.seq_first"], g["gap.seq_last"]) for g in gaps]
    ranges += [(x["repeat.seq_first"], x["seq"]) for x in mine if "repeat.count" in x]
    out = []
    twice = sorted(s for s, n in collections.Counter(records).items() if n > 1)
    if twice:
        out.append(f"records written twice: {twice[:10]} ({len(twice)} in all)")
    seen = set(records)
    covered = _covered(ranges)
    holes = [s for s in seqs if s not in seen and not covered(s)]
    if holes:
        out.append(f"seqs neither written nor in a gap: {holes[:10]} ({len(holes)} in all)")
    stray = sorted(seen - set(seqs))
    if stray:
        out.append(f"records outside {seqs}: {stray[:10]}")
    decided = sum({x["seq"]: x.get("repeat.count", 1) for x in mine}.values())  # once per seq
    counted = decided + sum(g["gap.count"] for g in gaps)
    if counted != len(seqs):
        out.append(f"records stand for {decided}, + gap counts {counted - decided} != {len(seqs)}")
    return out


def _covered(ranges: list[tuple[int, int]]) -> Any:
    """A test of `seq in one of ranges`, in log time (floods make many ranges)."""
    merged: list[list[int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    starts = [first for first, _ in merged]

    def covered(seq: int) -> bool:
        i = bisect.bisect_right(starts, seq) - 1
        return i >= 0 and seq <= merged[i][1]

    return covered


def assert_complete(lines: list[dict[str, Any]], cgroup_id: int, seqs: range) -> None:
    assert problems(lines, cgroup_id, seqs) == []


def gap_counts(lines: list[dict[str, Any]]) -> dict[str, int]:
    """Records lost, by gap kind, as the file reports them."""
    out: dict[str, int] = collections.Counter()
    for x in lines:
        if x["event.name"] == GAP:
            out[x["gap.kind"]] += x["gap.count"]
    return dict(out)
