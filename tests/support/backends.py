"""Real backend servers on 127.0.0.1 for tests: echo, slow, failing, killable.

    with BackendServer() as backend:
        backend.url                      # http://127.0.0.1:PORT
        backend.requests[-1].headers     # what arrived (method, path, headers, body)
        backend.behave(delay=2.0)        # answer slowly
        backend.behave(fail_times=2, fail_status=503)   # 503 twice, then echo
        backend.stop(); backend.start()  # connection refused in between, same port after
        backend.connections              # TCP connections accepted so far

Every path echoes the request body with its Content-Type and adds ``x-backend-path``;
``/status/NNN`` answers that status; ``/big/N`` answers N bytes.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Behaviour:
    delay: float = 0.0
    fail_times: int = 0
    fail_status: int = 503
    status: int = 200


@dataclass
class _State:
    requests: list[SeenRequest] = field(default_factory=list)
    behaviour: Behaviour = field(default_factory=Behaviour)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.state.lock:
            self.server.state.connections += 1
        self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        self.server.open_sockets.discard(self.connection)
        super().finish()

    def _handle(self) -> None:
        state = self.server.state
        length = int(self.headers.get("content-length") or 0)
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = self.rfile.read(length) if length else b""
        with state.lock:
            state.requests.append(SeenRequest(self.command, self.path,
                                              {k.lower(): v for k, v in self.headers.items()}, body))
            behaviour = state.behaviour
            failing = behaviour.fail_times > 0
            if failing:
                behaviour.fail_times -= 1
        if behaviour.delay:
            time.sleep(behaviour.delay)
        status = behaviour.fail_status if failing else behaviour.status
        content_type = self.headers.get("content-type", "application/octet-stream")
        if self.path.startswith("/status/"):
            status = int(self.path.split("/")[2])
        if self.path.startswith("/big/"):
            body, content_type = b"x" * int(self.path.split("/")[2]), "application/octet-stream"
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-backend-path", self.path)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, state: _State) -> None:
        self.state = state
        self.open_sockets: set[socket.socket] = set()
        super().__init__(("127.0.0.1", port), _Handler)


class BackendServer:
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.state = _State()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[SeenRequest]:
        return self.state.requests

    @property
    def connections(self) -> int:
        return self.state.connections

    def behave(self, **changes: Any) -> None:
        with self.state.lock:
            self.state.behaviour = Behaviour(**changes)

    def start(self) -> BackendServer:
        self._server = _Server(self.port, self.state)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections: callers now get connection refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            for sock in list(self._server.open_sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._server = None

    def __enter__(self) -> BackendServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def closed_port() -> int:
    """A loopback port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
