"""HTTP endpoints against real servers on loopback: timeouts, retries, failover, breaker, streams."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from connectors.http import HttpEndpoint
from engine.errors import BackendTimeout, BackendUnreachable, CircuitOpen
from engine.units import parse_duration, parse_size
from tests.support.backends import BackendServer, closed_port

pytestmark = pytest.mark.anyio


async def endpoint(config: dict[str, Any]) -> HttpEndpoint:
    ep = HttpEndpoint("test", config)
    await ep.open()
    return ep


async def test_request_forwards_method_path_query_headers_body() -> None:
    with BackendServer() as backend:
        ep = await endpoint({"url": backend.url + "/base", "headers": {"X-Key": "k"}})
        try:
            reply = await ep.request("PUT", "/items/1", headers=[("content-type", "application/json")],
                                     body=b'{"a":1}', query=[("q", "a b")])
        finally:
            await ep.close()
    seen = backend.requests[0]
    assert (seen.method, seen.path) == ("PUT", "/base/items/1?q=a+b")
    assert seen.headers["x-key"] == "k" and seen.body == b'{"a":1}'
    assert reply.status == 200 and reply.body == b'{"a":1}'
    assert ("content-type", "application/json") in reply.headers


async def test_read_timeout_is_backend_timeout_within_the_limit() -> None:
    with BackendServer() as backend:
        backend.behave(delay=2.0)
        ep = await endpoint({"url": backend.url, "timeout": {"read": "300ms"}})
        started = time.monotonic()
        with pytest.raises(BackendTimeout, match="timed out"):
            await ep.request("GET", "/")
        assert time.monotonic() - started < 1.5
        await ep.close()


async def test_retries_connection_failures_and_statuses() -> None:
    with BackendServer() as backend:
        backend.behave(fail_times=2, fail_status=503)
        ep = await endpoint({"url": backend.url, "retry": {"attempts": 3, "backoff": "10ms", "on_status": [503]}})
        reply = await ep.request("POST", "/x", body=b"hi")
        await ep.close()
    assert reply.status == 200 and reply.body == b"hi"
    assert len(backend.requests) == 3


async def test_without_retry_on_status_the_status_is_returned() -> None:
    with BackendServer() as backend:
        ep = await endpoint({"url": backend.url})
        reply = await ep.request("GET", "/status/503")
        await ep.close()
    assert reply.status == 503


async def test_dead_backend_is_unreachable_and_failover_uses_the_next_url() -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    ep = await endpoint({"url": dead})
    with pytest.raises(BackendUnreachable, match="unreachable"):
        await ep.request("GET", "/")
    await ep.close()
    with BackendServer() as backend:
        ep = await endpoint({"urls": [dead, backend.url]})
        reply = await ep.request("GET", "/ok")
        await ep.close()
    assert reply.status == 200 and backend.requests[0].path == "/ok"


async def test_backend_killed_mid_test_then_retry_reaches_it_again() -> None:
    backend = BackendServer().start()
    ep = await endpoint({"url": backend.url, "retry": {"attempts": 2, "backoff": "10ms"}})
    assert (await ep.request("GET", "/1")).status == 200
    backend.stop()
    with pytest.raises(BackendUnreachable):
        await ep.request("GET", "/2")
    backend.start()
    assert (await ep.request("GET", "/3")).status == 200
    backend.stop()
    await ep.close()


async def test_round_robin_spreads_calls() -> None:
    with BackendServer() as one, BackendServer() as two:
        ep = await endpoint({"urls": [one.url, two.url], "strategy": "round-robin"})
        for _ in range(6):
            await ep.request("GET", "/")
        await ep.close()
    assert len(one.requests) == 3 and len(two.requests) == 3


async def test_breaker_opens_fails_fast_then_half_open_probe_closes_it() -> None:
    backend = BackendServer().start()
    url = backend.url
    backend.stop()
    ep = await endpoint({"url": url, "breaker": {"failures": 2, "reset": "300ms"}})
    for _ in range(2):
        with pytest.raises(BackendUnreachable):
            await ep.request("GET", "/")
    backend.start()
    with pytest.raises(CircuitOpen):
        await ep.request("GET", "/")
    assert backend.requests == []  # open: the backend was not touched
    assert ep.health()["urls"][0]["breaker"] == "open"
    await anyio.sleep(0.35)
    assert (await ep.request("GET", "/probe")).status == 200
    assert ep.health()["urls"][0]["breaker"] == "closed"
    backend.stop()
    await ep.close()


async def test_large_replies_stream_and_read_whole() -> None:
    with BackendServer() as backend:
        ep = await endpoint({"url": backend.url})
        reply = await ep.request("GET", f"/big/{5 * 1024 * 1024}")
        assert reply.body is None and reply.stream is not None
        assert len(await reply.read()) == 5 * 1024 * 1024
        await ep.close()


async def test_request_bodies_stream_out() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"part{i};".encode()

    with BackendServer() as backend:
        ep = await endpoint({"url": backend.url})
        reply = await ep.request("POST", "/s", headers=[("content-type", "text/plain")], body=chunks())
        await ep.close()
    assert backend.requests[0].body == b"part0;part1;part2;part3;part4;"
    assert reply.body == b"part0;part1;part2;part3;part4;"


async def test_pool_keeps_connections_alive() -> None:
    with BackendServer() as backend:
        ep = await endpoint({"url": backend.url})
        for _ in range(20):
            await ep.request("GET", "/")
        await ep.close()
    assert backend.connections <= 2


def test_urls_must_be_http_and_never_show_credentials() -> None:
    with pytest.raises(ValueError, match="not an http"):
        HttpEndpoint("x", {"url": "ftp://host/"})
    ep = HttpEndpoint("x", {"url": "http://user:secret@127.0.0.1:9/"})
    assert "secret" not in str(ep.health())


def test_durations_and_sizes() -> None:
    assert parse_duration("250ms") == 0.25 and parse_duration(2) == 2.0 and parse_duration("1m") == 60
    assert parse_size("64KiB") == 65536 and parse_size("1MB") == 1_000_000 and parse_size(10) == 10
    for bad in ("soon", "-1s", True):
        with pytest.raises(ValueError):
            parse_duration(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        parse_size("lots")
