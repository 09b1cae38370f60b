"""Real HTTP backends on 127.0.0.1 for tests: echo, slow, failing, killable.

Each ``BackendServer`` is a small HTTP/1.1 server (keep-alive, one thread per connection)
in a background thread of the test process, on a free loopback port::

    from tests.support.backends import BackendServer

    with BackendServer() as backend:             # started; stopped at the end of the block
        backend.url                              # "http://127.0.0.1:PORT"
        ...call backend.url + "/anything"...     # echoes the body with its Content-Type
        seen = backend.requests[-1]              # what arrived, in order of arrival
        seen.method, seen.path, seen.body        # "POST", "/anything?q=1", b"..."
        seen.headers["x-request-id"]             # header names lower-case
        backend.connections                      # TCP connections accepted so far
        backend.open_connections                 # ...and open now

        backend.set_behaviour(delay=2.0)         # answer every request 2 s late
        backend.set_behaviour(statuses=[503, 503])   # 503 twice, then the normal echo
        backend.set_behaviour(drop=1)            # close the next connection without answering
        backend.set_behaviour()                  # back to the plain echo

        backend.stop()                           # "killed": connection refused from now on,
                                                 # open keep-alive connections are cut
        backend.start()                          # back on the same port, requests kept

What it answers (unless a behaviour says otherwise): status 200, the request body, the
request's Content-Type (else application/octet-stream), an exact Content-Length, and
``x-backend-path`` (the path with its query).  Two paths are special: ``/status/NNN``
answers status NNN (with the echo), ``/big/N`` answers N bytes of ``x``.

``BackendServer(tls=context)`` serves https with a server-side ``ssl.SSLContext``.

``set_behaviour`` replaces the whole behaviour (unnamed settings go back to their defaults);
see ``Behaviour`` for every setting.  A stopped server keeps what it recorded; ``clear()``
forgets it.  Fixtures usually look like::

    @pytest.fixture
    def backend() -> Iterator[BackendServer]:
        with BackendServer() as server:
            yield server
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class SeenRequest:
    """One request as the backend received it."""

    method: str
    path: str  # with the query string, as sent
    headers: dict[str, str]  # names lower-case; a repeated header keeps its last value
    body: bytes  # a chunked body is already joined
    header_list: list[tuple[str, str]] = field(default_factory=list)  # every header, in order, as sent
    connection: int = 0  # which accepted connection it came on (1, 2, ...): same number, same socket


@dataclass
class Behaviour:
    """How the backend answers; ``BackendServer.set_behaviour(**settings)`` sets it."""

    delay: float = 0.0  # seconds to wait after reading a request, before answering
    body_delay: float = 0.0  # seconds to wait between the reply's headers and its body
    statuses: list[int] = field(default_factory=list)  # answer these first, one per request, then `status`
    status: int = 200  # the status of every other answer
    drop: int = 0  # for this many requests: record it, then close the connection without answering
    chunked: bool = False  # answer with chunked encoding (no Content-Length)
    headers: dict[str, str] = field(default_factory=dict)  # added to every answer


@dataclass
class _State:
    requests: list[SeenRequest] = field(default_factory=list)
    behaviour: Behaviour = field(default_factory=Behaviour)
    connections: int = 0
    in_flight: int = 0  # requests read and not yet answered
    max_in_flight: int = 0  # the most that were at once
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    connection_number = 0

    def setup(self) -> None:
        super().setup()
        with self.server.state.lock:
            self.server.state.connections += 1
            self.connection_number = self.server.state.connections
        self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        self.server.open_sockets.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # the client (or stop()) already closed the socket

    def _handle(self) -> None:
        state = self.server.state
        with state.lock:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            self._answer(state)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _answer(self, state: _State) -> None:
        body = self._read_body()
        header_list = list(self.headers.items())
        seen = SeenRequest(self.command, self.path, {k.lower(): v for k, v in header_list}, body, header_list,
                           self.connection_number)
        with state.lock:
            state.requests.append(seen)
            behaviour = state.behaviour
            dropping = behaviour.drop > 0
            status = behaviour.status
            if dropping:
                behaviour.drop -= 1
            elif behaviour.statuses:
                status = behaviour.statuses.pop(0)
        if dropping:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if behaviour.delay and self.server.stopping.wait(behaviour.delay):
            return  # stopped while waiting: answer nothing
        content_type = self.headers.get("content-type", "application/octet-stream")
        if self.path.startswith("/status/"):
            status = int(self.path.split("/")[2].split("?")[0])
        if self.path.startswith("/big/"):
            body, content_type = b"x" * int(self.path.split("/")[2].split("?")[0]), "application/octet-stream"
        self.send_response(status)
        self.send_header("content-type", content_type)
        if behaviour.chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(len(body)))
        self.send_header("x-backend-path", self.path)
        for name, value in behaviour.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if behaviour.body_delay:
            self.wfile.flush()
            if self.server.stopping.wait(behaviour.body_delay):
                return
        if behaviour.chunked:
            for start in range(0, len(body), 64 * 1024):
                piece = body[start:start + 64 * 1024]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping in a delay must not hold up stop()
    allow_reuse_address = True  # restart on the same port at once

    def __init__(self, port: int, state: _State, tls: ssl.SSLContext | None) -> None:
        self.state = state
        self.open_sockets: set[socket.socket] = set()
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", port), _Handler)
        if tls is not None:
            # the handshake happens on the first read, in the connection's thread, not in accept()
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up (timeouts, stop()) are what these tests are about


class BackendServer:
    """A real HTTP backend on 127.0.0.1 (see the module docstring)."""

    def __init__(self, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.port = port  # 0: a free port, chosen by start() and kept across restarts
        self.tls = tls  # a server-side context: serve https
        self.state = _State()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the backend has no port until it is started")
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def requests(self) -> list[SeenRequest]:
        """Every request received so far, in order of arrival (a copy)."""
        with self.state.lock:
            return list(self.state.requests)

    @property
    def max_in_flight(self) -> int:
        """The most requests this backend held at once (read, not yet answered)."""
        with self.state.lock:
            return self.state.max_in_flight

    @property
    def connections(self) -> int:
        """TCP connections accepted so far (across restarts)."""
        return self.state.connections

    @property
    def open_connections(self) -> int:
        """TCP connections open now (a client's pool keeping them alive)."""
        return len(self._server.open_sockets) if self._server is not None else 0

    def set_behaviour(self, **settings: Any) -> None:
        """Replace the behaviour: ``Behaviour``'s fields by name, the others at their defaults."""
        behaviour = Behaviour(**settings)
        behaviour.statuses = list(behaviour.statuses)
        with self.state.lock:
            self.state.behaviour = behaviour

    def clear(self) -> None:
        """Forget the requests and connections recorded so far."""
        with self.state.lock:
            self.state.requests.clear()
            self.state.connections = 0

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[SeenRequest]:
        """Wait until at least ``count`` requests have arrived; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(self.state.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} requests, {len(self.state.requests)} arrived")
            time.sleep(0.01)
        return self.requests

    def start(self) -> BackendServer:
        """Listen (again) on the port; connections succeed from now on."""
        if self._server is not None:
            return self
        self._server = _Server(self.port, self.state, self.tls)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"backend-{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop as if killed: close the listening socket (connection refused from now on) and
        cut every open connection, including idle keep-alive ones and slow answers."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        for sock in list(server.open_sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> BackendServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def closed_port() -> int:
    """A loopback port where nothing listens (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
