"""The trusted lane's port is one constant, netlogger.trusted_lane.PORT.

Python imports it; the few texts that cannot (the config schema's default endpoint string, the
stack's README) are held to it here, and any other copy of the number fails the scan.
"""

from __future__ import annotations

from pathlib import Path

from monitor import collector
from monitor.settings import Monitoring
from netlogger import trusted_lane
from netlogger.config.model import OtlpSink
from netlogger.sinks.otlp.settings import parse_endpoint

REPO = Path(__file__).parents[2]
SCANNED = ("netlogger", "monitor", "deploy", "bench", "README.md")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".sh", ".service", ".toml", ""}

# Texts that must spell the port out, each with the exact fragment that carries it.
WRITTEN_OUT = {
    "netlogger/trusted_lane.py": f"PORT = {trusted_lane.PORT}\n",
    "netlogger/config/model.py": f'endpoint: str = "https://localhost:{trusted_lane.PORT}"',
    "monitor/README.md": f"| infra (trusted) | {trusted_lane.PORT} gRPC |",
}


def test_agent_and_stack_use_the_constant() -> None:
    assert collector.OTLP_MTLS_PORT == trusted_lane.PORT
    assert Monitoring().otel_mtls_port == trusted_lane.PORT
    assert parse_endpoint("https://collector.example") == (
        "collector.example",
        trusted_lane.PORT,
        True,
    )


def test_the_config_default_endpoint_is_the_trusted_lane() -> None:
    assert OtlpSink().endpoint == f"https://localhost:{trusted_lane.PORT}"


def test_texts_that_spell_it_out_say_the_constant() -> None:
    for name, fragment in WRITTEN_OUT.items():
        assert fragment in (REPO / name).read_text(), name


def test_no_other_copy_of_the_port() -> None:
    files = []
    for top in SCANNED:
        path = REPO / top
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    copies = [
        str(f.relative_to(REPO))
        for f in files
        if f.suffix in SUFFIXES
        and "__pycache__" not in f.parts
        and str(f.relative_to(REPO)) not in WRITTEN_OUT
        and str(trusted_lane.PORT) in f.read_text(errors="replace")
    ]
    assert copies == []
