"""Issue 9, item 10: past the drain timeout, the requests still in flight get a 503
problem+json (or, when their answer is already streaming, a closed connection), the log says
how many were cut, without a traceback each, and the exit code says the drain was not clean;
with ``--workers N`` it is the worst of the workers' exit codes."""

from __future__ import annotations

import concurrent.futures
import signal
from pathlib import Path

import pytest

from tests.support import rawhttp
from tests.support.backends import BackendServer
from tests.support.engine import run_engine, wait_for_workers, write_flows

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


def test_requests_cut_at_the_drain_timeout_get_503_and_the_exit_code_says_so(tmp_path: Path) -> None:
    with BackendServer() as backend:
        backend.set_behaviour(chunked=True, body_delay=30)  # headers at once, the body never in time
        with run_engine(flows(tmp_path, backend.url), "--drain-timeout", "1") as engine, \
                concurrent.futures.ThreadPoolExecutor(4) as pool:
            held = [pool.submit(rawhttp.send, engine.port, "/held") for _ in range(3)]
            streamed = pool.submit(rawhttp.send, engine.port, "/streamed")
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


def test_with_workers_the_exit_code_is_the_worst_workers(tmp_path: Path) -> None:
    # one request held past the drain timeout lands on one of the two workers: that one cuts it
    # (exit 3), the other drains clean (0), and the supervisor exits 3: a drain is clean only
    # when every worker's was
    with BackendServer() as backend:
        backend.set_behaviour(delay=30)
        with run_engine(flows(tmp_path, backend.url), "--workers", "2", "--drain-timeout", "1") as engine, \
                concurrent.futures.ThreadPoolExecutor(1) as pool:
            wait_for_workers(engine, 2)
            held = pool.submit(rawhttp.send, engine.port, "/held")
            backend.wait_for_requests(1, timeout=10)
            engine.process.send_signal(signal.SIGTERM)
            answer = rawhttp.parse_responses(held.result())[0]
            code = engine.process.wait(30)
            log = engine.log()
    assert answer.status == 503 and answer.json()["type"].endswith("/drain-timeout")
    assert code == 3
    assert log.count("request(s) in flight") == 1
    assert "1 request(s) in flight: 1 answered 503, 0 cut mid-answer" in log
    assert "Traceback" not in log


def test_with_workers_a_clean_drain_exits_0(tmp_path: Path) -> None:
    with BackendServer() as backend, \
            run_engine(flows(tmp_path, backend.url), "--workers", "2", "--drain-timeout", "5") as engine:
        wait_for_workers(engine, 2)
        assert {rawhttp.request(engine.port, "/quick").status for _ in range(6)} == {200}
        assert engine.terminate() == 0
        assert "cut" not in engine.log() and "Traceback" not in engine.log()
