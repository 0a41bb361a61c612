"""The container images of the stack, pinned by tag and by multi-arch index digest.

The compose file references `repo:tag@sha256:digest`, so a tag moved upstream can never change
what runs. Digests were taken from public references to these exact tags (no registry is
reachable from the machine that wrote this); `VERIFIED` says how well each one is attested.
Refresh with `docker buildx imagetools inspect repo:tag` on a machine that reaches the registry.

`image_refs: tag` (or $CLAWKER_MONITOR_IMAGE_REFS=tag) renders `repo:tag` instead: that is for
tests and air-gapped hosts running locally built images tagged the same, which cannot carry the
registry's digest. The default stays `digest`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Image:
    repository: str
    tag: str
    digest: str
    attested_by: str

    def ref(self, mode: Literal["digest", "tag"]) -> str:
        if mode == "tag":
            return f"{self.repository}:{self.tag}"
        return f"{self.repository}:{self.tag}@{self.digest}"


COLLECTOR = Image(
    repository="otel/opentelemetry-collector-contrib",
    tag="0.144.0",
    digest="sha256:213886eb6407af91b87fa47551c3632be1a6419ff3a5114ef1e6fc364628496f",
    attested_by="two independent public pins of 0.144.0",
)
OPENSEARCH = Image(
    repository="opensearchproject/opensearch",
    tag="2.19.3",
    digest="sha256:e96cc6ae1500a073d973c0906f30f7cf4d9c461f32f855f9242a2da933660cdd",
    attested_by="many independent public pins of 2.19.3",
)
DASHBOARDS = Image(
    repository="opensearchproject/opensearch-dashboards",
    tag="2.19.3",
    digest="sha256:19e0dd30c7086e933cf475726d92ccc98be26ced9f0c4e4a2a3ae6d9539280a3",
    attested_by="one public pin next to OpenSearch 2.19.3; re-verify before release",
)
PROMETHEUS = Image(
    repository="prom/prometheus",
    tag="v3.5.0",
    digest="sha256:63805ebb8d2b3920190daf1cb14a60871b16fd38bed42b857a3182bc621f4996",
    attested_by="many independent public pins of v3.5.0 (an LTS release)",
)
CURL = Image(
    repository="curlimages/curl",
    tag="8.11.1",
    digest="sha256:c1fe1679c34d9784c1b0d1e5f62ac0a79fca01fb6377cdd33e90473c6f9f9a69",
    attested_by="many independent public pins of 8.11.1",
)

ALL = (COLLECTOR, OPENSEARCH, DASHBOARDS, PROMETHEUS, CURL)
