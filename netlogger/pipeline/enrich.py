"""Enrichers: ordered steps that fill in what ring records cannot carry.

The pump runs each batch through its enrichers in order and knows them only
by this protocol. Attribution comes first (which agent, project and container
decided), so later steps (DNS names) can rely on it. Whoever changes an
enrollment calls `forget` for that cgroup on every enricher.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from netlogger.kernel import abi
from netlogger.pipeline.record import RingItem


class Enricher(Protocol):
    def enrich(self, items: Sequence[RingItem]) -> None:
        """Fill in fields of `items` in place."""

    def forget(self, cgroup_id: int) -> None:
        """Drop what is cached about `cgroup_id`: its enrollment changed."""


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


class AttributionEnricher:
    """Agent, project and container from the labels pinned beside each enrollment.

    The labels survive agent restarts; lookups are cached per cgroup. The
    container's name is not in the labels (the kernel keeps ids): it comes from
    `names`, which whoever enrolls a container fills (it is empty for a container
    enrolled by an earlier agent run until the watcher lists it again).
    """

    def __init__(
        self, labels: Callable[[int], abi.Labels | None], names: Mapping[str, str] | None = None
    ) -> None:
        self._labels = labels
        self._names: Mapping[str, str] = names if names is not None else {}
        self._cache: dict[str, tuple[Attribution, str | None]] = {}

    def forget(self, cgroup_id: int) -> None:
        self._cache.pop(str(cgroup_id), None)

    def enrich(self, items: Sequence[RingItem]) -> None:
        cache = self._cache
        for item in items:
            known = cache.get(item.cgroup_id)
            if known is None:
                who = attribution_of(self._labels(int(item.cgroup_id)))
                known = cache[item.cgroup_id] = (who, self._names.get(who.container_id) or None)
            who, item.container_name = known
            item.agent, item.project, item.container_id = who.agent, who.project, who.container_id
            item.attribution = who.why_empty
