"""The test backends other tests rely on: what they record, how they misbehave, stop and restart."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.support.backends import BackendServer, closed_port


def test_echo_records_what_arrived_and_answers_it() -> None:
    with BackendServer() as backend, httpx.Client(base_url=backend.url) as http:
        reply = http.post("/orders?x=1", content=b"<a/>", headers={"content-type": "text/xml", "X-Request-ID": "r9"})
        assert reply.status_code == 200 and reply.content == b"<a/>"
        assert reply.headers["content-type"] == "text/xml" and reply.headers["x-backend-path"] == "/orders?x=1"
        assert http.get("/status/418").status_code == 418
        assert len(http.get("/big/1000").content) == 1000
    seen = backend.requests
    assert [(r.method, r.path) for r in seen] == [("POST", "/orders?x=1"), ("GET", "/status/418"),
                                                  ("GET", "/big/1000")]
    assert seen[0].headers["x-request-id"] == "r9" and seen[0].body == b"<a/>"
    assert backend.connections == 1 and {r.connection for r in seen} == {1}  # one kept-alive connection


def test_behaviours_statuses_delay_drop() -> None:
    with BackendServer() as backend, httpx.Client(base_url=backend.url) as http:
        backend.set_behaviour(statuses=[503, 502])
        assert [http.get("/").status_code for _ in range(3)] == [503, 502, 200]
        backend.set_behaviour(delay=0.3)
        started = time.monotonic()
        http.get("/")
        assert time.monotonic() - started >= 0.3
        backend.set_behaviour(drop=1)
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/", content=b"x")
        backend.set_behaviour(chunked=True, headers={"X-Extra": "1"})
        reply = http.post("/", content=b"chunks")
        assert reply.content == b"chunks" and "content-length" not in reply.headers
        assert reply.headers["x-extra"] == "1"
    assert len(backend.requests) == 6


def test_stop_refuses_connections_and_start_comes_back_on_the_same_port() -> None:
    backend = BackendServer().start()
    port = backend.port
    with httpx.Client(base_url=backend.url) as http:
        assert http.get("/1").status_code == 200
        backend.stop()
        assert not backend.running
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        backend.start()
        assert backend.port == port
        assert http.get("/2").status_code == 200
    backend.stop()
    backend.stop()  # idempotent
    assert [r.path for r in backend.requests] == ["/1", "/2"]
    backend.clear()
    assert backend.requests == [] and backend.connections == 0


def test_stop_cuts_a_slow_answer_short() -> None:
    backend = BackendServer().start()
    backend.set_behaviour(delay=10)
    with httpx.Client(base_url=backend.url, timeout=5) as http:
        sock = socket.create_connection(("127.0.0.1", backend.port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        backend.wait_for_requests(1)
        started = time.monotonic()
        backend.stop()
        assert sock.recv(100) == b""  # cut, no answer
        assert time.monotonic() - started < 2
        sock.close()
        with pytest.raises(httpx.ConnectError):
            http.get("/")


def test_closed_port_refuses() -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed_port()), timeout=1).close()
