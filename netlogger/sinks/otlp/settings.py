"""The OTLP sink's config, validated before anything starts.

The trusted lane is mTLS: an endpoint on another host must be `https://` with a client
certificate, key and CA. Plaintext (`http://`) is accepted only for a collector on loopback.
TLS files come from the sink's config, else the standard `OTEL_EXPORTER_OTLP_LOGS_*`
variables, else the host's files under /etc/netlogger/tls/: a host agent runs as a system
service, so its defaults never depend on whose home directory started it. Every problem is a
UsageError whose one line names the key and what to do.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from netlogger import trusted_lane
from netlogger.config.model import OtlpSink
from netlogger.errors import UsageError
from netlogger.units import parse_duration, parse_size

TLS_DIR = Path("/etc/netlogger/tls")
DEFAULT_TLS = {
    "ca": TLS_DIR / "ca.pem",
    "cert": TLS_DIR / "client.pem",
    "key": TLS_DIR / "client.key",
}
SPOOL_SUBDIR = "otlp-spool"
MIN_SPOOL_BYTES = 64 * 1024
MAX_SEGMENT_BYTES = 1 << 20  # one request; well under gRPC's default 4 MiB receive limit
ENV = "OTEL_EXPORTER_OTLP_LOGS_"


@dataclass(frozen=True)
class Tls:
    ca: Path | None  # None: the system's roots
    cert: Path | None  # None: no client certificate (a loopback collector only)
    key: Path | None

    def pem(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(ca, cert, key) file contents, as gRPC takes them."""

        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path else None

        return read(self.ca), read(self.cert), read(self.key)


@dataclass(frozen=True)
class Settings:
    """Everything the sink needs, validated."""

    host: str
    port: int
    tls: Tls | None  # None: plaintext (loopback only)
    spool_dir: Path
    spool_max_bytes: int
    timeout: float = 10.0
    retry_initial: float = 1.0
    retry_max: float = 30.0
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def endpoint(self) -> str:
        """host:port, as gRPC targets are written."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def segment_bytes(self) -> int:
        # At least eight segments fit under the cap, so one eviction takes an eighth at most.
        return max(4096, min(MAX_SEGMENT_BYTES, self.spool_max_bytes // 8))


def from_config(
    cfg: OtlpSink, state_dir: Path, environ: Mapping[str, str] | None = None
) -> Settings:
    env = os.environ if environ is None else environ
    host, port, secure = parse_endpoint(cfg.endpoint)
    tls = _tls(cfg, env, host) if secure else None
    try:
        spool_max = parse_size(cfg.spool_max_bytes)
        timeout = parse_duration(cfg.timeout)
        retry_initial = parse_duration(cfg.retry_initial)
        retry_max = parse_duration(cfg.retry_max)
    except ValueError as exc:
        raise UsageError(f"otlp sink: {exc}") from None
    if spool_max < MIN_SPOOL_BYTES:
        raise UsageError("otlp sink: spool_max_bytes must be at least 64KiB")
    if timeout <= 0 or not 0 < retry_initial <= retry_max:
        raise UsageError("otlp sink: need timeout > 0 and 0 < retry_initial <= retry_max")
    return Settings(
        host=host,
        port=port,
        tls=tls,
        spool_dir=Path(cfg.spool_dir) if cfg.spool_dir else state_dir / SPOOL_SUBDIR,
        spool_max_bytes=spool_max,
        timeout=timeout,
        retry_initial=retry_initial,
        retry_max=retry_max,
        headers=_headers(cfg.headers, env),
    )


def parse_endpoint(endpoint: str) -> tuple[str, int, bool]:
    """`https://host:port` (mTLS) or `http://host:port` (loopback) -> (host, port, secure)."""
    text = endpoint if "://" in endpoint else f"https://{endpoint}"
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http"):
        raise UsageError(
            f"otlp sink: endpoint {endpoint!r}: use https://HOST:PORT "
            "(http:// only for a collector on this host)"
        )
    try:
        host, port = parts.hostname, parts.port or trusted_lane.PORT
    except ValueError:  # a port that is not a number or out of range
        host, port = None, 0
    if not host or parts.path.strip("/") or parts.query:
        raise UsageError(f"otlp sink: endpoint {endpoint!r}: use https://HOST:PORT")
    secure = parts.scheme == "https"
    if not secure and not is_loopback(host):
        raise UsageError(
            f"otlp sink: endpoint {endpoint!r} is plaintext to another host; records leave "
            "this host only over mTLS: use https:// with ca, cert and key"
        )
    return host, port, secure


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: resolving it here would let DNS decide whether TLS is needed


def _tls(cfg: OtlpSink, env: Mapping[str, str], host: str) -> Tls:
    given = {
        "ca": cfg.ca or env.get(ENV + "CERTIFICATE"),
        "cert": cfg.cert or env.get(ENV + "CLIENT_CERTIFICATE"),
        "key": cfg.key or env.get(ENV + "CLIENT_KEY"),
    }
    if not any(given.values()):
        given = {what: str(path) for what, path in DEFAULT_TLS.items()}
    if bool(given["cert"]) != bool(given["key"]):
        raise UsageError("otlp sink: cert and key go together: set both or neither")
    if not given["cert"] and not is_loopback(host):
        raise UsageError(
            f"otlp sink: {host} is another host, so the trusted lane needs a client "
            "certificate: set cert and key"
        )
    ca = _check(given["ca"], "ca", x509.load_pem_x509_certificates)
    cert = _check(given["cert"], "cert", x509.load_pem_x509_certificates)
    key = _check(given["key"], "key", _load_key)
    if cert and key:
        _check_pair(cert, key)
    return Tls(ca=ca, cert=cert, key=key)


def _load_key(data: bytes) -> Any:
    return serialization.load_pem_private_key(data, password=None)


def _check(path: str | None, what: str, parse: Callable[[bytes], Any]) -> Path | None:
    if not path:
        return None
    file = Path(path).expanduser()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"otlp sink: cannot read {what} {file}: {exc.strerror} (set {what} in the otlp "
            "sink's config; `netlogger monitor init` prints the lines for its certificates)"
        ) from None
    try:
        parse(data)
    except ValueError as exc:
        raise UsageError(f"otlp sink: {what} {file} is not PEM: {exc}") from None
    return file


def _check_pair(cert: Path, key: Path) -> None:
    public = x509.load_pem_x509_certificates(cert.read_bytes())[0].public_key()
    if public != _load_key(key.read_bytes()).public_key():
        raise UsageError(f"otlp sink: key {key} does not belong to cert {cert}")


def _headers(given: Mapping[str, str], env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    if given:
        return tuple(given.items())
    pairs = (p.partition("=") for p in env.get(ENV + "HEADERS", "").split(",") if "=" in p)
    return tuple((k.strip(), v.strip()) for k, _, v in pairs)
