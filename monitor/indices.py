"""The indices the stack writes, read from `monitor/bootstrap/fields/*.json`.

Those JSON files are the single source of every field mapping; the collector routes, the
index templates, the index patterns and the dashboards are all derived from them here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

FIELDS_PACKAGE = "monitor.bootstrap"
COMMON = "common.json"
FIELD_FILES = (
    "claude-code.json",
    "clawker-cli.json",
    "clawker-cp.json",
    "clawker-envoy.json",
    "clawker-coredns.json",
    "clawker-ebpf-egress.json",
    "traces.json",
)

Mapping = str | dict[str, Any]


@dataclass(frozen=True)
class IndexSpec:
    """One destination index and the document fields it maps."""

    name: str
    title: str
    kind: Literal["logs", "traces"]
    lane: Literal["agent", "infra"]
    services: tuple[str, ...]
    ingest_source: str
    default_route: bool
    fields: dict[str, Mapping] = field(default_factory=dict)  # document path -> mapping
    renamed_attributes: dict[str, str] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """A name safe for collector component ids and saved-object ids."""
        return self.name.replace("ss4o_traces-", "traces-")

    @property
    def backing_index(self) -> str:
        """The first concrete index behind the write alias that carries `name`."""
        return f"{self.name}-000001"

    @property
    def pattern(self) -> str:
        """Matches every backing index this alias ever rolls over to."""
        return f"{self.name}-*"


def _read(name: str) -> dict[str, Any]:
    source = resources.files(FIELDS_PACKAGE).joinpath("fields").joinpath(name)
    text = source.read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def common_fields() -> dict[str, Mapping]:
    fields: dict[str, Mapping] = _read(COMMON)["fields"]
    return fields


def _spec(data: dict[str, Any]) -> IndexSpec:
    fields: dict[str, Mapping] = dict(data.get("document", {}))
    fields.update({f"attributes.{k}": v for k, v in data.get("attributes", {}).items()})
    fields.update({f"resource.{k}": v for k, v in data.get("resource", {}).items()})
    return IndexSpec(
        name=data["index"],
        title=data["title"],
        kind=data["kind"],
        lane=data["lane"],
        services=tuple(data["services"]),
        ingest_source=data["ingest_source"],
        default_route=bool(data.get("default_route", False)),
        fields=fields,
        renamed_attributes=dict(data.get("renamed_attributes", {})),
    )


@cache
def all_indices() -> tuple[IndexSpec, ...]:
    return tuple(_spec(_read(name)) for name in FIELD_FILES)


def log_indices() -> tuple[IndexSpec, ...]:
    return tuple(spec for spec in all_indices() if spec.kind == "logs")


def by_name(name: str) -> IndexSpec:
    for spec in all_indices():
        if spec.name == name:
            return spec
    raise KeyError(name)


def traces_index() -> IndexSpec:
    return next(spec for spec in all_indices() if spec.kind == "traces")


def reserved_services() -> tuple[str, ...]:
    """service.name values only the trusted lane may claim (netlogger's above all)."""
    return tuple(s for spec in log_indices() if spec.lane == "infra" for s in spec.services)


def ebpf_record_keys() -> tuple[str, ...]:
    """The netlogger record keys the clawker-ebpf-egress template maps."""
    spec = by_name("clawker-ebpf-egress")
    return tuple(k.removeprefix("attributes.") for k in spec.fields if k.startswith("attributes."))


def nest(flat: dict[str, Mapping]) -> dict[str, Any]:
    """Turn `a.b.c: type` paths into OpenSearch's nested `properties` objects.

    OpenSearch expands dotted keys in documents into objects, so the mapping must describe the
    same tree; a path that is both a leaf and a parent would reject documents, hence the check.
    """
    root: dict[str, Any] = {}
    for path in sorted(flat):
        parts = path.split(".")
        node = root
        for part in parts[:-1]:
            entry = node.setdefault(part, {"properties": {}})
            if "properties" not in entry:
                raise ValueError(f"mapping conflict: {path} nests under leaf field {part}")
            node = entry["properties"]
        leaf = parts[-1]
        if leaf in node:
            raise ValueError(f"mapping conflict: {path} is both a field and an object")
        value = flat[path]
        node[leaf] = {"type": value} if isinstance(value, str) else dict(value)
    return root
