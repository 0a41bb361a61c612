"""mTLS material for the collector's trusted infra lane.

One private CA signs two leaves: the collector's server certificate (SANs `otel-collector`,
`localhost`, `127.0.0.1`) and the netlogger client certificate (CN `netlogger`, clientAuth).
The collector requires a client certificate chained to this CA on the infra lane, so only
holders of `netlogger.key` can write records that get indexed as `ingest_source=netlogger`.
Private keys are written 0600. The netlogger host agent does not look here (its defaults are
under /etc/netlogger/tls/): `init` prints the sink line that names these files (`sink_line`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from monitor.errors import CertError
from monitor.paths import CERTS_DIR

SERVER_SANS = ("otel-collector", "localhost", "127.0.0.1")
CLIENT_CN = "netlogger"
CA_DAYS = 3650
LEAF_DAYS = 825  # the longest validity common TLS clients accept for a leaf


@dataclass(frozen=True)
class CertPaths:
    """Where `init` puts each file, under `<data_dir>/certs/`."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def all(self) -> tuple[Path, ...]:
        return (
            self.ca_cert,
            self.ca_key,
            self.server_cert,
            self.server_key,
            self.client_cert,
            self.client_key,
        )

    def private_keys(self) -> tuple[Path, ...]:
        return (self.ca_key, self.server_key, self.client_key)


def paths(data_dir: Path) -> CertPaths:
    """The certificate files for a data directory (they may not exist yet)."""
    base = Path(data_dir) / CERTS_DIR
    return CertPaths(
        ca_cert=base / "ca.pem",
        ca_key=base / "ca.key",
        server_cert=base / "collector.pem",
        server_key=base / "collector.key",
        client_cert=base / "netlogger.pem",
        client_key=base / "netlogger.key",
    )


def sink_line(found: CertPaths, port: int) -> str:
    """The netlogger config's `sinks:` entry for this stack's trusted lane on this host."""
    # JSON strings are YAML strings: any path a data directory can have stays one value.
    files = ", ".join(
        f"{key}: {json.dumps(str(path))}"
        for key, path in (
            ("ca", found.ca_cert),
            ("cert", found.client_cert),
            ("key", found.client_key),
        )
    )
    return f'- {{type: otlp, endpoint: "https://localhost:{port}", {files}}}'


def exist(data_dir: Path) -> bool:
    return all(p.exists() for p in paths(data_dir).all())


def generate(data_dir: Path) -> CertPaths:
    """Make a fresh CA and both leaves, replacing any existing files."""
    target = paths(data_dir)
    try:
        target.ca_cert.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(target.ca_cert.parent, 0o700)
        ca_key = _new_key()
        ca_cert = _ca_certificate(ca_key)
        server_key, client_key = _new_key(), _new_key()
        server_cert = _leaf(ca_cert, ca_key, server_key, "otel-collector", server=True)
        client_cert = _leaf(ca_cert, ca_key, client_key, CLIENT_CN, server=False)
        _write_key(target.ca_key, ca_key)
        _write_key(target.server_key, server_key)
        _write_key(target.client_key, client_key)
        _write_cert(target.ca_cert, ca_cert)
        _write_cert(target.server_cert, server_cert)
        _write_cert(target.client_cert, client_cert)
    except OSError as exc:
        raise CertError(f"cannot write certificates under {target.ca_cert.parent}: {exc}") from exc
    return target


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: supported by Go's crypto/tls (the collector) and by grpc's BoringSSL alike.
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "clawker monitor"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    # Back-date a little so a container whose clock lags the host still accepts the cert.
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=days)


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    not_before, not_after = _validity(CA_DAYS)
    name = _name("clawker monitor CA")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    cn: str,
    *,
    server: bool,
) -> x509.Certificate:
    not_before, not_after = _validity(LEAF_DAYS)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(_sans()), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _sans() -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for san in SERVER_SANS:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    return names


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Create with 0600 from the start: a key must never exist world-readable, even briefly.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def fingerprint(data_dir: Path) -> str:
    """SHA-256 over the collector's certificate files, so a rotation recreates the collector."""
    digest = hashes.Hash(hashes.SHA256())
    target = paths(data_dir)
    for path in (target.ca_cert, target.server_cert, target.server_key):
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            raise CertError(f"cannot read {path}: {exc.strerror} (run `monitor init`)") from exc
    return digest.finalize().hex()
