"""A body over the route's limit is refused with 413 before it is read whole.

The client speaks HTTP over a raw socket so that it controls what it has sent when the
answer comes: with a Content-Length over the limit the 413 arrives although not one byte of
the body was sent; with a chunked body the 413 arrives while most of it is still unsent.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backends import BackendServer
from tests.support.engine import RunningEngine, run_engine, write_flows

LIMIT = 1024 * 1024  # the route's max_body
CHUNK = 64 * 1024


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[RunningEngine, BackendServer]]:
    with BackendServer() as backend:
        folder = write_flows(tmp_path / "flows", f"""
        endpoints:
          backend: {{http: {{url: "{backend.url}"}}}}
        flows:
          direct:
            source: {{http: {{method: POST, path: /direct, max_body: 1MiB}}}}
            steps:
              - call: {{endpoint: backend, path: /echo}}
          parsed:
            source: {{http: {{method: POST, path: /parsed, max_body: 1MiB}}}}
            steps:
              - choice:
                  when:
                    - if: ${{payload.a == 'x'}}
                      steps: [{{respond: {{json: {{ok: true}}}}}}]
        """)
        with run_engine(folder) as running:
            yield running, backend


def _status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        if not got:
            break
        data += got
    return data


def _answered(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)


@pytest.mark.parametrize("path", ["/direct", "/parsed"])
def test_a_declared_length_over_the_limit_is_refused_before_any_body_byte(
        engine: tuple[RunningEngine, BackendServer], path: str) -> None:
    running, backend = engine
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: facade\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {100 * LIMIT}\r\n\r\n".encode())
        answer = _read_answer(sock)  # no body byte sent: the answer must come anyway
    assert _status_of(answer) == 413
    assert b"application/problem+json" in answer
    assert backend.requests == []


@pytest.mark.parametrize("path", ["/direct", "/parsed"])
def test_a_chunked_body_over_the_limit_is_refused_while_most_of_it_is_unsent(
        engine: tuple[RunningEngine, BackendServer], path: str) -> None:
    running, _ = engine
    total = 64 * LIMIT  # what the client would send if nobody stopped it
    sent = 0
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: facade\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        block = b"%x\r\n" % CHUNK + b" " * CHUNK + b"\r\n"
        try:
            while sent < total and not _answered(sock):
                sock.sendall(block)
                sent += CHUNK
        except (BrokenPipeError, ConnectionResetError):
            pass  # the engine may close once it has answered
        answer = _read_answer(sock)
    assert _status_of(answer) == 413
    # refused after about the limit (plus what sat in socket buffers), far from the whole body
    assert sent < total // 4
