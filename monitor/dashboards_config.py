"""opensearch_dashboards.yml, mounted over the image's own config file.

Workspaces are off by default in OSD 2.19; the bootstrap needs them to create the `Clawker`
workspace. OSD refuses to start on a key it does not know, so only keys 2.19 defines are set.
"""

from __future__ import annotations

from typing import Any


def build() -> dict[str, Any]:
    return {
        "server.name": "opensearch-dashboards",
        "server.host": "0.0.0.0",
        "opensearch.hosts": ["http://opensearch-node:9200"],
        # The security plugin is removed at start (DISABLE_SECURITY_DASHBOARDS_PLUGIN).
        "opensearch.ssl.verificationMode": "none",
        "workspace.enabled": True,
        "data_source.enabled": False,
        "uiSettings": {"overrides": {"home:useNewHomePage": True}},
    }
