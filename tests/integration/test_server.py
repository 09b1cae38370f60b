"""The engine as a real process: ports, readiness, SIGTERM draining, reload, --watch, workers."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.engine import run_engine, wait_until_ready, write_flows

pytestmark = pytest.mark.timeout(90)


class _Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay = 1.0
    arrived: list[float] = []

    def do_GET(self) -> None:
        self.arrived.append(time.monotonic())
        time.sleep(self.delay)
        body = b'{"slow": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_backend() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def slow_flows(folder: Path, backend: str) -> Path:
    return write_flows(folder, f"""
    endpoints:
      slow: {{http: {{url: "{backend}", timeout: {{read: 10s}}}}}}
    flows:
      slow:
        source: {{http: {{method: GET, path: /slow}}}}
        steps:
          - call: {{endpoint: slow, path: /}}
      ping:
        source: {{http: {{method: GET, path: /ping}}}}
        steps:
          - respond: {{text: pong}}
    """)


def test_sigterm_finishes_requests_in_flight_then_exits_0(tmp_path: Path, slow_backend: str) -> None:
    folder = slow_flows(tmp_path / "flows", slow_backend)
    with run_engine(folder, "--drain-timeout", "10") as engine:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            _Slow.arrived.clear()
            _Slow.delay = 1.5
            futures = [pool.submit(httpx.get, f"{engine.url}/slow", timeout=15) for _ in range(8)]
            deadline = time.monotonic() + 10
            while len(_Slow.arrived) < 8:  # all eight are now waiting on the slow backend
                assert time.monotonic() < deadline, engine.log()
                time.sleep(0.01)
            engine.process.send_signal(15)
            time.sleep(0.2)
            ready = httpx.get(f"{engine.management_url}/health/ready", timeout=2)
            replies = [f.result() for f in futures]
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        assert [r.status_code for r in replies] == [200] * 8
        assert all(r.json() == {"slow": True} for r in replies)
        assert engine.process.wait(15) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{engine.url}/ping", timeout=2)


def test_management_routes_are_not_on_the_facade_port(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", """
    flows:
      ping:
        source: {http: {method: GET, path: /ping}}
        steps: [{respond: {text: pong}}]
    """)
    with run_engine(folder) as engine:
        assert httpx.get(f"{engine.url}/ping").text == "pong"
        assert httpx.get(f"{engine.url}/health/ready").status_code == 404
        assert httpx.post(f"{engine.url}/reload").status_code == 404
        assert httpx.get(f"{engine.management_url}/health/live").status_code == 200
        flows = httpx.get(f"{engine.management_url}/flows").json()["flows"]
        assert [f["name"] for f in flows] == ["ping"]
        assert "interlace_http_request_duration_seconds_count" in httpx.get(f"{engine.management_url}/metrics").text


def test_invalid_flows_never_serve(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", """
    flows:
      broken:
        source: {http: {path: /x}}
        steps: [{nosuch: {}}]
    """)
    with run_engine(folder, wait_ready=False) as engine:
        assert engine.process.wait(20) == 2
        assert "flows.yaml:4:14: unknown step kind 'nosuch'" in engine.log()


def test_reload_swaps_valid_flows_and_keeps_serving_on_invalid_ones(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", """
    flows:
      v:
        source: {http: {method: GET, path: /v}}
        steps: [{respond: {text: one}}]
    """)
    with run_engine(folder) as engine:
        assert httpx.get(f"{engine.url}/v").text == "one"
        write_flows(folder, """
        flows:
          v:
            source: {http: {method: GET, path: /v}}
            steps: [{respond: {text: two}}]
        """)
        reply = httpx.post(f"{engine.management_url}/reload")
        assert reply.status_code == 200 and reply.json()["ok"] is True
        assert httpx.get(f"{engine.url}/v").text == "two"
        write_flows(folder, """
        flows:
          v:
            source: {http: {method: GET, path: /v}}
            steps: [{respond: {txt: three}}]
        """)
        refused = httpx.post(f"{engine.management_url}/reload")
        assert refused.status_code == 422
        assert "unknown key 'txt'" in refused.json()["errors"][0]
        assert httpx.get(f"{engine.url}/v").text == "two"


def test_watch_reloads_on_change(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", """
    flows:
      v:
        source: {http: {method: GET, path: /v}}
        steps: [{respond: {text: before}}]
    """)
    with run_engine(folder, "--watch") as engine:
        assert httpx.get(f"{engine.url}/v").text == "before"
        time.sleep(0.1)
        write_flows(folder, """
        flows:
          v:
            source: {http: {method: GET, path: /v}}
            steps: [{respond: {text: after}}]
        """)
        deadline = time.monotonic() + 10
        while httpx.get(f"{engine.url}/v").text != "after":
            assert time.monotonic() < deadline, engine.log()
            time.sleep(0.1)


def test_two_workers_serve_and_stop_cleanly(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", """
    flows:
      ping:
        source: {http: {method: GET, path: /ping}}
        steps: [{respond: {text: pong}}]
    """)
    with run_engine(folder, "--workers", "2") as engine:
        wait_until_ready(engine)
        with httpx.Client() as client:
            assert all(client.get(f"{engine.url}/ping").text == "pong" for _ in range(20))
        assert engine.terminate() == 0
