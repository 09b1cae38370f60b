"""cache: answers kept and served without the backend, in memory and in a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backends import BackendServer, closed_port
from tests.support.engine import facade_client, write_flows
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


def _flows(backend: BackendServer, extra: str = "", store_url: str | None = None) -> str:
    store = f"\n  shared: {{redis: {{url: \"{store_url}\"}}}}" if store_url else ""
    store_key = "\n          store: shared" if store_url else ""
    return f"""
endpoints:
  crm: {{http: {{url: "{backend.url}"}}}}{store}
flows:
  customer:
    source: {{http: {{method: GET, path: "/customers/{{id}}"}}}}
    steps:
      - cache:
          key: "customer:${{path.id}}"
          ttl: 30s
          header: X-Cache{store_key}{extra}
          steps:
            - call: {{endpoint: crm, method: POST, path: "/c/${{path.id}}", body: {{id: "${{path.id}}"}}}}
      - set: {{header: X-After, value: "${{payload.id}}"}}
"""


async def test_a_hit_answers_without_the_backend(tmp_path: Path, backend: BackendServer) -> None:
    write_flows(tmp_path, _flows(backend))
    async with facade_client(tmp_path) as client:
        first = await client.get("/customers/1")
        second = await client.get("/customers/1")
        other = await client.get("/customers/2")
    assert [first.headers["x-cache"], second.headers["x-cache"], other.headers["x-cache"]] == ["miss", "hit", "miss"]
    assert first.json() == second.json() == {"id": "1"}
    assert second.headers["content-type"] == "application/json"
    assert second.headers["x-after"] == "1"  # the steps after the cache still run on a hit
    assert [r.path for r in backend.requests] == ["/c/1", "/c/2"]


async def test_entries_expire(tmp_path: Path, backend: BackendServer) -> None:
    write_flows(tmp_path, _flows(backend).replace("ttl: 30s", "ttl: 200ms"))
    async with facade_client(tmp_path) as client:
        await client.get("/customers/1")
        await asyncio.sleep(0.4)
        again = await client.get("/customers/1")
    assert again.headers["x-cache"] == "miss"
    assert len(backend.requests) == 2


async def test_only_listed_statuses_and_the_backends_cache_control(tmp_path: Path, backend: BackendServer) -> None:
    write_flows(tmp_path, _flows(backend))
    async with facade_client(tmp_path) as client:
        backend.set_behaviour(status=404)
        await client.get("/customers/1")
        await client.get("/customers/1")
        backend.set_behaviour(headers={"Cache-Control": "no-store"})
        await client.get("/customers/2")
        await client.get("/customers/2")
        backend.set_behaviour(headers={"Cache-Control": "max-age=0"})
        await client.get("/customers/3")
        await client.get("/customers/3")
        backend.set_behaviour(headers={"Cache-Control": "public, max-age=60"})
        await client.get("/customers/4")
        cached = await client.get("/customers/4")
    assert [r.path for r in backend.requests] == ["/c/1", "/c/1", "/c/2", "/c/2", "/c/3", "/c/3", "/c/4"]
    assert cached.headers["cache-control"] == "public, max-age=60"


async def test_the_callers_cache_control_only_when_respected(tmp_path: Path, backend: BackendServer) -> None:
    write_flows(tmp_path, _flows(backend, "\n          respect_request: true"))
    async with facade_client(tmp_path) as client:
        await client.get("/customers/1")
        refreshed = await client.get("/customers/1", headers={"Cache-Control": "no-cache"})
        cached = await client.get("/customers/1")
    assert refreshed.headers["x-cache"] == "miss"
    assert cached.headers["x-cache"] == "hit"
    assert len(backend.requests) == 2


async def test_two_engines_share_one_redis(tmp_path: Path, backend: BackendServer, redis: RedisServer) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    write_flows(one, _flows(backend, store_url=redis.url))
    write_flows(two, _flows(backend, store_url=redis.url))
    async with facade_client(one) as first, facade_client(two) as second:
        miss = await first.get("/customers/9")
        hit = await second.get("/customers/9")
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    assert hit.json() == {"id": "9"}
    assert len(backend.requests) == 1
    assert redis.command("DBSIZE") == b":1\r\n"


async def test_an_unreachable_redis_is_a_miss_not_a_failure(tmp_path: Path, backend: BackendServer) -> None:
    write_flows(tmp_path, _flows(backend, store_url=f"redis://127.0.0.1:{closed_port()}/0"))
    async with facade_client(tmp_path) as client:
        first = await client.get("/customers/1")
        second = await client.get("/customers/1")
    assert first.status_code == second.status_code == 200
    assert len(backend.requests) == 2
