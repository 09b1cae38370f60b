"""Issue 9, item 5: limits on what a connection may make the engine hold before its request
reaches a flow: header size and count, a header-read timeout, a first-byte timeout and a
connection cap, each configurable (``interlace run --help``, docs/security.md)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import rawhttp
from tests.support.engine import RunningEngine, run_engine, write_flows

pytestmark = pytest.mark.timeout(90)

FLOWS = """
flows:
  hello:
    source: {http: {method: GET, path: /hello}}
    steps:
      - respond: {json: {hello: world}}
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    folder = write_flows(tmp_path_factory.mktemp("limits"), FLOWS)
    with run_engine(folder, "--header-timeout", "1", "--first-byte-timeout", "1", "--max-headers", "50",
                    "--max-header-size", "16KiB") as running:
        yield running


def assert_problem(answer: rawhttp.RawResponse, status: int, code: str) -> None:
    rawhttp.assert_problem(answer, status, code)
    assert answer.header("connection") == "close"  # refused before a request: the connection goes too


def test_a_head_over_the_size_limit_gets_431(engine: RunningEngine) -> None:
    answer = rawhttp.request(engine.port, "/hello", headers={"X-Big": "a" * 17_000})
    assert_problem(answer, 431, "header-too-large")


def test_a_head_under_the_limit_is_served(engine: RunningEngine) -> None:
    assert rawhttp.request(engine.port, "/hello", headers={"X-Big": "a" * 15_000}).status == 200


def test_a_head_under_the_limit_is_served_when_its_read_is_over_it(engine: RunningEngine) -> None:
    """The limit is the head's own size, not the read's: a body or a second request in the
    same read does not count."""
    answer = rawhttp.request(engine.port, "/hello", headers={"X-Big": "a" * 15_000}, body=b"x" * 6_000)
    assert answer.status == 200
    head = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: %s\r\n\r\n" % (b"a" * 9_000)
    with rawhttp.connect(engine.port) as sock:
        sock.sendall(head + head.replace(b"Host:", b"Connection: close\r\nHost:"))
        answers = rawhttp.parse_responses(rawhttp.read_all(sock))
    assert [a.status for a in answers] == [200, 200]


def test_too_many_header_fields_get_431(engine: RunningEngine) -> None:
    answer = rawhttp.request(engine.port, "/hello", headers={f"X-H{i}": "1" for i in range(60)})
    assert_problem(answer, 431, "too-many-headers")


def test_a_head_that_stalls_gets_408_and_is_closed(engine: RunningEngine) -> None:
    with rawhttp.connect(engine.port) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        answer = rawhttp.read_response(sock)  # the server answers and closes, or this times out
    assert_problem(answer, 408, "header-timeout")


def test_a_connection_that_never_sends_is_closed(engine: RunningEngine) -> None:
    with rawhttp.connect(engine.port) as sock:
        assert sock.recv(1024) == b""  # closed by the server (the socket's own timeout is 10 s)


def test_refusals_are_counted(engine: RunningEngine) -> None:
    rawhttp.request(engine.port, "/hello", headers={"X-Big": "a" * 17_000})
    metrics = httpx.get(engine.management_url + "/metrics", timeout=5).text
    assert 'interlace_http_refused_total{listener="facade",reason="header-too-large"}' in metrics


def test_the_connection_cap(tmp_path: Path) -> None:
    folder = write_flows(tmp_path, FLOWS)
    with run_engine(folder, "--max-connections", "3") as engine:
        held = [rawhttp.connect(engine.port) for _ in range(3)]
        try:
            for sock in held:  # each one open and served (keep-alive)
                sock.sendall(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            with rawhttp.connect(engine.port) as extra:
                assert_problem(rawhttp.parse_responses(rawhttp.read_all(extra))[0], 503, "too-many-connections")
        finally:
            for sock in held:
                sock.close()
        # closed ones free their places
        assert httpx.get(engine.url + "/hello", timeout=5).status_code == 200


@pytest.mark.slow
def test_header_bombs_leave_memory_where_it_was(tmp_path: Path) -> None:
    """The issue's reproduction: 10 connections each sending a 50 MiB header that never ends
    took RSS from 95 to 577 MiB.  Now each is cut at the limit; RSS stays within 20 MiB."""
    folder = write_flows(tmp_path, FLOWS)
    with run_engine(folder) as engine:
        for _ in range(20):
            assert httpx.get(engine.url + "/hello", timeout=5).status_code == 200
        idle = rawhttp.rss_mib(engine.process.pid)
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            sent = list(pool.map(lambda _: rawhttp.header_bomb(engine.port), range(10)))
        after = rawhttp.rss_mib(engine.process.pid)
        assert after - idle < 20, f"RSS {idle:.1f} -> {after:.1f} MiB"
        assert all(count < 50 * 1024 * 1024 for count in sent), "a bomb was read to its end"
        assert httpx.get(engine.url + "/hello", timeout=5).status_code == 200


@pytest.mark.slow
def test_silent_connections_do_not_pile_up(tmp_path: Path) -> None:
    """Connections that never send a byte are closed after --first-byte-timeout: 200 of them
    leave no file descriptor behind."""
    folder = write_flows(tmp_path, FLOWS)
    with run_engine(folder, "--first-byte-timeout", "1") as engine:
        fds_before = len(list(Path(f"/proc/{engine.process.pid}/fd").iterdir()))
        socks = [rawhttp.connect(engine.port) for _ in range(200)]
        try:
            for sock in socks:
                sock.settimeout(15)
                assert sock.recv(1) == b""
        finally:
            for sock in socks:
                sock.close()
        fds_after = len(list(Path(f"/proc/{engine.process.pid}/fd").iterdir()))
        assert fds_after <= fds_before + 2, (fds_before, fds_after)




def _posted(port: int, coding: str, body: bytes) -> rawhttp.RawResponse:
    with rawhttp.connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: " + coding.encode() + b"\r\n\r\n" + body)
        return rawhttp.read_response(sock)


def test_a_transfer_coding_other_than_chunked_is_501(tmp_path: Path) -> None:
    # "gzip, chunked": the parser undid the chunking only and the flow got the still-coded bytes as
    # the body (here: not gzip at all, and served 200 as if it were plain JSON)
    folder = write_flows(tmp_path, """
flows:
  echo:
    source: {http: {method: POST, path: /echo}}
    steps:
      - respond: {json: {got: "${payload}"}}
""")
    with run_engine(folder) as running:
        coded = _posted(running.port, "gzip, chunked", b"7\r\n{\"a\":1}\r\n0\r\n\r\n")
        plain = _posted(running.port, "Chunked", b"7\r\n{\"a\":1}\r\n0\r\n\r\n")
    problem = rawhttp.assert_problem(coded, 501, "transfer-coding-not-implemented")
    assert "only the chunked transfer coding is understood here" in problem["detail"]
    assert plain.status == 200 and plain.json() == {"got": {"a": 1}}
