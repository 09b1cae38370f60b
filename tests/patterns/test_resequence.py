"""resequence: messages sent on in the order of their sequence numbers, against a real backend
on 127.0.0.1 (and a real engine stopped with SIGTERM)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from engine import metrics
from tests.patterns.test_wire_tap import arrived
from tests.support.backends import BackendServer
from tests.support.engine import assert_step_load_error, facade_client, run_engine, wait_for, write_flows
from tests.support.postgres import PostgresServer
from tests.support.redis_server import RedisServer
from tests.support.services import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def ledger() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


@pytest.fixture(scope="module")
def postgres_module() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


_databases = itertools.count()


@pytest.fixture(params=["memory", "redis", "sqlite", "postgresql"])
def kept(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the tests run with it keep the resequencer's state: the endpoint to declare, if any
    (PostgreSQL: its decisions are functions of the database, the others' are Lua or Python)."""
    return _store(request, tmp_path, request.param)


def _store(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str:
    if kind == "memory":
        return ""
    if kind == "sqlite":
        return f'sql: {{url: "sqlite:///{tmp_path}/order.db"}}'
    if kind == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres_module")
        database = f"kept{next(_databases)}"
        postgres.psql(f"CREATE DATABASE {database}")
        return f'sql: {{url: "{postgres.url.rsplit("/", 1)[0]}/{database}"}}'
    redis: RedisServer = request.getfixturevalue("redis")
    return f'redis: {{url: "{redis.url}"}}'


def _flows(backend: BackendServer, settings: str = "", store: str = "") -> str:
    if store:
        settings += "\nstore: state"
    extra = "".join(f"\n              {line}" for line in settings.splitlines() if line)
    state = f"\n      state: {{{store}}}" if store else ""
    return f"""
    endpoints:
      ledger: {{http: {{url: "{backend.url}"}}}}{state}
    flows:
      entries:
        source: {{http: {{method: POST, path: /entries}}}}
        steps:
          - resequence:
              number: "${{payload.seq}}"
              call: {{endpoint: ledger, method: POST, path: /entries}}{extra}
          - respond: {{status: 202}}
    """


def _seen(backend: BackendServer) -> list[int]:
    return [json.loads(r.body)["seq"] for r in backend.requests]


def _count(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("interlace_resequenced_messages_total", {
        "flow": "entries", "step": "entries/steps[0]", "outcome": outcome}) or 0.0


async def _post(client: httpx.AsyncClient, *numbers: int) -> None:
    for number in numbers:
        answer = await client.post("/entries", json={"seq": number})
        assert answer.status_code == 202, answer.text


async def test_stream_mode_releases_each_message_once_all_before_it_came(tmp_path: Path,
                                                                       ledger: BackendServer, kept: str) -> None:
    write_flows(tmp_path, _flows(ledger, "timeout: 1h\nstart: 1", store=kept))
    async with facade_client(tmp_path) as client:
        await _post(client, 3, 2)
        await asyncio.sleep(0.2)
        assert ledger.requests == []  # 1 has not come: 2 and 3 wait, and their callers were answered
        await _post(client, 1)
        await arrived(ledger, 3)
        await _post(client, 5, 4)
        await arrived(ledger, 5)
    assert _seen(ledger) == [1, 2, 3, 4, 5]


async def test_a_gap_is_skipped_after_the_timeout(tmp_path: Path, ledger: BackendServer, kept: str) -> None:
    write_flows(tmp_path, _flows(ledger, "timeout: 300ms", store=kept))
    skipped = _count("after_gap_timeout")
    async with facade_client(tmp_path) as client:
        await _post(client, 10)
        gap_seen = time.monotonic()  # 12 opens the gap: 11 never comes
        await _post(client, 12, 13)
        await arrived(ledger, 3)  # when 12 and 13 went, seen within 20 ms: a slow machine only delays them
        # not before the gap's timeout (less a little for the store's clock against this one's)
        assert time.monotonic() - gap_seen >= 0.3 - 0.05, _seen(ledger)
        await _post(client, 14)
        await arrived(ledger, 4)
    assert _seen(ledger) == [10, 12, 13, 14]
    assert _count("after_gap_timeout") == skipped + 1


async def test_late_and_duplicate_numbers(tmp_path: Path, ledger: BackendServer, kept: str) -> None:
    write_flows(tmp_path, _flows(ledger, "timeout: 1h\nlate: drop", store=kept))
    late, duplicate = _count("late"), _count("duplicate")
    async with facade_client(tmp_path) as client:
        await _post(client, 5, 7, 7, 4, 6)  # 4 is before the first number seen: its turn is past
        await arrived(ledger, 3)
    assert _seen(ledger) == [5, 6, 7]
    assert _count("late") == late + 1 and _count("duplicate") == duplicate + 1


async def test_a_full_buffer_releases_the_lowest_held_skipping_its_gap(tmp_path: Path,
                                                                      ledger: BackendServer, kept: str) -> None:
    write_flows(tmp_path, _flows(ledger, "timeout: 1h\nstart: 1\ncapacity: 2", store=kept))
    async with facade_client(tmp_path) as client:
        await _post(client, 3, 5, 4)  # three held past a capacity of two: 1 and 2 are given up on
        await arrived(ledger, 3)
        await _post(client, 2)  # late now: sent at once (late: send, the default)
        await arrived(ledger, 4)
    assert _seen(ledger) == [3, 4, 5, 2]


async def test_batch_mode_sorts_a_batch_by_size_then_by_timeout(tmp_path: Path, ledger: BackendServer,
                                                                kept: str) -> None:
    write_flows(tmp_path, _flows(ledger, "mode: batch\nsize: 3\ntimeout: 300ms", store=kept))
    by_size, by_timeout = _count("batch_size"), _count("batch_timeout")
    async with facade_client(tmp_path) as client:
        await _post(client, 30, 10, 20)
        await arrived(ledger, 3)
        await _post(client, 50, 40)
        await arrived(ledger, 5)
    assert _seen(ledger) == [10, 20, 30, 40, 50]
    assert _count("batch_size") == by_size + 3 and _count("batch_timeout") == by_timeout + 2


async def test_a_sequence_number_that_is_no_integer_is_a_422_problem(tmp_path: Path, ledger: BackendServer,
                                                                     kept: str) -> None:
    write_flows(tmp_path, _flows(ledger, store=kept))
    async with facade_client(tmp_path) as client:
        answer = await client.post("/entries", json={"seq": "first"})
    assert answer.status_code == 422 and answer.headers["content-type"].startswith("application/problem+json")
    assert "must be an integer, got 'first'" in answer.json()["detail"]


async def test_past_max_pending_new_messages_are_refused_with_503(tmp_path: Path, ledger: BackendServer,
                                                                  kept: str) -> None:
    ledger.set_behaviour(delay=30)
    write_flows(tmp_path, _flows(ledger, "max_pending: 2\nsend_timeout: 1s", store=kept))
    async with facade_client(tmp_path) as client:
        await _post(client, 1)
        await arrived(ledger, 1)  # 1 is being sent (the backend holds it)
        await _post(client, 2, 3)  # these two wait for it
        refused = await client.post("/entries", json={"seq": 4})
        ledger.stop()  # the rest fail fast: the flows can close
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["type"].endswith("/resequencer-full")


def test_stopping_the_engine_releases_what_it_holds_in_order(tmp_path: Path, ledger: BackendServer) -> None:
    write_flows(tmp_path, _flows(ledger, "timeout: 1h\nstart: 1"))
    with run_engine(tmp_path) as engine:
        for number in (4, 2, 3):
            assert httpx.post(f"{engine.url}/entries", json={"seq": number}, timeout=10).status_code == 202
        assert ledger.requests == []
        assert engine.terminate() == 0
    wait_for(lambda: len(ledger.requests) == 3, "the held messages")
    assert _seen(ledger) == [2, 3, 4]


@pytest.mark.parametrize(("step", "message", "where"), [
    ('{number: "${payload.seq}"}', "give call (an endpoint) or sequence", "5:21"),
    ('{number: "${payload.seq}", call: {endpoint: ledger}, sequence: s}', "give call or sequence, not both",
     "5:84"),
    ('{number: "${payload.seq}", mode: batch, start: 1, call: {endpoint: ledger}}', "start belongs to mode: stream",
     "5:68"),
    ('{number: "${payload.seq}", size: 5, call: {endpoint: ledger}}', "size belongs to mode: batch", "5:54"),
    ('{number: "${payload.seq}", timeout: 0s, call: {endpoint: ledger}}', "a duration greater than zero", "5:57"),
    ('{number: "${payload.seq}", call: {endpoint: nowhere}}', "unknown endpoint 'nowhere'", "5:65"),
    ('{number: "payload.seq", call: {endpoint: ledger}}',
     "a template such as ${payload.seq}, not the constant 'payload.seq'", "5:30"),
    ('{number: "${payload.", call: {endpoint: ledger}}', "unclosed ${", "5:30"),
    ('{number: "${payload.seq}", mode: sorted, call: {endpoint: ledger}}', "expected one of stream, batch", "5:54"),
    ('{number: "${payload.seq}", call: {endpoint: ledger}, store: ledger}',
     "endpoint 'ledger' cannot keep a resequencer's state; declare a redis endpoint", "5:81"),
    ('{number: "${payload.seq}", call: {endpoint: ledger}, store: kept}', "unknown endpoint 'kept'", "5:81"),
    ('{number: "${payload.seq}", call: {endpoint: ledger}, store: order, start: 1152921504606846976}',
     "a sequence number kept in a store is at most 2^53 in size, got start: 1152921504606846976", "5:95"),
])
def test_a_wrong_resequence_is_a_load_error_at_its_place(tmp_path: Path, step: str, message: str,
                                                         where: str) -> None:
    assert_step_load_error(tmp_path, "resequence", step, message, where, """
    sequences:
      s: [{log: sent}]
    endpoints:
      ledger: {http: {url: "http://127.0.0.1:9"}}
      order: {redis: {url: "redis://127.0.0.1:9/0"}}
    """)


# -- state kept in redis: restarts and replicas --

def _kept_flows(ledger: BackendServer, store: str, timeout: str = "1h", send_timeout: str = "1s") -> str:
    # a short send_timeout keeps a killed engine's lease (send_timeout + 2 s) short for the restarts
    return _flows(ledger, f"timeout: {timeout}\nstart: 1\nsend_timeout: {send_timeout}", store=store)


@pytest.fixture(params=["redis", "sqlite", "postgresql"])
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store that outlives the engine, shared by the engines on this machine."""
    if request.param != "postgresql":
        yield _store(request, tmp_path, request.param)
        return
    with PostgresServer() as postgres:
        postgres.psql("CREATE DATABASE ordering")
        yield f'sql: {{url: "{postgres.url.rsplit("/", 1)[0]}/ordering"}}'


def _shuffled(numbers: list[int], shuffle: Callable[[list[int]], None]) -> list[int]:
    shuffle(numbers)
    return numbers


def _post_to(url: str, number: int) -> int:
    return httpx.post(f"{url}/entries", json={"seq": number}, timeout=20).status_code


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_held_messages_in_a_store_outlive_the_engine_and_go_out_in_order_once_the_gap_fills(
        tmp_path: Path, ledger: BackendServer, durable: str, how: str) -> None:
    write_flows(tmp_path, _kept_flows(ledger, durable))
    with run_engine(tmp_path) as engine:
        assert [_post_to(engine.url, number) for number in (4, 2, 3)] == [202] * 3
        if how == "killed":  # no stop at all: only Redis has them
            os.killpg(engine.process.pid, signal.SIGKILL)
            engine.process.wait(10)
        else:  # a clean stop keeps them too (memory sends them as they stand)
            assert engine.terminate() == 0
    assert ledger.requests == []
    with run_engine(tmp_path) as engine:
        assert _post_to(engine.url, 1) == 202
        wait_for(lambda: len(ledger.requests) == 4, "the held messages, once 1 came")
        assert _post_to(engine.url, 6) == 202 and _post_to(engine.url, 5) == 202  # on from the right number
        wait_for(lambda: len(ledger.requests) == 6, "the next ones")
        assert engine.terminate() == 0
    assert _seen(ledger) == [1, 2, 3, 4, 5, 6]


def test_a_gap_found_after_a_restart_is_skipped_after_its_timeout(tmp_path: Path, ledger: BackendServer,
                                                                  durable: str) -> None:
    write_flows(tmp_path, _kept_flows(ledger, durable, timeout="1s"))
    with run_engine(tmp_path) as engine:
        assert [_post_to(engine.url, number) for number in (3, 2)] == [202] * 2
        os.killpg(engine.process.pid, signal.SIGKILL)
        engine.process.wait(10)
    assert ledger.requests == []
    with run_engine(tmp_path):
        wait_for(lambda: len(ledger.requests) == 2, "the held messages, once 1 was given up on")
    assert _seen(ledger) == [2, 3]


def test_two_engines_on_one_store_send_one_stream_in_order(tmp_path: Path, ledger: BackendServer,
                                                            durable: str) -> None:
    # 24 posts at once on a loaded machine can hold a send past 1 s; a send given up on may still
    # reach the ledger after the next one (the race would then fail on the test's timing, not the
    # store's ordering), so these sends get 10 s
    flows = _kept_flows(ledger, durable, send_timeout="10s")
    # nearly in order (shuffled within windows of 6): most messages release others, so the engines'
    # decisions overlap while each changes the next number (a lost update would stall the stream)
    shuffle = random.Random(15).shuffle
    numbers = [n for start in range(1, 121, 6) for n in _shuffled(list(range(start, start + 6)), shuffle)]
    with run_engine(write_flows(tmp_path / "one", flows)) as first, \
            run_engine(write_flows(tmp_path / "two", flows)) as second:
        engines = [first.url, second.url]
        with ThreadPoolExecutor(max_workers=24) as pool:
            statuses = list(pool.map(lambda i: _post_to(engines[i % 2], numbers[i]), range(len(numbers))))
        assert set(statuses) == {202}
        wait_for(lambda: len(ledger.requests) >= len(numbers), "every message sent", timeout=20)
    assert _seen(ledger) == sorted(numbers)  # one order across both engines, each message once


async def test_a_redis_store_that_is_down_answers_503_problem_json(tmp_path: Path, ledger: BackendServer) -> None:
    write_flows(tmp_path, _flows(ledger, store=f'redis: {{url: "redis://127.0.0.1:{free_port()}/0", timeout: 200ms}}'))
    async with facade_client(tmp_path) as client:
        answer = await client.post("/entries", json={"seq": 1})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "store cannot be reached" in answer.json()["detail"] and "127.0.0.1" not in answer.text
    assert ledger.requests == []


async def test_a_number_past_2_to_the_53_in_redis_is_a_422_problem(tmp_path: Path, ledger: BackendServer,
                                                                   redis: RedisServer) -> None:
    write_flows(tmp_path, _flows(ledger, store=f'redis: {{url: "{redis.url}"}}'))
    async with facade_client(tmp_path) as client:
        answer = await client.post("/entries", json={"seq": 2**53 + 1})
    assert answer.status_code == 422 and answer.json()["type"].endswith("/bad-sequence-number")
    assert "at most 2^53" in answer.json()["detail"]
