"""A real OTLP/gRPC logs receiver with mTLS, as the collector's trusted lane runs it.

Built from opentelemetry-proto's service stubs; TLS material comes from `monitor.certs`
(the files `netlogger monitor init` makes). It binds a loopback port chosen by the kernel the
first time and the same port on every restart, so a client sees one endpoint go away and
come back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from monitor.certs import CertPaths


class _Servicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def Export(self, request: ExportLogsServiceRequest, context: Any) -> Any:
        self._receiver.accept(request)
        return logs_service_pb2.ExportLogsServiceResponse()


class Receiver:
    """Collects every request; `start()`/`stop()` may alternate any number of times."""

    def __init__(self, certs: CertPaths, *, parse: bool = True) -> None:
        self.certs = certs
        # False (benchmarks): keep requests as bytes and parse them in `count_raw`, after the
        # clock stops, so the receiver's parsing is not what the sender's figure measures.
        self.parse = parse
        self.raw: list[bytes] = []
        self.port = 0
        self.requests: list[ExportLogsServiceRequest] = []
        self.record_count = 0
        self._server: grpc.Server | None = None
        self._cond = threading.Condition()

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.certs.server_key.read_bytes(), self.certs.server_cert.read_bytes())],
            root_certificates=self.certs.ca_cert.read_bytes(),
            require_client_auth=True,
        )

    def start(self) -> Receiver:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        if self.parse:
            logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Servicer(self), server)
        else:
            server.add_generic_rpc_handlers((self._raw_handler(),))
        port = server.add_secure_port(f"127.0.0.1:{self.port}", self._credentials())
        if not port:
            raise RuntimeError(f"cannot bind 127.0.0.1:{self.port}")
        self.port = port
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def accept(self, request: ExportLogsServiceRequest) -> None:
        count = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
        with self._cond:
            self.requests.append(request)
            self.record_count += count
            self._cond.notify_all()

    def _raw_handler(self) -> grpc.GenericRpcHandler:
        def export(request: bytes, context: Any) -> logs_service_pb2.ExportLogsServiceResponse:
            with self._cond:
                self.raw.append(request)
            return logs_service_pb2.ExportLogsServiceResponse()

        service = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name
        method = grpc.unary_unary_rpc_method_handler(
            export,
            request_deserializer=None,
            response_serializer=logs_service_pb2.ExportLogsServiceResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(service, {"Export": method})

    def count_raw(self) -> int:
        """Parse what arrived as bytes (parse=False) since the last call; count its records."""
        with self._cond:
            raw, self.raw = self.raw, []
        requests = [ExportLogsServiceRequest.FromString(data) for data in raw]
        return sum(
            len(s.log_records) for q in requests for r in q.resource_logs for s in r.scope_logs
        )

    def records(self) -> list[LogRecord]:
        with self._cond:
            return [
                rec
                for req in self.requests
                for res in req.resource_logs
                for scope in res.scope_logs
                for rec in scope.log_records
            ]

    def wait_for(self, count: int, timeout: float = 20.0) -> bool:
        """True once `count` records arrived; a bounded wait for eventual delivery."""
        with self._cond:
            return self._cond.wait_for(lambda: self.record_count >= count, timeout)


def value(v: AnyValue) -> Any:
    """An AnyValue as the Python value of the field it holds (keeping its type)."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attributes(rec: LogRecord) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in rec.attributes}


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll `predicate` until it holds or `timeout` passes (for state owned by other threads)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
