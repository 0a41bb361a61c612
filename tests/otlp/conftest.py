"""Fixtures: monitor-made certificates, a live mTLS receiver, sinks that always shut down."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor import certs as monitor_certs
from monitor.certs import CertPaths
from netlogger.sinks.otlp import OtlpExportSink
from netlogger.sinks.otlp.settings import Settings, Tls
from tests.otlp.receiver import Receiver
from tests.otlp.records import HOST


@pytest.fixture
def certs(tmp_path: Path) -> CertPaths:
    """What `netlogger monitor init` writes: CA, collector cert, netlogger client cert."""
    return monitor_certs.generate(tmp_path / "monitor")


@pytest.fixture
def other_certs(tmp_path: Path) -> CertPaths:
    """An unrelated CA and its leaves."""
    return monitor_certs.generate(tmp_path / "elsewhere")


@pytest.fixture
def receiver(certs: CertPaths) -> Iterator[Receiver]:
    server = Receiver(certs).start()
    yield server
    server.stop()


def settings_for(
    port: int,
    certs: CertPaths,
    spool_dir: Path,
    *,
    client: CertPaths | None = None,
    tls: Tls | None = None,
    **kw: Any,
) -> Settings:
    """Settings for a sink talking to 127.0.0.1:port; `client` picks whose client cert."""
    client = client or certs
    tls = tls or Tls(certs.ca_cert, client.client_cert, client.client_key)
    options: dict[str, Any] = {
        "spool_max_bytes": 64 << 20,
        "timeout": 5.0,
        "retry_initial": 0.05,
        "retry_max": 0.2,
        **kw,
    }
    return Settings(host="127.0.0.1", port=port, tls=tls, spool_dir=spool_dir, **options)


MakeSink = Callable[..., OtlpExportSink]


@pytest.fixture
def make_sink(tmp_path: Path, certs: CertPaths) -> Iterator[MakeSink]:
    """Builds sinks (spool under tmp_path unless given); all are shut down after the test."""
    made: list[OtlpExportSink] = []
    before = set(threading.enumerate())

    def make(port: int, spool_dir: Path | None = None, **kw: Any) -> OtlpExportSink:
        settings = settings_for(port, certs, spool_dir or tmp_path / "spool", **kw)
        sink = OtlpExportSink(settings, HOST)
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.shutdown()
    leaked = [t for t in threading.enumerate() if t not in before and t.name == "netlogger-otlp"]
    assert not leaked, f"sender threads still running: {leaked}"
