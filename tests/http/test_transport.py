"""httpx.AsyncClient on the aiohttp-backed transport: the httpx API, aiohttp's pool."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from connectors.aiohttp_transport import AiohttpTransport
from tests.support.backends import BackendServer, closed_port

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


def client(base_url: str, **timeouts: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, transport=AiohttpTransport(max_connections=10),
                             timeout=httpx.Timeout(5.0, **timeouts))


async def test_requests_and_replies_keep_the_httpx_api(backend: BackendServer) -> None:
    async with client(backend.url) as http:
        reply = await http.post("/echo", params={"q": "1"}, json={"a": 1}, headers={"X-Request-ID": "r1"})
        assert reply.status_code == 200 and reply.json() == {"a": 1}
        assert reply.headers["content-type"] == "application/json"
        assert reply.headers["x-backend-path"] == "/echo?q=1"
        assert reply.http_version == "HTTP/1.1"
    seen = backend.requests[0]
    assert seen.headers["x-request-id"] == "r1" and seen.method == "POST"


async def test_streaming_both_ways(backend: BackendServer) -> None:
    async def upload() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * MiB

    async with client(backend.url) as http:
        async with http.stream("POST", "/up", content=upload()) as reply:
            received = [len(chunk) async for chunk in reply.aiter_raw()]
        assert sum(received) == 4 * MiB and len(received) > 1
        big = await http.get(f"/big/{2 * MiB}")
        assert len(big.content) == 2 * MiB
    assert backend.requests[0].headers["transfer-encoding"] == "chunked"
    assert backend.connections == 1  # the stream, read to the end, gave its connection back


async def test_failures_are_httpx_exceptions(backend: BackendServer) -> None:
    async with client(f"http://127.0.0.1:{closed_port()}") as http:
        with pytest.raises(httpx.ConnectError, match="cannot connect"):
            await http.get("/")
    backend.set_behaviour(delay=2.0)
    async with client(backend.url, read=0.2) as http:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await http.get("/slow")
        assert caught.value.request.url.path == "/slow"
    backend.set_behaviour(drop=1)
    async with client(backend.url) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="closed before an answer"):
            await http.post("/", content=b"x")


async def test_a_full_pool_waits_and_its_wait_is_a_connect_timeout(backend: BackendServer) -> None:
    transport = AiohttpTransport(max_connections=1)
    async with httpx.AsyncClient(base_url=backend.url, transport=transport,
                                 timeout=httpx.Timeout(5.0, pool=0.2, connect=0.2)) as http:
        async with http.stream("GET", f"/big/{5 * MiB}") as held:  # streamed: holds the only connection
            started = time.monotonic()
            with pytest.raises(httpx.ConnectTimeout):
                await http.get("/waits")
            assert time.monotonic() - started < 1.0
            assert len(await held.aread()) == 5 * MiB
        assert (await http.get("/now")).status_code == 200
    assert [r.path for r in backend.requests] == [f"/big/{5 * MiB}", "/now"]


async def test_messages_never_carry_the_url(backend: BackendServer) -> None:
    backend.set_behaviour(drop=1)
    async with client(backend.url.replace("http://", "http://user:hunter2@")) as http:
        with pytest.raises(httpx.TransportError) as caught:
            await http.post("/", content=b"x")
    assert "hunter2" not in str(caught.value) and str(backend.port) not in str(caught.value)
