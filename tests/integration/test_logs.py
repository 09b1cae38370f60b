"""Logs as a collector reads them: every line of ``--log-format json`` is one JSON object; one
line per request with its flow, route, status, duration, ids and backend timings; errors and
the flow's own ``log`` step go through the same pipeline; levels are set per logger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.backends import BackendServer, closed_port
from tests.support.engine import run_engine, write_flows
from tests.support.otlp import OtlpHttpReceiver

FLOWS = """
endpoints:
  backend:
    http: {url: "%s"}
  gone:
    http: {url: "http://127.0.0.1:%d"}
flows:
  lookup:
    source: {http: {method: POST, path: "/items/{id}"}}
    steps:
      - log: {message: "looking up ${path.id}", level: warning}
      - call: {endpoint: backend, method: POST, path: "/things/${path.id}"}
  broken:
    source: {http: {method: GET, path: /broken}}
    steps:
      - call: {endpoint: gone, method: GET}
"""
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(line, dict) for line in lines)
    return lines


def test_json_lines_per_request_per_error_and_from_the_flow(tmp_path: Path, backend: BackendServer) -> None:
    folder = write_flows(tmp_path / "flows", FLOWS % (backend.url, closed_port()))
    with OtlpHttpReceiver() as receiver, run_engine(folder, "--log-format", "json", env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}) as engine:
        ok = httpx.post(f"{engine.url}/items/7", json={"a": 1},
                        headers={"traceparent": TRACEPARENT, "x-request-id": "req-1"})
        assert ok.status_code == 200
        assert httpx.get(f"{engine.url}/broken", headers={"x-request-id": "req-2"}).status_code == 502
        engine.terminate()
        text = engine.log()
    lines = json_lines(text)  # every line, start-up and shutdown included
    for line in lines:
        datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%f%z")  # the Fluent Bit parser's format
        assert {"level", "logger", "message", "correlation_id", "pid"} <= set(line)

    flow_line = next(line for line in lines if line["logger"] == "interlace.flow")
    assert flow_line["message"] == "looking up 7" and flow_line["level"] == "warning"
    assert (flow_line["flow"], flow_line["correlation_id"]) == ("lookup", "req-1")
    assert flow_line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"

    requests = [line for line in lines if line["logger"] == "interlace.request"]
    first, second = requests
    assert first["message"] == f"POST /items/7 200 {first['duration_ms']:.1f} ms"
    assert {k: first[k] for k in ("flow", "route", "method", "path", "status", "correlation_id", "trace_id",
                                  "request_bytes", "response_bytes")} == {
        "flow": "lookup", "route": "/items/{id}", "method": "POST", "path": "/items/7", "status": 200,
        "correlation_id": "req-1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "request_bytes": 7,
        "response_bytes": 7}
    (call,) = first["backends"]
    assert (call["endpoint"], call["url"], call["outcome"]) == ("backend", backend.url, "2xx")
    assert 0 < call["duration_ms"] <= first["duration_ms"]

    assert (second["flow"], second["status"], second["error"], second["correlation_id"]) == (
        "broken", 502, "backend-unreachable", "req-2")
    assert second["backends"][0]["outcome"] == "unreachable"
    error = next(line for line in lines if line["level"] == "warning" and line["logger"] == "interlace.front")
    assert error["correlation_id"] == "req-2" and "502" in error["message"]


def test_levels_per_logger_and_the_text_format(tmp_path: Path, backend: BackendServer) -> None:
    folder = write_flows(tmp_path / "flows", FLOWS % (backend.url, closed_port()))
    with run_engine(folder, "--log-levels", "interlace.request=warning,interlace.flow=error") as engine:
        assert httpx.post(f"{engine.url}/items/1", json={}, headers={"x-request-id": "req-3"}).status_code == 200
        assert httpx.get(f"{engine.url}/broken", headers={"x-request-id": "req-4"}).status_code == 502
        engine.terminate()
        text = engine.log()
    assert "POST /items/1 200" not in text and "looking up" not in text
    (error,) = [line for line in text.splitlines() if "[req-4]" in line]
    assert " WARNING interlace.front [req-4] flow broken: 502 " in error
    with run_engine(folder, "--log-levels", "interlace.request", wait_ready=False) as engine:
        assert engine.process.wait(20) == 2
        assert "write LOGGER=LEVEL" in engine.log()
