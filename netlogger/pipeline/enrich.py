"""Record -> Record with attribution: which agent, project and container decided.

Attribution comes from the labels the agent pinned beside each enrollment,
so it survives agent restarts. Lookups are cached per cgroup; whoever changes
an enrollment calls `forget`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from netlogger.kernel import abi
from netlogger.pipeline.record import Record


@dataclass(frozen=True)
class Attribution:
    agent: str
    project: str
    container_id: str
    why_empty: str | None  # set when all three are empty


def attribution_of(labels: abi.Labels | None) -> Attribution:
    if labels is None:
        return Attribution("", "", "", "cgroup_not_enrolled")
    agent, project = labels.agent.decode(), labels.project.decode()
    container = labels.container_id.decode()
    return Attribution(
        agent,
        project,
        container,
        None if agent or project or container else "enrolled_without_labels",
    )


class Enricher:
    def __init__(self, labels: Callable[[int], abi.Labels | None]) -> None:
        self._labels = labels
        self._cache: dict[str, Attribution] = {}

    def forget(self, cgroup_id: int) -> None:
        self._cache.pop(str(cgroup_id), None)

    def enrich(self, rec: Record) -> Record:
        who = self._cache.get(rec.cgroup_id)
        if who is None:
            who = self._cache[rec.cgroup_id] = attribution_of(self._labels(int(rec.cgroup_id)))
        rec.agent, rec.project, rec.container_id = who.agent, who.project, who.container_id
        rec.attribution = who.why_empty
        return rec
