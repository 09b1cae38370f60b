"""concurrency: at most N executions at once per key, against a slow real backend; 429/503 with
Retry-After past it, waiting in line with `wait`; one limit held by two real engines on one Redis,
and the slots of an engine killed mid-request freed after their lease."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.backends import BackendServer
from tests.support.engine import facade_client, run_engine, write_flows
from tests.support.redis_server import RedisServer


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


def _flows(backend: BackendServer, settings: str, store_url: str | None = None) -> str:
    store = f"  shared: {{redis: {{url: \"{store_url}\"}}}}\n" if store_url else ""
    return f"""
endpoints:
  slow: {{http: {{url: "{backend.url}", timeout: {{read: 40s}}}}}}
{store}flows:
  report:
    source: {{http: {{method: GET, path: /report}}}}
    steps:
      - concurrency:
          key: "${{headers.\\"x-client-id\\" || 'anonymous'}}"
          {settings}
          steps:
            - call: {{endpoint: slow, method: GET, path: /report}}
      - respond: {{json: {{ok: true}}}}
"""


async def _burst(client: httpx.AsyncClient, count: int, client_id: str = "a") -> list[httpx.Response]:
    return list(await asyncio.gather(*(client.get("/report", headers={"X-Client-Id": client_id})
                                       for _ in range(count))))


@pytest.mark.anyio
async def test_past_the_limit_the_caller_gets_429_with_retry_after(tmp_path: Path, backend: BackendServer) -> None:
    backend.set_behaviour(delay=0.5)
    write_flows(tmp_path, _flows(backend, "limit: 2\n          retry_after: 3s"))
    async with facade_client(tmp_path) as client:
        answers = await _burst(client, 6)
        other_client = await client.get("/report", headers={"X-Client-Id": "b"})
        again = await _burst(client, 2)  # the slots were given back
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 429, 429, 429, 429]
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "3"
    assert refused.json()["type"].endswith("/concurrency-limited")
    assert refused.json()["limit"] == 2
    assert backend.max_in_flight == 2
    assert other_client.status_code == 200
    assert [a.status_code for a in again] == [200, 200]


@pytest.mark.anyio
async def test_with_wait_the_burst_is_served_in_line_and_503_when_told(tmp_path: Path,
                                                                         backend: BackendServer) -> None:
    backend.set_behaviour(delay=0.2)
    write_flows(tmp_path / "wait", _flows(backend, "limit: 1\n          wait: 10s"))
    async with facade_client(tmp_path / "wait") as client:
        answers = await _burst(client, 4)
    assert [a.status_code for a in answers] == [200] * 4
    assert backend.max_in_flight == 1
    write_flows(tmp_path / "short", _flows(backend, "limit: 1\n          wait: 50ms\n          status: 503"))
    async with facade_client(tmp_path / "short") as client:
        answers = await _burst(client, 3)
    assert sorted(a.status_code for a in answers) == [200, 503, 503]


@pytest.mark.anyio
async def test_a_failure_gives_the_slot_back(tmp_path: Path, backend: BackendServer) -> None:
    backend.set_behaviour(statuses=[500, 500])
    write_flows(tmp_path, _flows(backend, "limit: 1"))
    async with facade_client(tmp_path) as client:
        failed = [await client.get("/report") for _ in range(2)]
        served = await client.get("/report")
    assert [a.status_code for a in failed] == [502, 502]
    assert served.status_code == 200


def _parallel(urls: list[str]) -> list[int]:
    statuses: list[int] = [0] * len(urls)

    def get(index: int) -> None:
        statuses[index] = httpx.get(urls[index], headers={"X-Client-Id": "tenant"}, timeout=30).status_code

    threads = [threading.Thread(target=get, args=(i,)) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_two_engines_on_one_redis_hold_one_limit(tmp_path: Path, backend: BackendServer,
                                                 redis: RedisServer) -> None:
    backend.set_behaviour(delay=3.0)  # longer than a loaded machine takes to send the burst
    queued = _flows(backend, "limit: 2\n          wait: 60s\n          store: shared").split("flows:\n", 1)[1]
    queued = queued.replace("report", "queued")
    for name in ("one", "two"):
        write_flows(tmp_path / name, _flows(backend, "limit: 3\n          store: shared", redis.url) + queued)
    with run_engine(tmp_path / "one") as first, run_engine(tmp_path / "two") as second:
        engines = [first, second]
        statuses = _parallel([f"{engines[i % 2].url}/report" for i in range(8)])
        assert sorted(statuses) == [200] * 3 + [429] * 5
        assert backend.max_in_flight == 3
        assert redis.command("KEYS", "*") == b"*0\r\n"  # every slot released: the set is gone
        backend.set_behaviour(delay=0.3)
        with backend.state.lock:
            backend.state.max_in_flight = 0
        # waiting in line across both engines: all served, never more than 2 at once
        assert _parallel([f"{engines[i % 2].url}/queued" for i in range(6)]) == [200] * 6
        assert backend.max_in_flight == 2


def test_a_slot_given_back_is_announced_to_the_engines_waiting(tmp_path: Path, backend: BackendServer,
                                                                 redis: RedisServer) -> None:
    import redis as redis_client

    backend.set_behaviour(delay=1.0)
    for name in ("one", "two"):
        write_flows(tmp_path / name, _flows(backend, "limit: 1\n          wait: 60s\n          store: shared",
                                            redis.url))
    listener = redis_client.Redis.from_url(redis.url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe("interlace:slots-freed")
    try:
        with run_engine(tmp_path / "one") as first, run_engine(tmp_path / "two") as second:
            statuses = _parallel([f"{first.url}/report", f"{second.url}/report"])
        # what was published meanwhile (None for the subscription's own confirmation, or nothing more)
        announced = [message["data"] for message in (listener.get_message(timeout=0.2) for _ in range(10))
                     if message is not None]
    finally:
        listener.close()
    assert statuses == [200, 200]
    assert backend.max_in_flight == 1
    # each release named the slots' key (the step and the client): the waiter tried again then
    assert len(announced) == 2
    assert all(key.startswith(b"concurrency:report/") and key.endswith(b":tenant") for key in announced)


def test_the_slots_of_a_killed_engine_free_themselves_after_the_lease(tmp_path: Path, backend: BackendServer,
                                                                      redis: RedisServer) -> None:
    backend.set_behaviour(delay=30)
    write_flows(tmp_path, _flows(backend, "limit: 1\n          lease: 1s\n          store: shared", redis.url))
    with run_engine(tmp_path) as doomed:
        def held() -> None:
            with contextlib.suppress(httpx.HTTPError):  # cut when its engine is killed
                httpx.get(f"{doomed.url}/report", timeout=60)

        threading.Thread(target=held, daemon=True).start()
        backend.wait_for_requests(1, timeout=10)
        assert httpx.get(f"{doomed.url}/report", timeout=5).status_code == 429  # held, and renewed past 1 s
        time.sleep(1.5)
        assert httpx.get(f"{doomed.url}/report", timeout=5).status_code == 429
        os.killpg(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait(10)
    backend.set_behaviour()
    with run_engine(tmp_path) as heir:
        time.sleep(1.2)  # the dead engine's lease runs out
        assert httpx.get(f"{heir.url}/report", timeout=10).status_code == 200


@pytest.mark.parametrize(("settings", "message"), [
    ("limit: 0", "flows.yaml:9:18: concurrency: 0 is less than the minimum of 1 in limit"),
    ("limit: 1\n          wait: -1s", "flows.yaml:10:17: concurrency: expected a duration"),
    ("limit: 1\n          status: 500",
     "flows.yaml:10:19: concurrency: expected one of 429, 503 in status, got the number 500"),
])
def test_bad_settings_are_load_errors(tmp_path: Path, backend: BackendServer, settings: str, message: str) -> None:
    from engine.loader import LoadErrors, load_project

    write_flows(tmp_path, _flows(backend, settings))
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    assert message in str(caught.value)
