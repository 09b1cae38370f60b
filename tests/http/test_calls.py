"""HTTP endpoint calls against a real backend: URLs, headers, bodies both ways, the pool."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import anyio
import pytest

from engine.errors import BackendError, BackendTimeout, PayloadTooLarge
from tests.http.conftest import MakeEndpoint
from tests.support.backends import BackendServer

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


async def chunks(*parts: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        if pause:
            await anyio.sleep(pause)
        yield part


async def test_path_and_query_join_the_base_url_keeping_its_path(backend: BackendServer,
                                                                 make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url + "/api/v1/"})
    await endpoint.request("GET", "/items/1", query=[("q", "a b"), ("tag", "x&y")])
    await endpoint.request("GET", "items/2")
    await endpoint.request("GET", "/search?fixed=1", query=[("more", "2")])
    await endpoint.request("GET", "")
    assert [r.path for r in backend.requests] == [
        "/api/v1/items/1?q=a+b&tag=x%26y", "/api/v1/items/2", "/api/v1/search?fixed=1&more=2", "/api/v1"]


async def test_method_body_and_content_type_reach_the_backend_and_come_back(backend: BackendServer,
                                                                            make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url})
    reply = await endpoint.request("PUT", "/orders/7", headers=[("content-type", "application/json")],
                                   body=b'{"qty": 2}')
    seen = backend.requests[0]
    assert (seen.method, seen.body, seen.headers["content-type"]) == ("PUT", b'{"qty": 2}', "application/json")
    assert seen.headers["content-length"] == "10"
    assert reply.status == 200 and reply.body == b'{"qty": 2}' and reply.stream is None
    assert reply.header("content-type") == "application/json"
    assert reply.header("x-backend-path") == "/orders/7"


async def test_correlation_and_default_headers_are_forwarded_and_call_headers_win(
        backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url, "headers": {"X-Api-Key": "k-123", "Accept": "application/xml"}})
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await endpoint.request("GET", "/", headers=[("x-request-id", "req-42"), ("traceparent", traceparent),
                                                ("accept", "application/json")])
    await endpoint.request("GET", "/")
    first, second = backend.requests
    assert first.headers["x-request-id"] == "req-42" and first.headers["traceparent"] == traceparent
    assert first.headers["x-api-key"] == "k-123"
    assert [v for k, v in first.header_list if k.lower() == "accept"] == ["application/json"]
    assert second.headers["x-api-key"] == "k-123" and second.headers["accept"] == "application/xml"
    # the client adds no headers of its own beyond Host and framing
    assert {k.lower() for k, _ in second.header_list} == {"host", "x-api-key", "accept"}


async def test_reply_headers_are_lower_case_without_hop_by_hop_ones(backend: BackendServer,
                                                                    make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(headers={"X-Trace": "t1", "Keep-Alive": "timeout=5", "Set-Cookie": "a=1"})
    reply = await make_endpoint({"url": backend.url}).request("GET", "/")
    names = [name for name, _ in reply.headers]
    assert all(name == name.lower() for name in names)
    assert "keep-alive" not in names and "connection" not in names
    assert ("x-trace", "t1") in reply.headers and ("set-cookie", "a=1") in reply.headers


async def test_hop_by_hop_request_headers_are_not_forwarded(backend: BackendServer,
                                                            make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url})
    await endpoint.request("POST", "/", body=b"abc", headers=[("connection", "close"), ("content-length", "999"),
                                                              ("transfer-encoding", "chunked"), ("x-keep", "1")])
    seen = backend.requests[0]
    assert seen.body == b"abc" and seen.headers["content-length"] == "3" and seen.headers["x-keep"] == "1"
    assert "transfer-encoding" not in seen.headers and "connection" not in seen.headers


async def test_a_large_reply_comes_back_as_a_stream_and_reads_whole(backend: BackendServer,
                                                                     make_endpoint: MakeEndpoint) -> None:
    reply = await make_endpoint({"url": backend.url}).request("GET", f"/big/{5 * MiB}")
    assert reply.body is None and reply.stream is not None
    assert reply.header("content-length") == str(5 * MiB)
    body = await reply.read()
    assert len(body) == 5 * MiB and body == b"x" * (5 * MiB)
    assert await reply.read() is body  # kept
    assert reply.stream is None


async def test_a_stream_can_be_iterated_chunk_by_chunk(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    reply = await make_endpoint({"url": backend.url}).request("GET", f"/big/{3 * MiB}")
    assert reply.stream is not None
    sizes = [len(chunk) async for chunk in reply.stream]
    assert sum(sizes) == 3 * MiB and len(sizes) > 1


async def test_a_small_reply_of_unknown_length_streams_too(backend: BackendServer,
                                                           make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(chunked=True)
    reply = await make_endpoint({"url": backend.url}).request("POST", "/", body=b"tiny")
    assert reply.body is None and reply.stream is not None
    assert await reply.read() == b"tiny"


async def test_replies_without_a_body_are_read_whole(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url})
    head = await endpoint.request("HEAD", f"/big/{5 * MiB}")
    assert head.status == 200 and head.body == b"" and head.stream is None
    assert head.header("content-length") == str(5 * MiB)
    no_content = await endpoint.request("GET", "/status/204")
    assert no_content.status == 204 and no_content.body == b""


async def test_compressed_bodies_pass_through_untouched(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    packed = gzip.compress(b'{"a": 1}' * 100)
    backend.set_behaviour(headers={"Content-Encoding": "gzip"})
    reply = await make_endpoint({"url": backend.url}).request("POST", "/", body=packed)
    assert reply.body == packed and reply.header("content-encoding") == "gzip"


async def test_a_request_body_given_as_an_async_iterable_streams_out(backend: BackendServer,
                                                                     make_endpoint: MakeEndpoint) -> None:
    parts = [f"part{i};".encode() for i in range(5)]
    reply = await make_endpoint({"url": backend.url}).request(
        "POST", "/upload", headers=[("content-type", "text/plain")], body=chunks(*parts, pause=0.01))
    seen = backend.requests[0]
    assert seen.headers.get("transfer-encoding") == "chunked" and "content-length" not in seen.headers
    assert seen.body == b"".join(parts)
    assert reply.body == b"".join(parts)


async def test_a_large_streamed_request_body_arrives_intact(backend: BackendServer,
                                                            make_endpoint: MakeEndpoint) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB
    reply = await make_endpoint({"url": backend.url}).request("POST", "/", body=chunks(*[block] * 8))
    assert backend.requests[0].body == block * 8
    assert await reply.read() == block * 8


async def test_the_body_source_failing_is_raised_as_itself_not_as_a_backend_error(
        backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    async def too_big() -> AsyncIterator[bytes]:
        yield b"x" * 1024
        raise PayloadTooLarge("request body is larger than the limit of 1024 bytes")

    endpoint = make_endpoint({"url": backend.url, "breaker": {"failures": 1},
                              "retry": {"attempts": 3, "backoff": "10ms"}})
    with pytest.raises(PayloadTooLarge, match="larger than the limit"):
        await endpoint.request("POST", "/", body=too_big())
    assert endpoint.health()["targets"][0]["breaker"] == "closed"  # the backend did nothing wrong
    assert (await endpoint.request("GET", "/after")).status == 200


async def test_many_requests_reuse_a_few_kept_alive_connections(backend: BackendServer,
                                                                make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url, "pool": {"max_connections": 10, "keepalive": "30s"}})
    for _ in range(20):
        assert (await endpoint.request("GET", "/one-by-one")).status == 200
    assert backend.connections == 1

    async def post() -> None:
        assert (await endpoint.request("POST", "/burst", body=b"x")).body == b"x"

    async def burst() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(post)

    backend.set_behaviour(delay=0.05)  # keep them in flight together
    for _ in range(5):
        await burst()
    assert len(backend.requests) == 70
    assert backend.connections <= 10  # 50 concurrent calls, never more connections than the pool allows
    assert len({r.connection for r in backend.requests}) == backend.connections


async def test_pool_limit_makes_extra_calls_wait_and_connect_timeout_bounds_the_wait(
        backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url, "pool": {"max_connections": 1},
                              "timeout": {"connect": "200ms", "read": "5s"}})
    backend.set_behaviour(delay=1.0)
    results: list[object] = []

    async def call() -> None:
        try:
            results.append((await endpoint.request("GET", "/")).status)
        except BackendTimeout as exc:
            results.append(exc)

    started = anyio.current_time()
    async with anyio.create_task_group() as group:
        group.start_soon(call)
        await anyio.sleep(0.05)
        group.start_soon(call)
    assert anyio.current_time() - started < 2.0
    waited = [r for r in results if isinstance(r, BackendTimeout)]
    assert 200 in results and len(waited) == 1 and "timed out" in str(waited[0])
    assert backend.connections == 1


async def test_closing_an_unread_stream_frees_its_connection(backend: BackendServer,
                                                             make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url, "pool": {"max_connections": 1}, "timeout": {"connect": "1s"}})
    reply = await endpoint.request("GET", f"/big/{5 * MiB}")
    assert reply.stream is not None
    await reply.aclose()
    after = await endpoint.request("GET", "/next")  # would wait for the pool (and time out) if it were held
    assert after.status == 200 and after.body == b""


async def test_a_stream_that_stalls_is_a_backend_timeout(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(body_delay=2.0)
    reply = await make_endpoint({"url": backend.url, "timeout": {"read": "300ms"}}, name="reports").request(
        "GET", f"/big/{2 * MiB}")
    assert reply.stream is not None  # the headers came in time
    with pytest.raises(BackendTimeout, match="'reports' stopped sending its answer in time"):
        await reply.read()


async def test_a_stream_broken_off_by_the_backend_is_a_backend_error(backend: BackendServer,
                                                                     make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(body_delay=0.5)
    reply = await make_endpoint({"url": backend.url}, name="reports").request("GET", f"/big/{2 * MiB}")
    backend.stop()
    with pytest.raises(BackendError, match="'reports' broke off its answer") as caught:
        await reply.read()
    assert caught.value.status == 502


async def test_close_then_use_again_opens_a_fresh_pool(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url})
    await endpoint.open()
    assert (await endpoint.request("GET", "/a")).status == 200
    await endpoint.close()
    await endpoint.close()  # idempotent
    assert (await endpoint.request("GET", "/b")).status == 200
    assert backend.connections == 2
