"""HTTP over a bare socket, for requests no client library would send as written (raw
percent-escapes, header bombs, pipelining, a client that vanishes), and what those tests check
on the answers and on the processes that served them::

    from tests.support import rawhttp

    answer = rawhttp.request(engine.port, "/orders/a%2Fb")      # Connection: close, one answer
    rawhttp.assert_problem(answer, 400, "bad-path-parameter")   # problem+json of that type
    data = rawhttp.send(engine.port, "/held")                   # keep-alive: all until the server closes
    rawhttp.fds(pid), rawhttp.rss_mib(pid)                      # open files, resident memory
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]  # names lower-case, in order
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def request(port: int, target: str, *, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes = b"", timeout: float = 10.0) -> RawResponse:
    """Send one request with ``target`` exactly as given; read the answer (Connection: close)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with connect(port, timeout) as sock:
        sock.sendall(data)
        return read_response(sock, head_only=method == "HEAD")


def send(port: int, target: str, timeout: float = 30.0) -> bytes:
    """GET ``target`` on a keep-alive connection and read until the server closes it: what a
    client waiting on a request sees (a late answer, a 503 at shutdown, an answer cut off)."""
    with connect(port, timeout) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("latin-1"))
        return read_all(sock)


def assert_problem(answer: RawResponse, status: int, code: str) -> dict[str, Any]:
    """``answer`` is an RFC 9457 problem of ``status`` whose type ends in ``/code``; returns it."""
    assert answer.status == status, answer
    assert answer.header("content-type") == "application/problem+json", answer
    problem = answer.json()
    assert problem["status"] == status and str(problem["type"]).endswith("/" + code), problem
    return dict(problem)


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until ``process`` listens on ``port`` (AssertionError if it exits first or never does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the process exited with {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port} in {timeout}s")


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def parse_responses(data: bytes, head_only: bool = False) -> list[RawResponse]:
    """Every response in ``data`` (Content-Length or chunked framing)."""
    found: list[RawResponse] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"incomplete response head: {data[:200]!r}")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in header_lines)]
        fields = dict(headers)
        if head_only or status in (204, 304) or 100 <= status < 200:
            body, data = b"", rest
        elif fields.get("transfer-encoding") == "chunked":
            body_parts = []
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    rest = rest[2:]
                    break
                body_parts.append(rest[:size])
                rest = rest[size + 2:]
            body, data = b"".join(body_parts), rest
        else:
            length = int(fields.get("content-length", len(rest)))
            body, data = rest[:length], rest[length:]
        found.append(RawResponse(status, headers, body))
    return found


def read_response(sock: socket.socket, head_only: bool = False) -> RawResponse:
    responses = parse_responses(read_all(sock), head_only)
    assert len(responses) == 1, responses
    return responses[0]


def fds(pid: int) -> int:
    """How many files a process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    """A process's resident memory (VmRSS) in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def header_bomb(port: int, size: int = 50 * 1024 * 1024, chunk: int = 1024 * 1024) -> int:
    """Send a request head whose one header never ends, ``size`` bytes of it; returns how many
    bytes went out before the server closed the connection."""
    sent = 0
    block = b"a" * chunk
    with connect(port, timeout=30) as sock:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bomb: ")
            while sent < size:
                sock.sendall(block)
                sent += len(block)
        except OSError:
            pass  # the server closed the connection: what a guarded server does
    return sent
