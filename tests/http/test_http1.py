"""The http connector's own HTTP/1.1 client (connectors/_http1.py) at its edges: answers framed
every way HTTP/1.1 allows, interim answers, HEAD, connections the backend closes (while idle, by
``Connection: close``, mid-answer), keep-alive expiry, a reader slower than the backend, headers
that would split the request, and the same client under uvloop, against real servers on 127.0.0.1
(the echo backend, or a scripted one that answers bytes as given)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from connectors.http import HttpEndpoint
from engine.errors import BackendError, BackendTimeout, BackendUnreachable
from tests.http.conftest import MakeEndpoint
from tests.http.test_tls import Pem, pems, tls_backend  # noqa: F401  # the TLS backend and its authority
from tests.support.backends import BackendServer

pytestmark = pytest.mark.anyio

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Scripted:
    """A loopback server whose every connection runs ``script(reader, writer, connection_number)``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def head(self, reader: asyncio.StreamReader) -> bytes:
        """Read one request head (these requests have no body) and keep it."""
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        return head

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer, self.connections)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answering(*answers: bytes, then_close: bool = False) -> Callable[[Scripted], Script]:
    """A script: for each request on a connection, the next of ``answers`` as raw bytes."""

    def make(server: Scripted) -> Script:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
            for answer in answers:
                await server.head(reader)
                writer.write(answer)
                await writer.drain()
            if not then_close:
                await reader.read()  # keep the connection until the client closes it

        return script

    return make


async def scripted(make: Callable[[Scripted], Script]) -> Scripted:
    server = Scripted(lambda r, w, n: asyncio.sleep(0))
    server.script = make(server)
    return await server.__aenter__()


async def test_a_body_ended_by_closing_the_connection_is_read_to_the_close(make_endpoint: MakeEndpoint) -> None:
    server = await scripted(answering(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", then_close=True))
    try:
        endpoint = make_endpoint({"url": server.url})
        reply = await endpoint.request("GET", "/")
        assert reply.status == 200 and await reply.read() == b"all of it"
    finally:
        await server.__aexit__()


async def test_interim_answers_are_skipped(make_endpoint: MakeEndpoint) -> None:
    server = await scripted(answering(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                                      b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok"))
    try:
        reply = await make_endpoint({"url": server.url}).request("GET", "/")
        assert reply.status == 200 and reply.body == b"ok" and reply.header("x-final") == "yes"
        assert reply.header("link") is None
    finally:
        await server.__aexit__()


async def test_a_head_answer_announcing_a_length_has_no_body_and_the_connection_is_reused(
        backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url})
    head = await endpoint.request("HEAD", "/big/5000")
    assert head.status == 200 and head.body == b"" and head.header("content-length") == "5000"
    after = await endpoint.request("GET", "/big/10")
    assert after.body == b"x" * 10
    assert [r.connection for r in backend.requests] == [1, 1]


async def test_connection_close_from_the_backend_is_honoured(make_endpoint: MakeEndpoint) -> None:
    server = await scripted(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\na",
                                      then_close=True))
    try:
        endpoint = make_endpoint({"url": server.url})
        for _ in range(3):
            assert (await endpoint.request("GET", "/")).body == b"a"
        assert server.connections == 3
    finally:
        await server.__aexit__()


async def test_a_connection_the_backend_closed_while_idle_is_not_reused(make_endpoint: MakeEndpoint) -> None:
    # keep-alive announced, then the backend closes after each answer (as one whose idle timeout is short does)
    server = await scripted(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", then_close=True))
    try:
        endpoint = make_endpoint({"url": server.url})
        assert (await endpoint.request("POST", "/", body=b"1")).body == b"ok"
        await asyncio.sleep(0.1)  # the close reaches the pool while the connection is idle
        assert (await endpoint.request("POST", "/", body=b"2")).body == b"ok"  # not idempotent: never resent
        assert server.connections == 2
    finally:
        await server.__aexit__()


async def test_a_stale_pooled_connection_is_replaced_for_an_idempotent_request(make_endpoint: MakeEndpoint) -> None:
    # the first connection answers once, then reads the next request and closes without answering
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await server.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n" + str(number).encode())
        await writer.drain()
        if number == 1:
            await server.head(reader)
            return  # closed, unanswered
        await reader.read()

    server = await Scripted(script).__aenter__()
    try:
        endpoint = make_endpoint({"url": server.url})
        assert (await endpoint.request("GET", "/")).body == b"1"
        assert (await endpoint.request("GET", "/")).body == b"2"  # resent on a new connection
        assert server.connections == 2 and len(server.heads) == 3
    finally:
        await server.__aexit__()


async def test_an_answer_that_is_not_http_is_a_backend_failure(make_endpoint: MakeEndpoint) -> None:
    server = await scripted(answering(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", then_close=True))
    try:
        with pytest.raises(BackendUnreachable) as failure:
            await make_endpoint({"url": server.url}).request("POST", "/", body=b"x")
        assert "not valid HTTP" in (failure.value.internal or "")
    finally:
        await server.__aexit__()


async def test_an_answer_broken_off_mid_body_is_a_backend_error(make_endpoint: MakeEndpoint) -> None:
    server = await scripted(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part", then_close=True))
    try:
        with pytest.raises(BackendError) as failure:
            await make_endpoint({"url": server.url}).request("POST", "/", body=b"x")
        assert "broken off" in (failure.value.internal or "")
    finally:
        await server.__aexit__()


async def test_idle_connections_are_closed_after_the_keepalive(backend: BackendServer,
                                                               make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url, "pool": {"keepalive": "200ms"}})
    await endpoint.request("GET", "/a")
    await endpoint.request("GET", "/b")
    await asyncio.sleep(0.5)
    await endpoint.request("GET", "/c")
    assert [r.connection for r in backend.requests] == [1, 1, 2]
    await asyncio.sleep(0.6)
    assert backend.open_connections == 0  # closed by the pool, not only skipped


async def test_a_slow_reader_of_a_stream_is_not_a_slow_backend(backend: BackendServer,
                                                              make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url, "timeout": {"read": "300ms"}})
    reply = await endpoint.request("GET", "/big/3000000")
    assert reply.stream is not None
    size = 0
    async for chunk in reply.stream:
        if size == 0:
            await asyncio.sleep(0.8)  # the backend has sent what fits; reading paused meanwhile
        size += len(chunk)
    assert size == 3_000_000
    assert (await endpoint.request("GET", "/big/10")).body == b"x" * 10
    assert [r.connection for r in backend.requests] == [1, 1]  # read to its end: the connection went back


async def test_a_header_with_a_line_break_is_never_sent(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url})
    with pytest.raises(ValueError, match="line break"):
        await endpoint.request("GET", "/", headers=[("x-note", "a\r\nx-injected: 1")])
    assert (await endpoint.request("GET", "/after")).status == 200
    assert [r.path for r in backend.requests] == ["/after"]


async def test_large_bodies_both_ways_arrive_whole(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url})
    body = bytes(range(256)) * 20_000  # 5 MB
    reply = await endpoint.request("POST", "/echo", body=body)
    assert await reply.read() == body
    assert backend.requests[0].body == body


async def test_the_total_limit_covers_waiting_for_the_answer(backend: BackendServer,
                                                             make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(delay=1.0)
    endpoint = make_endpoint({"url": backend.url, "timeout": {"read": "10s", "total": "300ms"}})
    with pytest.raises(BackendTimeout):
        await endpoint.request("GET", "/")


def test_the_client_under_uvloop(backend: BackendServer) -> None:
    """What `interlace run` uses: uvloop's transports (not asyncio's classes) under the same client."""

    async def main() -> list[int]:
        endpoint = HttpEndpoint("uv", {"url": backend.url, "pool": {"max_connections": 2}})
        try:
            replies = await asyncio.gather(*(endpoint.request("POST", "/echo", body=b"%d" % i) for i in range(20)))
            big = await endpoint.request("GET", "/big/1000000")
            assert len(await big.read()) == 1_000_000
            return [int(r.body or b"0") for r in replies]
        finally:
            await endpoint.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == list(range(20))
    assert backend.connections <= 2



# test_tls's backend and authority fixtures
async def test_tls_streams_and_reuses(tls_backend: BackendServer, pems: dict[str, Pem],  # noqa: F811
                                      make_endpoint: MakeEndpoint) -> None:
    """TLS under the same flow control: reading pauses and resumes, the connection is kept alive."""
    endpoint = make_endpoint({"url": tls_backend.url, "tls": {"ca_file": str(pems["server"].cert)}})
    reply = await endpoint.request("GET", "/big/3000000")
    assert reply.stream is not None
    size = 0
    async for chunk in reply.stream:
        if size == 0:
            await asyncio.sleep(0.3)  # a reader behind: the TLS transport pauses reading meanwhile
        size += len(chunk)
    assert size == 3_000_000
    body = bytes(range(256)) * 8_000  # 2 MB
    assert await (await endpoint.request("POST", "/echo", body=body)).read() == body
    assert [r.connection for r in tls_backend.requests] == [1, 1]
