"""Issue 9, item 9: a client that goes away is a quiet, counted event.  Closing with pipelined
requests in flight logged each as a failure with two ERROR tracebacks (a write to the closed
connection, then a second http.response.start); now the request line says 499, the queued
requests are counted, and nothing is logged above INFO."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import rawhttp
from tests.support.backends import BackendServer
from tests.support.engine import RunningEngine, run_engine, wait_for, write_flows

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def engine(backend: BackendServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    folder = write_flows(tmp_path_factory.mktemp("disconnects"), f"""
    endpoints:
      backend: {{http: {{url: "{backend.url}", timeout: {{read: 20s}}}}}}
    flows:
      slow:
        source: {{http: {{method: POST, path: /slow}}}}
        steps:
          - call: {{endpoint: backend, path: /slow}}
      streamed:
        source: {{http: {{method: GET, path: /streamed}}}}
        steps:
          - call: {{endpoint: backend, path: /big/2000000}}
    """)
    with run_engine(folder) as running:
        yield running


def counted(engine: RunningEngine, stage: str) -> float:
    text = httpx.get(engine.management_url + "/metrics", timeout=5).text
    found = re.search(rf'interlace_http_client_disconnects_total{{stage="{stage}"}} ([0-9.]+)', text)
    return float(found.group(1)) if found else 0.0


def quiet(log: str) -> None:
    assert "Traceback" not in log, log
    assert "ERROR" not in log and "WARNING" not in log, log
    assert "Expected ASGI message" not in log, log


def test_closing_with_pipelined_requests_in_flight(backend: BackendServer, engine: RunningEngine) -> None:
    backend.clear()
    backend.set_behaviour(delay=1.0)
    before_in_flight, before_queued = counted(engine, "in_flight"), counted(engine, "queued")
    with rawhttp.connect(engine.port) as sock:
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc" * 3)
        backend.wait_for_requests(1)
    # the first request was being served, two waited behind it
    wait_for(lambda: counted(engine, "in_flight") == before_in_flight + 1)
    assert counted(engine, "queued") == before_queued + 2
    wait_for(lambda: " 499 " in engine.log())
    time.sleep(1.5)  # the backend answers the abandoned request: nothing may go wrong then
    quiet(engine.log())
    backend.set_behaviour()
    assert len(backend.requests) == 1  # the queued ones never ran


def test_closing_while_sending_the_body(backend: BackendServer, engine: RunningEngine) -> None:
    before = counted(engine, "in_flight")
    with rawhttp.connect(engine.port) as sock:
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        time.sleep(0.5)
    wait_for(lambda: counted(engine, "in_flight") == before + 1)
    quiet(engine.log())


def test_closing_while_the_answer_streams(engine: RunningEngine) -> None:
    before = counted(engine, "in_flight")
    with socket.create_connection(("127.0.0.1", engine.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /streamed HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    wait_for(lambda: counted(engine, "in_flight") >= before + 1 or " /streamed 200 " in engine.log())
    time.sleep(0.5)
    quiet(engine.log())


def test_a_backend_breaking_off_mid_answer_sends_no_second_answer(backend: BackendServer,
                                                                  engine: RunningEngine) -> None:
    backend.set_behaviour(chunked=True, body_delay=0.3, drop=0)
    # the backend's chunked answer stops after its headers when the backend is stopped mid-body
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(b"GET /streamed HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = sock.recv(65536)
        backend.stop()
        data = first + rawhttp.read_all(sock)
    backend.start()
    backend.set_behaviour()
    assert data.count(b"HTTP/1.1 ") == 1  # one answer, cut: never a second status line
    assert not data.endswith(b"0\r\n\r\n")
    log = engine.log()
    assert "Traceback" not in log and "Expected ASGI message" not in log
