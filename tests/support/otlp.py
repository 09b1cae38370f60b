"""OTLP trace receivers on 127.0.0.1 for tests: the protocol's real endpoints, decoding spans
with the protocol's own messages (opentelemetry-proto).

    with OtlpHttpReceiver() as receiver:          # POST /v1/traces, application/x-protobuf
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
        ...
        spans = receiver.wait_for(lambda spans: len(spans) >= 3)

    with OtlpGrpcReceiver() as receiver:          # opentelemetry.proto.collector.trace.v1.TraceService/Export
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}

A ``Span`` here is the decoded protobuf span plus its service name, with ids as hex strings
and attributes as a plain dict.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.services import free_port


@dataclass(frozen=True)
class Span:
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 1 internal, 2 server, 3 client
    trace_id: str
    span_id: str
    parent_span_id: str
    trace_state: str
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    service: str
    start: int  # unix nanoseconds


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


def decode(request: trace_service_pb2.ExportTraceServiceRequest) -> list[Span]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(Span(span.name, span.kind, span.trace_id.hex(), span.span_id.hex(),
                                  span.parent_span_id.hex(), span.trace_state,
                                  {a.key: _value(a.value) for a in span.attributes}, span.status.code,
                                  str(resource.get("service.name", "")), span.start_time_unix_nano))
    return spans


class _Collected:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self.changed = threading.Condition()

    def add(self, spans: list[Span]) -> None:
        with self.changed:
            self.spans.extend(spans)
            self.requests += 1
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[list[Span]], bool], timeout: float = 15) -> list[Span]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.spans):
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [(s.name, s.span_id, s.parent_span_id) for s in self.spans]
                    raise AssertionError(f"spans not received in {timeout}s; got {names}")
                self.changed.wait(left)
            return list(self.spans)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # an exporter that goes away mid-connection (the engine stopped) is no test failure


class OtlpHttpReceiver(_Collected):
    """OTLP/HTTP: ``POST /v1/traces`` with a protobuf ExportTraceServiceRequest (gzip or not)."""

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        collected = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                collected.add(decode(request))
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpHttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class OtlpGrpcReceiver(_Collected):
    """OTLP/gRPC: the TraceService's Export method, served by grpcio on loopback (plaintext)."""

    def __init__(self) -> None:
        super().__init__()
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        collected = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                collected.add(decode(request))
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._server)
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")

    def __enter__(self) -> OtlpGrpcReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(0)
