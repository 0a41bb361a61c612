"""The OpenTelemetry SDK's gRPC log exporter, fed already-serialized requests.

The SDK exporter keeps what it does well: the channel and its TLS credentials, headers,
compression, the per-request deadline, re-creating the channel after UNAVAILABLE, and its
own metrics. Two things change. Requests arrive as bytes (encode.py builds them), so the
stub sends them without re-serializing; and the exporter retries nothing, because the spool
owns retrying and a blocked sender would delay the half-open probe.

gRPC reports a refused client certificate as "Socket closed": under TLS 1.3 the client's
handshake is done before the server judges its certificate, and gRPC's server then hangs up.
`diagnose` repeats the handshake with the same files through Python's ssl module and works
out the reason, so the agent can say *why* the collector refused it.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.sdk._logs.export import LogRecordExportResult

from netlogger.sinks.otlp.settings import Settings, Tls

_EXPORT_METHOD = "/{}/Export".format(
    logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name
)
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# TLS alerts (as OpenSSL names them) -> what they mean for us.
_ALERTS = {
    "CERTIFICATE_REQUIRED": "the collector requires a client certificate (set cert and key)",
    "UNKNOWN_CA": "the collector does not trust our client certificate (not from its CA)",
    "BAD_CERTIFICATE": "the collector rejected our client certificate",
    "CERTIFICATE_EXPIRED": "the collector says our client certificate expired",
}


@dataclass(frozen=True)
class Request:
    data: bytes  # a serialized ExportLogsServiceRequest
    count: int  # records in it, for the SDK's metrics


class Outcome:
    """What the last Export call returned or raised (the SDK keeps neither)."""

    error: grpc.RpcError | None = None
    response: logs_service_pb2.ExportLogsServiceResponse | None = None


class _PreEncodedStub:
    """LogsService.Export for a request that is already bytes."""

    def __init__(self, channel: grpc.Channel, outcome: Outcome) -> None:
        self._export: grpc.UnaryUnaryMultiCallable[
            bytes, logs_service_pb2.ExportLogsServiceResponse
        ] = channel.unary_unary(
            _EXPORT_METHOD,
            request_serializer=None,  # bytes go out as they are
            response_deserializer=logs_service_pb2.ExportLogsServiceResponse.FromString,
        )
        self._outcome = outcome

    def Export(self, request: bytes, metadata: Any = None, timeout: float | None = None) -> Any:
        self._outcome.error = self._outcome.response = None
        try:
            self._outcome.response = self._export(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as exc:
            self._outcome.error = exc
            raise
        return self._outcome.response


class Exporter(OTLPLogExporter):
    def __init__(self, settings: Settings) -> None:
        # Set before the SDK's constructor: it creates the stub (below) from inside.
        self.outcome = Outcome()
        tls = settings.tls
        credentials = None
        if tls:
            ca, cert, key = tls.pem()
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=cert
            )
        super().__init__(
            endpoint=f"{'https' if tls else 'http'}://{settings.endpoint}",
            insecure=tls is None,
            credentials=credentials,
            headers=settings.headers,
            timeout=settings.timeout,
            # A code no failure carries: the SDK retries nothing; the spool does.
            retryable_error_codes=[grpc.StatusCode.OK],
        )

    def _initialize_channel_and_stub(self) -> None:
        # The SDK calls this at construction and whenever it re-creates the channel.
        # The SDK leaves this method unannotated and declares `_channel` and `_client` by
        # assigning None, so to a type checker they stay None.
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]  # SDK: no hints
        self._client = _PreEncodedStub(self._channel, self.outcome)  # type: ignore[arg-type, assignment]  # SDK: None-typed

    def _translate_data(self, data: Any) -> Any:
        return data.data

    def _count_data(self, data: Any) -> int:
        return int(data.count)

    def send(self, request: Request) -> bool:
        # export() is typed for the SDK's log records; _translate_data and _count_data
        # (above) take a Request instead, so one goes in.
        return self.export(request) == LogRecordExportResult.SUCCESS  # type: ignore[arg-type]  # a Request, see above


def describe(error: grpc.RpcError | None) -> str:
    """A gRPC failure as one line: `UNAVAILABLE: failed to connect ...`."""
    if error is None:
        return "export failed"
    code = error.code()
    details = " ".join(str(error.details() or "").split())
    return f"{getattr(code, 'name', code)}: {details}"


def diagnose(settings: Settings) -> str | None:
    """Why a TLS session with the collector fails, in words; None if it works."""
    tls = settings.tls
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
    if tls.cert and tls.key:
        context.load_cert_chain(tls.cert, tls.key)
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((settings.host, settings.port), settings.timeout) as raw,
            context.wrap_socket(raw, server_hostname=settings.host) as conn,
        ):
            conn.sendall(_H2_PREFACE)
            answer = conn.recv(1)  # an HTTP/2 server always sends SETTINGS first
    except ssl.SSLCertVerificationError as exc:
        return f"the collector's certificate does not verify against our ca: {exc.verify_message}"
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc)
        meaning = next((text for name, text in _ALERTS.items() if name in reason.upper()), None)
        return f"{meaning} (TLS alert {reason})" if meaning else f"TLS handshake failed: {reason}"
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    return None if answer else _refused(tls)


def _refused(tls: Tls) -> str:
    # gRPC's BoringSSL server hangs up without an alert when it rejects the client's
    # certificate, so the reason is worked out from what we sent.
    if not tls.cert:
        return "the collector requires a client certificate (set cert and key)"
    if tls.ca and not _issued_by(tls.cert, tls.ca):
        return (
            f"the collector refused our client certificate: {tls.cert} is not issued by the "
            f"collector's CA ({tls.ca})"
        )
    return "the collector closed the connection after TLS: it refused our client certificate"


def _issued_by(cert: Path, ca: Path) -> bool:
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    for issuer in x509.load_pem_x509_certificates(ca.read_bytes()):
        try:
            leaf.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False
