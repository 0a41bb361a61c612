"""mTLS material from `init`, proven against a real gRPC OTLP receiver.

The receiver is what the collector's trusted lane is: an OTLP logs service over TLS with the
collector certificate, requiring a client certificate signed by the monitor's CA.
"""

from __future__ import annotations

import ipaddress
import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from monitor import certs


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> certs.CertPaths:
    return certs.generate(tmp_path_factory.mktemp("monitor-certs"))


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_paths_layout(tmp_path: Path) -> None:
    p = certs.paths(tmp_path)
    assert p.ca_cert == tmp_path / "certs/ca.pem"
    assert p.server_key == tmp_path / "certs/collector.key"
    assert p.client_cert == tmp_path / "certs/netlogger.pem"
    assert p.client_key == tmp_path / "certs/netlogger.key"


def test_keys_are_0600(material: certs.CertPaths) -> None:
    for key in material.private_keys():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_server_and_client_certificates(material: certs.CertPaths) -> None:
    ca = _cert(material.ca_cert)
    server = _cert(material.server_cert)
    client = _cert(material.client_cert)
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"otel-collector", "localhost"}
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "netlogger"
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca_constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert ca_constraints.ca is True


class _Sink(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self) -> None:
        self.requests: list[logs_service_pb2.ExportLogsServiceRequest] = []

    def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: grpc.ServicerContext
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        self.requests.append(request)
        return logs_service_pb2.ExportLogsServiceResponse()


@pytest.fixture
def receiver(material: certs.CertPaths) -> Iterator[tuple[int, _Sink]]:
    sink = _Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(sink, server)
    credentials = grpc.ssl_server_credentials(
        [(material.server_key.read_bytes(), material.server_cert.read_bytes())],
        root_certificates=material.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield port, sink
    server.stop(grace=None).wait()


def _request() -> logs_service_pb2.ExportLogsServiceRequest:
    record = logs_pb2.LogRecord(
        body=common_pb2.AnyValue(string_value="denied"),
        attributes=[
            common_pb2.KeyValue(key="action", value=common_pb2.AnyValue(string_value="denied"))
        ],
    )
    resource = resource_pb2.Resource(
        attributes=[
            common_pb2.KeyValue(
                key="service.name", value=common_pb2.AnyValue(string_value="ebpf-egress")
            )
        ]
    )
    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource, scope_logs=[logs_pb2.ScopeLogs(log_records=[record])]
            )
        ]
    )


def _export(port: int, credentials: grpc.ChannelCredentials, host: str = "localhost") -> None:
    options = [] if host == "localhost" else [("grpc.ssl_target_name_override", host)]
    with grpc.secure_channel(f"localhost:{port}", credentials, options=options) as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        stub.Export(_request(), timeout=10)


def test_netlogger_client_certificate_is_accepted(
    material: certs.CertPaths, receiver: tuple[int, _Sink]
) -> None:
    port, sink = receiver
    credentials = grpc.ssl_channel_credentials(
        root_certificates=material.ca_cert.read_bytes(),
        private_key=material.client_key.read_bytes(),
        certificate_chain=material.client_cert.read_bytes(),
    )
    _export(port, credentials)
    _export(port, credentials, host="otel-collector")  # the name agents and compose use
    assert len(sink.requests) == 2
    resource = sink.requests[0].resource_logs[0].resource.attributes[0]
    assert resource.value.string_value == "ebpf-egress"


def test_self_made_client_certificate_is_refused(
    material: certs.CertPaths, receiver: tuple[int, _Sink], tmp_path: Path
) -> None:
    port, sink = receiver
    impostor = certs.generate(tmp_path)  # same shape, different CA
    credentials = grpc.ssl_channel_credentials(
        root_certificates=material.ca_cert.read_bytes(),
        private_key=impostor.client_key.read_bytes(),
        certificate_chain=impostor.client_cert.read_bytes(),
    )
    with pytest.raises(grpc.RpcError) as info:
        _export(port, credentials)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert sink.requests == []


def test_missing_client_certificate_is_refused(
    material: certs.CertPaths, receiver: tuple[int, _Sink]
) -> None:
    port, sink = receiver
    credentials = grpc.ssl_channel_credentials(root_certificates=material.ca_cert.read_bytes())
    with pytest.raises(grpc.RpcError) as info:
        _export(port, credentials)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert sink.requests == []


def test_collector_key_cannot_pose_as_client(
    material: certs.CertPaths, receiver: tuple[int, _Sink]
) -> None:
    """The server certificate lacks clientAuth: a stolen collector key does not open the lane."""
    port, sink = receiver
    credentials = grpc.ssl_channel_credentials(
        root_certificates=material.ca_cert.read_bytes(),
        private_key=material.server_key.read_bytes(),
        certificate_chain=material.server_cert.read_bytes(),
    )
    with pytest.raises(grpc.RpcError):
        _export(port, credentials)
    assert sink.requests == []
