"""Issue 9, item 10: past the drain timeout, the requests still in flight get a 503
problem+json (or, when their answer is already streaming, a closed connection), the log says
how many were cut, without a traceback each, and the exit code says the drain was not clean."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
from pathlib import Path

import pytest

from tests.security import rawhttp
from tests.support.backends import BackendServer
from tests.support.engine import run_engine, write_flows

pytestmark = pytest.mark.timeout(60)


def flows(folder: Path, backend: str) -> Path:
    return write_flows(folder, f"""
    endpoints:
      backend: {{http: {{url: "{backend}", timeout: {{read: 60s}}}}}}
    flows:
      held:
        source: {{http: {{method: GET, path: /held}}}}
        steps:
          - call: {{endpoint: backend, path: /held, into: reply}}
          - respond: {{json: {{late: true}}}}
      streamed:
        source: {{http: {{method: GET, path: /streamed}}}}
        steps:
          - call: {{endpoint: backend, path: /streamed}}
      quick:
        source: {{http: {{method: GET, path: /quick}}}}
        steps:
          - respond: {{json: {{quick: true}}}}
    """)


def send(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return rawhttp.read_all(sock)


def test_requests_cut_at_the_drain_timeout_get_503_and_the_exit_code_says_so(tmp_path: Path) -> None:
    with BackendServer() as backend:
        backend.set_behaviour(chunked=True, body_delay=30)  # headers at once, the body never in time
        with run_engine(flows(tmp_path, backend.url), "--drain-timeout", "1") as engine, \
                concurrent.futures.ThreadPoolExecutor(4) as pool:
            held = [pool.submit(send, engine.port, "/held") for _ in range(3)]
            streamed = pool.submit(send, engine.port, "/streamed")
            backend.wait_for_requests(4, timeout=10)
            engine.process.send_signal(signal.SIGTERM)
            answers = [rawhttp.parse_responses(future.result())[0] for future in held]
            truncated = streamed.result()
            code = engine.process.wait(30)
            log = engine.log()
    for answer in answers:
        assert answer.status == 503
        assert answer.header("content-type") == "application/problem+json"
        assert answer.json()["type"].endswith("/drain-timeout")
        assert answer.header("connection") == "close" and answer.header("retry-after") == "1"
    head, _, body = truncated.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and not body.endswith(b"0\r\n\r\n")  # cut, never complete-looking
    assert code == 3
    assert "4 request(s) in flight: 3 answered 503, 1 cut mid-answer" in log
    assert "Traceback" not in log and "Exception in ASGI application" not in log and "ERROR" not in log


def test_a_drain_that_finishes_in_time_exits_0(tmp_path: Path) -> None:
    with BackendServer() as backend, run_engine(flows(tmp_path, backend.url), "--drain-timeout", "5") as engine:
        assert rawhttp.request(engine.port, "/quick").status == 200
        assert engine.terminate() == 0
        assert "cut" not in engine.log()
