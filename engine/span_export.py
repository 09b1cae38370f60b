"""How a worker's finished spans leave: engine/tracing.py's export thread hands each batch (a
list of span tuples) to ``Sender.send``, which encodes it as OTLP's ``ExportTraceServiceRequest``
(engine/otlp_wire.py: the SDK's own encoder cost ~70 µs a span) and sends it with the SDK's
exporter chosen by ``OTEL_TRACES_EXPORTER`` and ``OTEL_EXPORTER_OTLP_PROTOCOL`` (OTLP over
HTTP/protobuf or gRPC; the console exporter gets the SDK's span objects), which reads its
endpoint, headers, timeout, compression and certificates from the ``OTEL_EXPORTER_OTLP_*``
variables of the process environment and retries as the OTLP specification says.

In the worker's thread, not a process of its own: handing a batch to a process cost a pickle in
the worker and an unpickle there (~13,000 instructions a span of the ~35,000 the whole export
took, callgrind), and the export's CPU is the pod's CPU wherever it runs.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpResponseParser
from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from engine import otlp_wire
from engine.tracing import exporters, protocol

log = logging.getLogger("interlace.span_export")

SCOPE = InstrumentationScope("interlace")
KINDS = {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT, 4: SpanKind.PRODUCER, 5: SpanKind.CONSUMER}
STATUS = {0: StatusCode.UNSET, 1: StatusCode.OK, 2: StatusCode.ERROR}

Send = Callable[[bytes, Sequence[bytes | tuple[Any, ...]]], None]


class _GrpcExporter:
    """The SDK's gRPC exporter (channel, credentials, headers, retries as the OTLP specification
    says) sending our encoded request: ``_translate_data`` is its hook from data to the request."""

    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        class Exporter(OTLPSpanExporter):
            def _translate_data(self, data: Any) -> ExportTraceServiceRequest:
                request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(data[0])
                return request

            def _count_data(self, data: Any) -> int:
                return int(data[1])

        self.exporter = Exporter()

    def send(self, data: bytes, batch: Sequence[bytes | tuple[Any, ...]]) -> None:
        self.exporter._export((data, len(encoded_spans(batch))))  # type: ignore[arg-type]


def build_senders(resource: Resource) -> list[tuple[Send, Callable[[], None]]]:
    """(send, shutdown) of each exporter OTEL_TRACES_EXPORTER names."""
    chosen: list[tuple[Send, Callable[[], None]]] = []
    for name in exporters(os.environ):
        if name == "console":
            console = ConsoleSpanExporter()
            chosen.append((partial(_console, console, resource), console.shutdown))
        elif protocol(os.environ) == "grpc":
            grpc = _GrpcExporter()
            chosen.append((grpc.send, grpc.exporter.shutdown))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            # the SDK's HTTP exporter, without its encoder: its client compresses, posts and retries
            http = HttpExporter()
            transport = _urllib3_transport(http._endpoint)
            if transport is None:
                _environment_once(http)
            else:
                http._client._transport.close()
                http._client._transport = transport
            chosen.append((partial(_post, http), http.shutdown))
    return chosen


def _urllib3_transport(endpoint: str) -> Any:
    """A lighter transport for the SDK's HTTP exporter (its client still compresses, adds the
    headers, times out and retries): for an ``http://`` endpoint one kept-alive connection
    (``PlainTransport``: a socket, httptools' parser), for ``https://`` the SDK's urllib3 transport
    with the certificates its default (requests) transport would use, from the same variables;
    None where only requests does what the environment asks: a proxy for the endpoint, a netrc
    entry, a credential provider.

    Why: a post of a 512-span batch took ~2,300,000 instructions through requests (its session's
    hooks, cookies and adapters), ~990,000 through urllib3, ~480,000 through http.client and
    ~100,000 through ``PlainTransport`` (callgrind)."""
    from urllib.request import getproxies, proxy_bypass

    from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport
    from opentelemetry.sdk import environment_variables as names
    from requests.utils import get_netrc_auth

    env = os.environ
    if any(key.startswith("OTEL_PYTHON_EXPORTER_OTLP_HTTP") and key.endswith("CREDENTIAL_PROVIDER") for key in env):
        return None
    parts = urlsplit(endpoint)
    if (parts.scheme in getproxies() and not proxy_bypass(parts.hostname or "")) or get_netrc_auth(endpoint):
        return None
    if parts.scheme == "http" and parts.hostname:
        return PlainTransport(parts.hostname, parts.port or 80)
    verify: bool | str = (env.get(names.OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE)
                          or env.get(names.OTEL_EXPORTER_OTLP_CERTIFICATE) or True)
    key = env.get(names.OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY) or env.get(names.OTEL_EXPORTER_OTLP_CLIENT_KEY)
    certificate = (env.get(names.OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE)
                   or env.get(names.OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE))
    return Urllib3HTTPTransport(verify=verify, cert=(certificate, key) if certificate and key else certificate)


def _environment_once(http: Any) -> None:
    """Read the HTTP client's environment settings once, not on every post.

    requests reads the proxies, the CA bundle and netrc from the environment on each request
    (walking ``os.environ`` twice: a third of a post's CPU, measured). This process's environment
    never changes, so the same settings are read once, for the exporter's endpoint, and kept on
    its session."""
    session = getattr(getattr(getattr(http, "_client", None), "_transport", None), "_session", None)
    endpoint = getattr(http, "_endpoint", None)
    if session is None or not endpoint or not session.trust_env:
        return
    from requests.utils import get_netrc_auth

    settings = session.merge_environment_settings(endpoint, {}, None, session.verify, None)
    session.proxies = settings["proxies"]
    session.verify = settings["verify"]
    if session.auth is None:
        session.auth = get_netrc_auth(endpoint)
    session.trust_env = False


class PlainTransport(BaseHTTPTransport):
    """Posts over one kept-alive plain HTTP/1.1 connection: the request written in one send, the
    answer read by httptools' parser (llhttp, as the http connector reads its backends' answers:
    connectors/_http1.py); the connection opened again after a failure or an answer that does not
    keep it alive.  The export thread is its only user.

    Why not http.client: a post of a 512-span batch cost ~480,000 instructions through it, most
    of it its header handling and the email parser it reads an answer's headers with (callgrind),
    ~1,900 a proxied request at two spans each."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.connection: socket.socket | None = None

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                timeout: float | None = None, data: bytes | None = None) -> BaseHTTPResult:
        parts = urlsplit(url)
        target = f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
        body = data or b""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        for name, value in (headers or {}).items():
            if name.lower() not in _OWN_HEADERS:
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        # one line break per line and no other: a CR or LF in a header would split the head
        if head.count("\n") != len(lines) + 1 or head.count("\r") != len(lines) + 1:
            return PlainResult(error=ValueError("an OTLP header's name or value has a line break"))
        answer = _Answer()
        try:
            connection = self.connection
            if connection is None:
                connection = self.connection = socket.create_connection((self.host, self.port), timeout)
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                connection.settimeout(timeout)
            connection.sendall(head.encode("latin-1"))
            connection.sendall(body)  # not joined to the head: a copy of the whole batch
            parser = answer.parser = HttpResponseParser(answer)
            while not answer.complete:
                chunk = connection.recv(65536)
                if not chunk:
                    raise ConnectionResetError("the collector closed the connection before it answered")
                parser.feed_data(chunk)
        except Exception as error:  # the SDK's client decides: a connection error is retried once
            self.close()
            return PlainResult(error=error)
        if not answer.keep_alive:
            self.close()
        return PlainResult(status_code=answer.status, reason=answer.reason, body=b"".join(answer.body),
                           fields=answer.fields)

    def is_connection_error(self, exception: Exception | None) -> bool:
        return isinstance(exception, (OSError, HttpParserError))

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()


# headers the transport writes itself (framing, the host it connects to)
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class _Answer:
    """One answer as httptools' parser reads it (its callbacks); interim answers (1xx) skipped."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.status = 0
        self.reason = ""
        self.fields: dict[str, str] = {}
        self.body: list[bytes] = []
        self.headed = False
        self.complete = False
        self.keep_alive = False

    def on_status(self, reason: bytes) -> None:
        self.reason = reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer: the real one follows
            self.fields = {}
            return
        self.status = status
        self.headed = True

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        if self.headed:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()


@dataclass(frozen=True, slots=True)
class PlainResult(BaseHTTPResult):
    body: bytes = b""
    fields: dict[str, str] = field(default_factory=dict)  # the reply's headers, names in lower case

    def content(self) -> bytes:
        return self.body

    def headers(self) -> Mapping[str, str]:
        return _Folded(self.fields)


class _Folded(dict[str, str]):
    """Headers looked up whatever the case of the name asked for."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


def _post(http: Any, data: bytes, _batch: Sequence[bytes | tuple[Any, ...]]) -> None:
    result = http._client.export(data)
    if not result.success:
        log.warning("span export failed: %s", result.error)


def _console(console: ConsoleSpanExporter, resource: Resource, _data: bytes,
             batch: Sequence[bytes | tuple[Any, ...]]) -> None:
    console.export([readable(record, resource) if isinstance(record, tuple) else readable_encoded(record, resource)
                    for record in encoded_spans(batch)])


def encoded_spans(batch: Sequence[bytes | tuple[Any, ...]]) -> Sequence[bytes | tuple[Any, ...]]:
    """The spans of a batch: engine/tracing.py's pieces (framing, span) or span tuples."""
    return batch if batch and isinstance(batch[0], tuple) else batch[1::2]


def _value(value: Any) -> Any:
    """An ``AnyValue``'s Python value."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


def readable_encoded(encoded: bytes, resource: Resource) -> ReadableSpan:
    """The SDK's span object of a span the request path encoded (for the console exporter)."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

    message = SpanMessage.FromString(encoded)
    record: tuple[Any, ...] = (
        message.name, message.kind, message.trace_id.hex(), int.from_bytes(message.span_id, "big"),
        int.from_bytes(message.parent_span_id, "big"), message.trace_state, message.start_time_unix_nano,
        message.end_time_unix_nano, {}, {a.key: _value(a.value) for a in message.attributes}, message.status.code,
        message.status.message)
    return readable(record, resource)


def readable(span: tuple[Any, ...], resource: Resource) -> ReadableSpan:
    """The SDK's span object of a worker's tuple (for the console exporter, and to check
    engine/otlp_wire.py against the SDK's encoder)."""
    name, kind, trace_id, span_id, parent_id, trace_state, start, end, shared, own, status, message = span
    state = TraceState.from_header([trace_state]) if trace_state else TraceState()
    flags = TraceFlags(TraceFlags.SAMPLED)
    trace_number = int(trace_id, 16)
    parent = SpanContext(trace_number, parent_id, is_remote=kind in (2, 5), trace_flags=flags, trace_state=state) \
        if parent_id else None
    return ReadableSpan(
        name=name, context=SpanContext(trace_number, span_id, is_remote=False, trace_flags=flags, trace_state=state),
        parent=parent, resource=resource, attributes={**shared, **own}, kind=KINDS.get(kind, SpanKind.INTERNAL),
        status=Status(STATUS[status], message or None) if status == 2 else Status(STATUS[status]),
        start_time=start, end_time=end, instrumentation_scope=SCOPE)


class Sender:
    """Encodes a batch once and sends it with each exporter ``OTEL_TRACES_EXPORTER`` names."""

    def __init__(self) -> None:
        resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or "interlace"})
        self.head = otlp_wire.resource_and_scope(resource.attributes, SCOPE.name)
        self.senders = build_senders(resource)

    def send(self, batch: Sequence[bytes | tuple[Any, ...]]) -> None:
        data = otlp_wire.request(self.head, batch)
        for send, _ in self.senders:
            try:
                send(data, batch)
            except Exception as exc:  # one failed export must not end the exporting: the next batch may go
                log.warning("span export failed: %s: %s", type(exc).__name__, exc)

    def shutdown(self) -> None:
        for _, shutdown in self.senders:
            shutdown()
