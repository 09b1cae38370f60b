"""The engine's sampling decisions are the SDK's, for every built-in OTEL_TRACES_SAMPLER; the
export process's OTLP encoding is the SDK's, field for field."""

from __future__ import annotations

import random

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from engine import otlp_wire, span_export, tracing

SAMPLERS = ["always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio"]


@pytest.mark.parametrize("name", SAMPLERS)
def test_fast_decisions_match_the_sdks_sampler(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.3")
    sdk = TracerProvider().sampler
    fast = tracing._fast_sampler({"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": "0.3"})
    assert fast is not None
    monkeypatch.setattr(tracing, "_fast", fast)
    chooser = random.Random(7)
    for _ in range(300):
        trace_id = chooser.getrandbits(128) or 1
        parent = None if chooser.random() < 0.4 else (chooser.getrandbits(64) or 1, chooser.random() < 0.5)
        context = None
        if parent is not None:
            flags = TraceFlags(TraceFlags.SAMPLED if parent[1] else 0)
            context = trace.set_span_in_context(NonRecordingSpan(SpanContext(trace_id, parent[0], True, flags)))
        expected = sdk.should_sample(context, trace_id, "GET /x", SpanKind.SERVER, {}).decision.is_sampled()
        assert tracing._should_sample(trace_id, parent, "GET /x", {}) == expected


def test_a_span_carries_its_context_to_backends() -> None:
    span = tracing.Span("GET", tracing.CLIENT, "4bf92f3577b34da6a3ce929d0e0e4736", 1, True, {}, "gw=1")
    headers = tracing.propagate(span, [("traceparent", "00-old-old-01"), ("accept", "*/*")])
    parent = f"00-4bf92f3577b34da6a3ce929d0e0e4736-{span.span_id:016x}-01"
    assert headers == [("accept", "*/*"), ("traceparent", parent), ("tracestate", "gw=1")]


def test_the_export_process_encodes_spans_as_the_sdk_does() -> None:
    route = {"http.request.method": "GET", "http.route": "/orders/{id}", "interlace.flow": "orders"}
    step = {"interlace.flow": "orders", "interlace.step.id": "orders/steps[0]", "interlace.endpoint": ["a", "b"]}
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    records = [  # as engine/tracing.py Span.end hands them over: the shared dicts are the same objects
        ("GET /orders/{id}", tracing.SERVER, trace_id, 0x1122334455667788, 0x00F067AA0BA902B7, "gw=edge1,x=y",
         1_700_000_000_000_000_000, 1_700_000_000_100_000_000, route,
         {"url.path": "/orders/7", "http.response.status_code": 502, "error.type": "backend-failed"}, tracing.ERROR,
         "the backend answered 502"),
        ("call", tracing.INTERNAL, trace_id, 2, 0x1122334455667788, "gw=edge1,x=y", 1_700_000_000_000_000_001,
         1_700_000_000_090_000_000, step, {"interlace.status": 200, "ratio": 0.25, "cached": False, "note": "é"},
         tracing.UNSET, ""),
        ("GET", tracing.CLIENT, trace_id, 3, 2, "", 5, 2**63 + 7, {}, {"retries": -1, "big": "x" * 20_000},
         tracing.OK, "ignored unless an error"),
        ("process orders", tracing.CONSUMER, "0" * 31 + "1", 4, 0, "", 1, 2, route, {}, tracing.UNSET, ""),
        ("GET /orders/{id}", tracing.SERVER, trace_id, 5, 0, "", 1, 2, route, {"url.path": "/orders/8"},
         tracing.UNSET, ""),
    ]
    resource = Resource.create({"service.name": "orders-facade"})
    sdk = encode_spans([span_export.readable(record, resource) for record in records])
    ours = otlp_wire.request(otlp_wire.resource_and_scope(resource.attributes, span_export.SCOPE.name), records)
    assert ExportTraceServiceRequest.FromString(ours) == sdk


def test_spans_encoded_as_they_end_are_what_the_sdk_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request path's spans (engine/tracing.py ``Span.end``: a server span continuing a
    caller's context, its call's client span with the head and URL made once, a failing step's
    span, a source's root span) decode as the SDK's encoding of the same spans."""
    from connectors import observe
    from engine import telemetry

    monkeypatch.setattr(tracing._exporter, "pending", [])
    monkeypatch.setattr(tracing, "_root_always", True)
    monkeypatch.setattr(tracing, "_fast", (True, True))
    caller = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "gw=edge1"}
    server = tracing.server_span("GET", caller, "/orders/7", "cid-7")
    server.name, server.shared, server.head = telemetry._route_attributes("GET", "orders", "/orders/{id}")
    token = tracing.current.set(server)
    try:
        step = {"interlace.flow": "orders", "interlace.step.id": "orders/steps[0]", "interlace.step.kind": "call"}
        shared, head = observe.head(step, "backend", "http://127.0.0.1:9/api", "GET", tracing.CLIENT)
        client = tracing.Span("GET", tracing.CLIENT, server.trace_id, server.span_id, True, shared, server.trace_state,
                              None, server.trace_field, head, observe.url_attribute("http://127.0.0.1:9/api/o/7?k=s"))
        client.code = 503
        client.fail("503")
        client.end()
        transform = tracing.start_span("transform", tracing.INTERNAL, {"interlace.step.kind": "transform"})
        assert transform is not None
        transform.fail("bad-input", "the body is not JSON")
        transform.set_attribute("interlace.error.status", 400)
        transform.end()
    finally:
        tracing.current.reset(token)
    server.code = 502
    server.attributes["error.type"] = "backend-status"
    server.status = tracing.ERROR
    server.end()
    fresh = tracing.server_span("POST", {}, "/new", "é" * 3)
    fresh.end()  # no route: named by its method alone, as engine/telemetry.py ``end`` does it
    consumer = tracing.start_root_span("process orders", tracing.CONSUMER, {}, {"messaging.system": "rabbitmq"},
                                       {"messaging.message.id": "m-1", "interlace.attempt": 2})
    consumer.end()

    def record(span: tracing.Span, own: dict[str, object]) -> tuple[object, ...]:
        return (span.name, span.kind, span.trace_id, span.span_id, span.parent_id, span.trace_state, span.start_ns,
                span.end_ns, span.shared or {}, own, span.status, span.status_message)

    expected = [
        record(client, {"url.full": "http://127.0.0.1:9/api/o/7", "http.response.status_code": 503,
                        "error.type": "503"}),
        record(transform, {"error.type": "bad-input", "interlace.error.status": 400}),
        record(server, {"url.path": "/orders/7", "interlace.correlation_id": "cid-7", "http.response.status_code": 502,
                        "error.type": "backend-status"}),
        record(fresh, {"url.path": "/new", "interlace.correlation_id": "é" * 3}),
        record(consumer, {"messaging.message.id": "m-1", "interlace.attempt": 2}),
    ]
    assert server.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and server.parent_id == 0x00F067AA0BA902B7
    resource = Resource.create({"service.name": "orders-facade"})
    sdk = encode_spans([span_export.readable(one, resource) for one in expected])
    head_and_scope = otlp_wire.resource_and_scope(resource.attributes, span_export.SCOPE.name)
    ours = ExportTraceServiceRequest.FromString(otlp_wire.request(head_and_scope, tracing._exporter.pending))
    assert ours == sdk


def test_a_requests_server_span_from_the_front_is_what_the_sdk_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """engine/telemetry.py's request object is its SERVER span (``tracing.start_server`` and
    ``end_server``): continuing a caller's context and failing with a 502, with a call's CLIENT
    span under it (``record_call``); a fresh request that found no route; one routed without
    its route's tallies, failing with a 404.  They decode as the SDK's encoding of the same spans."""
    import itertools

    from connectors import observe
    from engine import telemetry

    clock = itertools.count(1_700_000_000_000_000_000, 1_000)
    monkeypatch.setattr(tracing._exporter, "pending", [])
    monkeypatch.setattr(tracing, "_root_always", True)
    monkeypatch.setattr(tracing, "_fast", (True, True))
    monkeypatch.setattr(tracing, "_time_ns", lambda: next(clock))
    monkeypatch.setattr(tracing, "ENABLED", True)

    class Failed(Exception):
        code = "backend-status"

    caller = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "gw=edge1"}
    seen = telemetry.begin("GET", "/orders/7", caller, "cid-7")
    assert tracing.current.get() is seen
    telemetry.routed(seen, "orders", "/orders/{id}", telemetry.RouteTallies("orders", "/orders/{id}"))
    step = {"interlace.flow": "orders", "interlace.step.id": "orders/steps[0]", "interlace.step.kind": "call"}
    shared, head = observe.head(step, "backend", "http://127.0.0.1:9/api", "GET", tracing.CLIENT)
    client_id = bytes.fromhex("0102030405060708")
    begun = next(clock)
    tracing.record_call(seen, client_id, head, observe.url_attribute("http://127.0.0.1:9/api/o/7?k=s"), begun, 503)
    client_end = next(clock) - 1_000  # the reading record_call took
    telemetry.end(seen, 502, None, None, Failed("the backend answered 502"))
    assert tracing.current.get() is None
    fresh = telemetry.begin("POST", "/new", {}, "é" * 3)
    telemetry.end(fresh, 200)
    new_id = "4bf92f3577b34da6a3ce929d0e0e4736"  # 32 characters, as the engine's own ids have
    missing = telemetry.begin("DELETE", "/gone/1", {}, new_id)
    telemetry.routed(missing, "gone", "/gone/{n}")
    telemetry.end(missing, 404, None, None, Failed("no such thing"))
    # the usual request (a trace of its own, the engine's own id, a call answered, no error): its
    # spans are each written in one pack (end_server's and record_call's shapes)
    plain_id = "0123456789abcdef0123456789abcdef"
    plain = telemetry.begin("GET", "/orders/8", {}, plain_id)
    telemetry.routed(plain, "orders", "/orders/{id}", telemetry.RouteTallies("orders", "/orders/{id}"))
    plain_begun = next(clock)
    tracing.record_call(plain, bytes.fromhex("0a0b0c0d0e0f0102"), head,
                        observe.url_attribute("http://127.0.0.1:9/api/o/8"), plain_begun, 200)
    plain_call_end = next(clock) - 1_000
    telemetry.end(plain, 200)

    def ended(span: telemetry.Seen) -> int:  # the clock's reading after the one its start took
        if span is seen:
            return client_end + 2_000
        return plain_call_end + 2_000 if span is plain else span.start_ns + 1_000

    route = {"http.request.method": "GET", "http.route": "/orders/{id}", "interlace.flow": "orders"}
    expected = [
        ("GET", tracing.CLIENT, seen.trace_id, 0x0102030405060708, seen.span_id,
         "gw=edge1", begun, client_end, shared,
         {"url.full": "http://127.0.0.1:9/api/o/7", "http.response.status_code": 503, "error.type": "503"},
         tracing.ERROR, ""),
        ("GET /orders/{id}", tracing.SERVER, "4bf92f3577b34da6a3ce929d0e0e4736", seen.span_id, 0x00F067AA0BA902B7,
         "gw=edge1", seen.start_ns, ended(seen), route,
         {"url.path": "/orders/7", "interlace.correlation_id": "cid-7", "http.response.status_code": 502,
          "error.type": "backend-status"}, tracing.ERROR, ""),
        ("POST", tracing.SERVER, fresh.trace_id, fresh.span_id, 0, "", fresh.start_ns, ended(fresh),
         {"http.request.method": "POST"},
         {"url.path": "/new", "interlace.correlation_id": "é" * 3, "http.response.status_code": 200},
         tracing.UNSET, ""),
        ("DELETE /gone/{n}", tracing.SERVER, missing.trace_id, missing.span_id, 0, "", missing.start_ns,
         ended(missing), {"http.request.method": "DELETE", "http.route": "/gone/{n}", "interlace.flow": "gone"},
         {"url.path": "/gone/1", "interlace.correlation_id": new_id, "http.response.status_code": 404,
          "error.type": "backend-status"}, tracing.UNSET, ""),
        ("GET", tracing.CLIENT, plain.trace_id, 0x0A0B0C0D0E0F0102, plain.span_id, "", plain_begun, plain_call_end,
         shared, {"url.full": "http://127.0.0.1:9/api/o/8", "http.response.status_code": 200}, tracing.UNSET, ""),
        ("GET /orders/{id}", tracing.SERVER, plain.trace_id, plain.span_id, 0, "", plain.start_ns, ended(plain), route,
         {"url.path": "/orders/8", "interlace.correlation_id": plain_id, "http.response.status_code": 200},
         tracing.UNSET, ""),
    ]
    resource = Resource.create({"service.name": "orders-facade"})
    sdk = encode_spans([span_export.readable(one, resource) for one in expected])
    head_and_scope = otlp_wire.resource_and_scope(resource.attributes, span_export.SCOPE.name)
    ours = ExportTraceServiceRequest.FromString(otlp_wire.request(head_and_scope, tracing._exporter.pending))
    assert ours == sdk


def test_the_plain_transport_posts_and_reads_every_shape_of_answer() -> None:
    """``span_export.PlainTransport`` (the OTLP/HTTP post to an http:// collector) against a real
    server on 127.0.0.1: a Content-Length answer on a kept-alive connection, an interim 100
    before the answer, a chunked answer, an answer that closes the connection (the next post
    opens another), an error status with its reason, and a collector that is gone."""
    import socket
    import threading

    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 503 Busy Now\r\nRetry-After: 2\r\nContent-Length: 4\r\n\r\nbusy",
    ]
    received: list[bytes] = []
    connections: list[int] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while answers:
            connection, _ = listener.accept()
            connections.append(1)
            with connection:
                while answers:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += connection.recv(65536)
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    while len(body) < length:
                        body += connection.recv(65536)
                    received.append(head + b"\r\n\r\n" + body)
                    answer = answers.pop(0)
                    connection.sendall(answer)
                    if b"Connection: close" in answer:
                        break

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    transport = span_export.PlainTransport("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/v1/traces"
    headers = {"Content-Type": "application/x-protobuf", "Authorization": "Bearer t"}
    first = transport.request("POST", url, headers=headers, timeout=5, data=b"\x0a\x00" * 40_000)
    assert (first.status_code, first.reason, first.content()) == (200, "OK", b"ok")
    assert first.headers().get("CONTENT-TYPE") == "application/x-protobuf"
    assert transport.request("POST", url, headers=headers, timeout=5, data=b"b").status_code == 200
    chunked = transport.request("POST", url, headers=headers, timeout=5, data=b"c")
    assert (chunked.status_code, chunked.content()) == (200, b"abcde")
    assert transport.request("POST", url, headers=headers, timeout=5, data=b"d").content() == b"x"
    busy = transport.request("POST", url, headers=headers, timeout=5, data=b"e")
    assert (busy.status_code, busy.reason, busy.content(), busy.headers()["retry-after"]) == (503, "Busy Now", b"busy",
                                                                                            "2")
    server.join(5)
    assert len(connections) == 2  # kept alive until the collector closed it
    assert received[0].startswith(b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nAuthorization: Bearer t\r\n" in received[0] and b"\r\nContent-Length: 80000\r\n" in received[0]
    assert received[0].endswith(b"\x0a\x00" * 40_000) and received[4].endswith(b"\r\n\r\ne")
    listener.close()
    gone = transport.request("POST", url, headers=headers, timeout=5, data=b"f")
    assert gone.status_code is None and transport.is_connection_error(gone.error)
    split = transport.request("POST", url, headers={"X-Bad": "a\r\nInjected: 1"}, timeout=5, data=b"g")
    assert isinstance(split.error, ValueError) and not transport.is_connection_error(split.error)
    transport.close()
