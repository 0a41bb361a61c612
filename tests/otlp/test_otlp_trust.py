"""The trusted lane: who the collector refuses, what the agent says, what config is refused."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from monitor import certs as monitor_certs
from monitor.certs import CertPaths
from netlogger import trusted_lane
from netlogger.config.model import OtlpSink
from netlogger.errors import StateError, UsageError
from netlogger.sinks import otlp
from netlogger.sinks.otlp import settings as otlp_settings
from netlogger.sinks.otlp.settings import Tls
from tests.otlp.conftest import MakeSink
from tests.otlp.receiver import Receiver, wait_until
from tests.otlp.records import every_kind

REPO = Path(__file__).parents[2]
GRPC_REFUSAL = "UNAVAILABLE: failed to connect to all addresses"
OTEL_SUFFIXES = ("CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY", "HEADERS")


def refused(
    make_sink: MakeSink, receiver: Receiver, caplog: pytest.LogCaptureFixture, **kw: object
) -> str:
    """Run a sink the receiver should refuse; return what the sink said about it."""
    caplog.set_level(logging.WARNING, logger="netlogger.sinks.otlp")
    sink = make_sink(receiver.port, **kw)
    sink.export(every_kind())
    assert wait_until(lambda: sink.status().failures >= 2)
    status = sink.status()
    assert status.state == "spooling"
    assert status.spooled_records == len(every_kind())  # kept, not dropped
    assert status.sent_records == 0
    assert receiver.record_count == 0 and receiver.requests == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "netlogger.sinks.otlp"]
    assert warnings == [f"otlp: cannot deliver to {sink.settings.endpoint}: {status.last_error}; "
                        f"spooling to {sink.settings.spool_dir}"]  # fmt: skip
    return status.last_error


def test_a_client_without_a_certificate_is_refused_and_says_so(
    receiver: Receiver, make_sink: MakeSink, certs: CertPaths, caplog: pytest.LogCaptureFixture
) -> None:
    error = refused(make_sink, receiver, caplog, tls=Tls(certs.ca_cert, None, None))
    assert error.startswith("the collector requires a client certificate (set cert and key) (")
    assert GRPC_REFUSAL in error


def test_a_certificate_from_another_ca_is_refused_and_says_so(
    receiver: Receiver,
    make_sink: MakeSink,
    other_certs: CertPaths,
    certs: CertPaths,
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = refused(make_sink, receiver, caplog, client=other_certs)
    assert error.startswith(
        f"the collector refused our client certificate: {other_certs.client_cert} is not "
        f"issued by the collector's CA ({certs.ca_cert}) ("
    )
    assert GRPC_REFUSAL in error


def test_a_collector_from_another_ca_is_not_trusted(
    receiver: Receiver,
    make_sink: MakeSink,
    other_certs: CertPaths,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tls = Tls(other_certs.ca_cert, other_certs.client_cert, other_certs.client_key)
    error = refused(make_sink, receiver, caplog, tls=tls)
    assert error.startswith("the collector's certificate does not verify against our ca: ")


def test_refused_then_fixed_delivers_what_was_spooled(
    receiver: Receiver, make_sink: MakeSink, certs: CertPaths, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    sink = make_sink(receiver.port, spool, tls=Tls(certs.ca_cert, None, None))
    sink.export(every_kind())
    assert wait_until(lambda: sink.status().failures >= 1)
    sink.shutdown()
    fixed = make_sink(receiver.port, spool)
    fixed.force_flush(20)
    assert receiver.wait_for(len(every_kind()))
    assert fixed.status().state == "up" and fixed.status().last_error == ""


# -- config, refused before anything starts -------------------------------------------------


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* variables leak in."""
    for suffix in OTEL_SUFFIXES:
        monkeypatch.delenv(otlp_settings.ENV + suffix, raising=False)


def refuse(cfg: OtlpSink, state_dir: Path) -> str:
    threads = threading.active_count()
    with pytest.raises(UsageError) as info:
        otlp.from_config(cfg, "h", state_dir)
    assert threading.active_count() == threads  # nothing started
    assert not (state_dir / "otlp-spool").exists()  # nothing opened
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("http://collector.example:4319", "otlp sink: endpoint 'http://collector.example:4319' "
         "is plaintext to another host; records leave this host only over mTLS: use https:// "
         "with ca, cert and key"),
        ("http://10.0.0.5:4318", "otlp sink: endpoint 'http://10.0.0.5:4318' is plaintext to "
         "another host; records leave this host only over mTLS: use https:// with ca, cert "
         "and key"),
        ("grpc://localhost:4319", "otlp sink: endpoint 'grpc://localhost:4319': use "
         "https://HOST:PORT (http:// only for a collector on this host)"),
        ("https://localhost:99999", "otlp sink: endpoint 'https://localhost:99999': use "
         "https://HOST:PORT"),
        ("https://localhost:4319/v1/logs", "otlp sink: endpoint "
         "'https://localhost:4319/v1/logs': use https://HOST:PORT"),
    ],
)  # fmt: skip
def test_bad_endpoints_are_refused(
    endpoint: str, message: str, no_otel_env: None, tmp_path: Path
) -> None:
    assert refuse(OtlpSink(endpoint=endpoint), tmp_path) == message


def test_remote_endpoint_without_client_certificate_is_refused(
    no_otel_env: None, tmp_path: Path, certs: CertPaths
) -> None:
    cfg = OtlpSink(endpoint="https://collector.example:4319", ca=str(certs.ca_cert))
    assert refuse(cfg, tmp_path) == (
        "otlp sink: collector.example is another host, so the trusted lane needs a client "
        "certificate: set cert and key"
    )


def test_cert_without_key_and_mismatched_pairs_are_refused(
    no_otel_env: None, tmp_path: Path, certs: CertPaths, other_certs: CertPaths
) -> None:
    lone = OtlpSink(cert=str(certs.client_cert))
    assert refuse(lone, tmp_path) == "otlp sink: cert and key go together: set both or neither"
    mixed = OtlpSink(
        ca=str(certs.ca_cert), cert=str(certs.client_cert), key=str(other_certs.client_key)
    )
    assert refuse(mixed, tmp_path) == (
        f"otlp sink: key {other_certs.client_key} does not belong to cert {certs.client_cert}"
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    bad = OtlpSink(ca=str(garbage), cert=str(certs.client_cert), key=str(certs.client_key))
    assert refuse(bad, tmp_path).startswith(f"otlp sink: ca {garbage} is not PEM: ")


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("spool_max_bytes", "lots", "otlp sink: bad size 'lots': use a number with B, KB, MB, "
         "GB, KiB, MiB or GiB"),
        ("spool_max_bytes", "1KiB", "otlp sink: spool_max_bytes must be at least 64KiB"),
        ("timeout", "soon", "otlp sink: bad duration 'soon': use a number with ms, s, m, h or "
         "d, like 30s or 10m"),
        ("retry_max", "100ms", "otlp sink: need timeout > 0 and 0 < retry_initial <= "
         "retry_max"),
    ],
)  # fmt: skip
def test_bad_spool_and_retry_values_are_refused(
    field: str, text: str, message: str, certs: CertPaths, tmp_path: Path
) -> None:
    cfg = OtlpSink(
        ca=str(certs.ca_cert), cert=str(certs.client_cert), key=str(certs.client_key),
        **{field: text},  # type: ignore[arg-type]
    )  # fmt: skip
    assert refuse(cfg, tmp_path) == message


DEFAULTS_PROBE = """
import json, sys
from pathlib import Path
from netlogger.config.model import OtlpSink
from netlogger.errors import UsageError
from netlogger.sinks.otlp import settings
try:
    found = settings.from_config(OtlpSink(), Path(sys.argv[1]))
except UsageError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    tls = found.tls
    print(json.dumps({"endpoint": found.endpoint, "tls": [str(tls.ca), str(tls.cert), str(tls.key)],
                      "spool": str(found.spool_dir), "spool_max": found.spool_max_bytes}))
"""


def defaults_on_a_host(tmp_path: Path, files: dict[str, Path]) -> Any:
    """`from_config(OtlpSink())` on a host whose /etc/netlogger/tls/ holds only `files`.

    It runs in a private mount namespace: /etc is an overlay and /etc/netlogger a fresh tmpfs
    there, so the host's /etc is neither read nor written. HOME is a directory where
    `monitor init` wrote its certificates: the defaults must not find them.
    """
    home, upper, work = tmp_path / "home", tmp_path / "upper", tmp_path / "work"
    for directory in (home, upper, work):
        directory.mkdir()
    monitor_certs.generate(home / ".local/share/clawker/monitor")
    copies = "".join(f"cp {src} /etc/netlogger/tls/{name}\n" for name, src in files.items())
    script = (
        "set -e\n"
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc\n"
        "mkdir -p /etc/netlogger\n"
        "mount -t tmpfs -o mode=0755 tmpfs /etc/netlogger\n"
        "mkdir /etc/netlogger/tls\n"
        f"{copies}"
        f'exec {sys.executable} -c "$0" "$1"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWKER_", "XDG_"))}
    env.update(HOME=str(home), PYTHONPATH=str(REPO))
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
         DEFAULTS_PROBE, str(tmp_path / "state")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.kernel  # a mount namespace: root
def test_defaults_are_the_hosts_files_under_etc_netlogger(tmp_path: Path, certs: CertPaths) -> None:
    given = {
        "ca.pem": certs.ca_cert,
        "client.pem": certs.client_cert,
        "client.key": certs.client_key,
    }
    found = defaults_on_a_host(tmp_path, given)
    assert found == {
        "endpoint": f"localhost:{trusted_lane.PORT}",
        "tls": ["/etc/netlogger/tls/ca.pem", "/etc/netlogger/tls/client.pem",
                "/etc/netlogger/tls/client.key"],
        "spool": str(tmp_path / "state" / "otlp-spool"),
        "spool_max": 256 << 20,
    }  # fmt: skip


@pytest.mark.kernel  # a mount namespace: root
def test_missing_defaults_name_etc_netlogger_not_the_users_home(tmp_path: Path) -> None:
    found = defaults_on_a_host(tmp_path, {})
    assert found == {
        "error": "otlp sink: cannot read ca /etc/netlogger/tls/ca.pem: No such file or "
        "directory (set ca in the otlp sink's config; `netlogger monitor init` prints the "
        "lines for its certificates)"
    }


def test_the_default_files_are_under_etc_netlogger_tls() -> None:
    assert {
        "ca": Path("/etc/netlogger/tls/ca.pem"),
        "cert": Path("/etc/netlogger/tls/client.pem"),
        "key": Path("/etc/netlogger/tls/client.key"),
    } == otlp_settings.DEFAULT_TLS


def test_otel_logs_variables_supply_the_files(
    no_otel_env: None, tmp_path: Path, certs: CertPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(otlp_settings.ENV + "CERTIFICATE", str(certs.ca_cert))
    monkeypatch.setenv(otlp_settings.ENV + "CLIENT_CERTIFICATE", str(certs.client_cert))
    monkeypatch.setenv(otlp_settings.ENV + "CLIENT_KEY", str(certs.client_key))
    monkeypatch.setenv(otlp_settings.ENV + "HEADERS", "tenant=a, x-team = b")
    cfg = OtlpSink(endpoint="https://collector.example:14319")
    settings = otlp_settings.from_config(cfg, tmp_path)
    assert settings.tls == Tls(certs.ca_cert, certs.client_cert, certs.client_key)
    assert settings.headers == (("tenant", "a"), ("x-team", "b"))
    assert settings.endpoint == "collector.example:14319"


def test_plaintext_is_allowed_on_loopback_only(no_otel_env: None, tmp_path: Path) -> None:
    settings = otlp_settings.from_config(OtlpSink(endpoint="http://[::1]:4317"), tmp_path)
    assert settings.tls is None
    assert settings.endpoint == "[::1]:4317"


def test_a_second_sink_on_the_same_spool_is_refused(
    receiver: Receiver, make_sink: MakeSink, tmp_path: Path
) -> None:
    make_sink(receiver.port, tmp_path / "shared")
    with pytest.raises(StateError, match="is in use by another netlogger agent"):
        make_sink(receiver.port, tmp_path / "shared")
