"""Where the monitor keeps its files: the data directory and the settings file.

Precedence, highest first: the command-line option, the environment variable, the XDG default.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "CLAWKER_DATA_DIR"
SETTINGS_ENV = "CLAWKER_SETTINGS"

# Files `init` writes into the data directory (relative paths).
COMPOSE_FILE = "compose.yaml"
OTEL_CONFIG_FILE = "otel-config.yaml"
PROMETHEUS_FILE = "prometheus.yaml"
DASHBOARDS_FILE = "opensearch_dashboards.yml"
BOOTSTRAP_DIR = "bootstrap"
CERTS_DIR = "certs"
SECRETS_DIR = "secrets"
OPENSEARCH_ENV_FILE = "secrets/opensearch.env"
MANIFEST_FILE = ".manifest.json"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_data_dir() -> Path:
    """`$CLAWKER_DATA_DIR`, else `$XDG_DATA_HOME/clawker/monitor` (~/.local/share/...)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return _xdg("XDG_DATA_HOME", ".local/share") / "clawker" / "monitor"


def default_settings_file() -> Path:
    """`$CLAWKER_SETTINGS`, else `$XDG_CONFIG_HOME/clawker/settings.yaml`."""
    env = os.environ.get(SETTINGS_ENV)
    if env:
        return Path(env).expanduser()
    return _xdg("XDG_CONFIG_HOME", ".config") / "clawker" / "settings.yaml"


def resolve_data_dir(option: str | os.PathLike[str] | None) -> Path:
    return Path(option).expanduser() if option else default_data_dir()


def resolve_settings_file(option: str | os.PathLike[str] | None) -> Path:
    return Path(option).expanduser() if option else default_settings_file()
