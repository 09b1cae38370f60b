"""Tracing: the engine as a real process exports spans over OTLP to receivers on loopback
(the protocol's real endpoints, decoded with opentelemetry-proto); the span tree, the gateway's
trace continued and the context handed to backends are checked as a platform team sees them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.backends import BackendServer
from tests.support.engine import REPO, run_engine, write_flows
from tests.support.otlp import OtlpGrpcReceiver, OtlpHttpReceiver, Span
from tests.support.services import free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SERVER, CLIENT, INTERNAL = 2, 3, 1
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_SERVICE_NAME": "orders-facade"}

FLOWS = """
endpoints:
  backend:
    http: {url: "%s"}
flows:
  lookup:
    source: {http: {method: POST, path: "/items/{id}"}}
    steps:
      - log: looking up ${path.id}
      - call: {endpoint: backend, method: POST, path: "/things/${path.id}", expect_status: [2xx]}
      - transform: {jmespath: "{echoed: @}"}
"""


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


def children(spans: list[Span], parent: Span) -> list[Span]:
    return [s for s in spans if s.parent_span_id == parent.span_id and s.trace_id == parent.trace_id]


def one(spans: list[Span], **match: object) -> Span:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, [(s.name, s.kind) for s in spans])
    return found[0]


def test_http_protobuf_export_continues_the_gateways_trace_down_to_the_backend(
        tmp_path: Path, backend: BackendServer) -> None:
    folder = write_flows(tmp_path / "flows", FLOWS % backend.url)
    with OtlpHttpReceiver() as receiver, run_engine(
            folder, env={**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}) as engine:
        reply = httpx.post(f"{engine.url}/items/7", json={"a": 1},
                           headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "gw=edge1"})
        assert reply.status_code == 200 and reply.json() == {"echoed": {"a": 1}}
        spans = receiver.wait_for(lambda got: any(s.kind == SERVER for s in got) and len(got) >= 3)

    server = one(spans, kind=SERVER)
    assert (server.name, server.trace_id, server.parent_span_id) == ("POST /items/{id}", TRACE_ID, PARENT_ID)
    assert server.trace_state == "gw=edge1"
    assert server.service == "orders-facade"
    assert server.attributes["http.route"] == "/items/{id}"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["interlace.flow"] == "lookup"
    steps = children(spans, server)
    # log does no work: no span; the call's only work is its request: the CLIENT span is the step's
    assert [(s.kind, s.name) for s in steps] == [(CLIENT, "POST"), (INTERNAL, "transform")]
    client = steps[0]
    assert client.attributes["interlace.endpoint"] == "backend"
    assert client.attributes["interlace.step.id"] == "lookup/steps[1]"
    assert client.attributes["interlace.step.kind"] == "call"
    assert client.attributes["interlace.flow"] == "lookup"
    assert client.attributes["interlace.url"] == backend.url
    assert client.attributes["url.full"] == f"{backend.url}/things/7"
    assert client.attributes["http.response.status_code"] == 200
    # the backend got the client span's context, not the gateway's: its spans join this trace
    seen = backend.requests[-1]
    assert seen.headers["traceparent"] == f"00-{TRACE_ID}-{client.span_id}-01"
    assert seen.headers["tracestate"] == "gw=edge1"


def test_grpc_export_and_a_failing_backend_marks_the_spans(tmp_path: Path, backend: BackendServer) -> None:
    folder = write_flows(tmp_path / "flows", FLOWS % backend.url)
    backend.set_behaviour(statuses=[503])
    env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_TRACES_EXPORTER": "otlp"}
    with OtlpGrpcReceiver() as receiver:
        env |= {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_INSECURE": "true"}
        with run_engine(folder, env=env) as engine:
            reply = httpx.post(f"{engine.url}/items/9", json={},
                               headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
            assert reply.status_code == 502
            spans = receiver.wait_for(lambda got: any(s.kind == SERVER for s in got) and len(got) >= 2)

    server = one(spans, kind=SERVER)
    assert server.trace_id == TRACE_ID and server.status_code == 2  # error
    assert server.attributes["error.type"] == "backend-status"
    (client,) = children(spans, server)
    assert client.attributes["interlace.step.id"] == "lookup/steps[1]"
    assert client.attributes["http.response.status_code"] == 503 and client.status_code == 2
    assert client.attributes["error.type"] == "503"


RETRYING = """
endpoints:
  backend:
    http: {url: "%s", retry: {attempts: 3, backoff: 10ms, on_status: [503]}}
flows:
  lookup:
    source: {http: {method: POST, path: "/items/{id}"}}
    steps:
      - call: {endpoint: backend, method: POST, path: "/things/${path.id}"}
      - enrich: {call: {endpoint: backend, method: POST, path: /more}, var: more}
"""


def test_each_attempt_of_a_call_is_a_client_span_of_the_step(tmp_path: Path, backend: BackendServer) -> None:
    folder = write_flows(tmp_path / "flows", RETRYING % backend.url)
    backend.set_behaviour(statuses=[503])  # the first attempt fails, the retry is answered
    with OtlpHttpReceiver() as receiver, run_engine(
            folder, env={**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}) as engine:
        assert httpx.post(f"{engine.url}/items/3", json={}).status_code == 200
        spans = receiver.wait_for(lambda got: any(s.kind == SERVER for s in got) and len(got) >= 5)
    server = one(spans, kind=SERVER)
    steps = sorted(children(spans, server), key=lambda s: s.start)
    # the call step: one CLIENT span per attempt, each saying which step it is; the enrich step
    # does more than its call (the merge): its INTERNAL span, its CLIENT span under it
    assert [(s.kind, s.name, s.attributes.get("http.response.status_code")) for s in steps] == [
        (CLIENT, "POST", 503), (CLIENT, "POST", 200), (INTERNAL, "enrich", None)]
    assert {s.attributes["interlace.step.id"] for s in steps[:2]} == {"lookup/steps[0]"}
    assert [s.status_code for s in steps[:2]] == [2, 0]
    (enrich_client,) = children(spans, steps[2])
    assert enrich_client.kind == CLIENT and "interlace.step.id" not in enrich_client.attributes


def test_sampling_follows_the_gateways_decision_and_the_configured_sampler(
        tmp_path: Path, backend: BackendServer) -> None:
    folder = write_flows(tmp_path / "flows", FLOWS % backend.url)
    unsampled, sampled = "1" * 32, "2" * 32
    with OtlpHttpReceiver() as receiver, run_engine(
            folder, env={**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}) as engine:
        httpx.post(f"{engine.url}/items/1", json={}, headers={"traceparent": f"00-{unsampled}-{PARENT_ID}-00"})
        httpx.post(f"{engine.url}/items/2", json={}, headers={"traceparent": f"00-{sampled}-{PARENT_ID}-01"})
        spans = receiver.wait_for(lambda got: any(s.kind == SERVER for s in got))
    assert {s.trace_id for s in spans} == {sampled}
    # the unsampled request still told the backend, with the sampled flag off
    assert backend.requests[0].headers["traceparent"].startswith(f"00-{unsampled}-")
    assert backend.requests[0].headers["traceparent"].endswith("-00")

    with OtlpHttpReceiver() as receiver, run_engine(folder, env={
            **FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_TRACES_SAMPLER": "always_off"}) as engine:
        httpx.post(f"{engine.url}/items/3", json={}, headers={"traceparent": f"00-{sampled}-{PARENT_ID}-01"})
        assert httpx.post(f"{engine.url}/items/4", json={}).status_code == 200
        engine.terminate()  # shutting down exports whatever is buffered: nothing
    assert receiver.spans == []


def test_an_unknown_protocol_is_refused_at_start(tmp_path: Path, backend: BackendServer) -> None:
    folder = write_flows(tmp_path / "flows", FLOWS % backend.url)
    with run_engine(folder, wait_ready=False, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
                                                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}) as engine:
        assert engine.process.wait(20) == 2
        assert ("OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported; use one of: http/protobuf, grpc"
                in engine.log())


def tree(spans: list[Span]) -> list[str]:
    """The spans as an indented tree, each line ``name [kind] attributes``."""
    kinds = {1: "internal", 2: "server", 3: "client"}
    ids = {s.span_id for s in spans}
    lines: list[str] = []

    def walk(span: Span, depth: int) -> None:
        detail = span.attributes.get("interlace.endpoint") or span.attributes.get("http.route") or ""
        status = span.attributes.get("http.response.status_code", "")
        lines.append(f"{'  ' * depth}{span.name} [{kinds[span.kind]}] {detail} {status}".rstrip())
        for child in sorted(children(spans, span), key=lambda s: s.start):
            walk(child, depth + 1)

    for root in [s for s in spans if s.parent_span_id not in ids]:
        walk(root, 0)
    return lines


def test_the_orders_example_as_one_trace(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    for name in ("orders.yaml", "demo-backends.yaml"):
        shutil.copy(REPO / "flows" / name, folder / name)
    port = free_port()
    demo = f"http://127.0.0.1:{port}/_demo"
    with OtlpHttpReceiver() as receiver, run_engine(folder, port=port, env={
            **FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "ORDERS_API_URL": f"{demo}/orders-api", "INVENTORY_URL": f"{demo}/inventory"}) as engine:
        reply = httpx.get(f"{engine.url}/orders/1001", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        assert reply.status_code == 200, reply.text
        spans = receiver.wait_for(lambda got: sum(s.kind == SERVER for s in got) >= 3)
    lines = tree(spans)
    (tmp_path / "orders-trace.txt").write_text("\n".join(lines) + "\n")
    assert {s.trace_id for s in spans} == {TRACE_ID}  # the stand-in backends' spans join the same trace
    assert lines[0] == "GET /orders/{id} [server] /orders/{id} 200"
    assert "  GET [client] orders-api 200" in lines  # the call step: its request is its only work
    assert "    GET /_demo/orders-api/orders/{id} [server] /_demo/orders-api/orders/{id} 200" in lines
    assert "  enrich [internal] inventory" in lines
    assert "    POST [client] inventory 200" in lines
    assert "      POST /_demo/inventory [server] /_demo/inventory 200" in lines
    assert "  transform [internal]" in lines
