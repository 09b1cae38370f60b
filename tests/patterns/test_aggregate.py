"""aggregate: values of separate requests gathered by correlation key and sent as one group,
against real backends on 127.0.0.1 (and real engine processes for the SQL repository)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
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
def orders() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


def _flows(backend: BackendServer, complete: str, extra: str = "", store: str = "",
           value: str = "${payload.line}") -> str:
    settings = "".join(f"\n              {line}" for line in extra.splitlines() if line)
    return f"""
    endpoints:
      orders: {{http: {{url: "{backend.url}"}}}}{store}
    flows:
      lines:
        source: {{http: {{method: POST, path: /lines}}}}
        steps:
          - aggregate:
              correlation: "${{payload.order}}"
              value: "{value}"
              complete: {complete}
              call:
                endpoint: orders
                method: POST
                path: "/orders/${{vars.group.key}}/${{vars.group.completed_by}}"{settings}
          - respond: {{status: 202, json: {{group: "${{vars.group}}"}}}}
    """


def _completed(reason: str, flow: str = "lines") -> float:
    return metrics.REGISTRY.get_sample_value("interlace_aggregated_groups_total",
                                             {"flow": flow, "step": f"{flow}/steps[0]", "completed_by": reason}) or 0.0


def _sent(backend: BackendServer) -> list[tuple[str, object]]:
    return [(r.path, json.loads(r.body)) for r in backend.requests]


async def test_a_group_completes_by_size_and_every_caller_is_answered_at_once(tmp_path: Path,
                                                                           orders: BackendServer) -> None:
    write_flows(tmp_path, _flows(orders, "{size: 3}"))
    by_size, stopped = _completed("size"), _completed("stopped")
    async with facade_client(tmp_path) as client:
        answers = [await client.post("/lines", json={"order": order, "line": n})
                   for n, order in enumerate(["o-1", "o-2", "o-1", "o-1"])]
        await arrived(orders, 1)
        assert _sent(orders) == [("/orders/o-1/size", [0, 2, 3])]
    assert [a.status_code for a in answers] == [202] * 4
    assert answers[0].json() == {"group": {"key": "o-1", "size": 1, "completed_by": None}}
    assert answers[3].json() == {"group": {"key": "o-1", "size": 3, "completed_by": "size"}}
    # o-2 was still open when the flows stopped: memory would lose it, so it was sent as it stood
    assert _sent(orders)[1:] == [("/orders/o-2/stopped", [1])]
    assert _completed("size") == by_size + 1 and _completed("stopped") == stopped + 1


async def test_a_group_completes_by_timeout_since_its_first_message(tmp_path: Path, orders: BackendServer) -> None:
    write_flows(tmp_path, _flows(orders, "{timeout: 300ms}"))
    async with facade_client(tmp_path) as client:
        await client.post("/lines", json={"order": "o-1", "line": "a"})
        await client.post("/lines", json={"order": "o-1", "line": "b"})
        assert orders.requests == []
        await arrived(orders, 1)
    assert _sent(orders) == [("/orders/o-1/timeout", ["a", "b"])]


async def test_idle_completes_a_group_once_no_message_came_for_a_while(tmp_path: Path,
                                                                     orders: BackendServer) -> None:
    write_flows(tmp_path, _flows(orders, "{idle: 400ms}"))
    async with facade_client(tmp_path) as client:
        for line in range(4):  # every 200 ms: never idle for 400 ms while they come
            await client.post("/lines", json={"order": "o-1", "line": line})
            await asyncio.sleep(0.2)
        assert orders.requests == []
        await arrived(orders, 1)
    assert _sent(orders) == [("/orders/o-1/idle", [0, 1, 2, 3])]


async def test_a_predicate_completes_a_group_and_reduce_shapes_what_is_sent(tmp_path: Path,
                                                                         orders: BackendServer) -> None:
    write_flows(tmp_path, _flows(orders, '{when: "${payload[-1].last}"}', value="${payload}", extra=
                                 "reduce: \"{lines: length(payload), total: sum(payload[*].amount)}\""))
    async with facade_client(tmp_path) as client:
        await client.post("/lines", json={"order": "o-7", "amount": 5, "last": False})
        await client.post("/lines", json={"order": "o-7", "amount": 7, "last": True})
        await arrived(orders, 1)
    assert _sent(orders) == [("/orders/o-7/predicate", {"lines": 2, "total": 12})]


async def test_max_size_completes_a_group_early(tmp_path: Path, orders: BackendServer) -> None:
    write_flows(tmp_path, _flows(orders, "{timeout: 1h}", "max_size: 2"))
    async with facade_client(tmp_path) as client:
        for line in range(3):
            await client.post("/lines", json={"order": "o-1", "line": line})
        await arrived(orders, 1)
        assert _sent(orders) == [("/orders/o-1/max_size", [0, 1])]
    assert _sent(orders)[1:] == [("/orders/o-1/stopped", [2])]


async def test_past_max_groups_the_oldest_group_is_completed_first(tmp_path: Path, orders: BackendServer) -> None:
    write_flows(tmp_path, _flows(orders, "{size: 10}", "max_groups: 2"))
    async with facade_client(tmp_path) as client:
        for order in ("o-1", "o-2", "o-1", "o-3"):
            assert (await client.post("/lines", json={"order": order, "line": order})).status_code == 202
        await arrived(orders, 1)
        assert _sent(orders) == [("/orders/o-1/max_groups", ["o-1", "o-1"])]


async def test_past_max_groups_with_on_full_refuse_a_new_group_gets_503_problem_json(
        tmp_path: Path, orders: BackendServer) -> None:
    write_flows(tmp_path, _flows(orders, "{size: 10}", "max_groups: 1\non_full: refuse"))
    refused = metrics.REGISTRY.get_sample_value("interlace_aggregated_messages_total", {
        "flow": "lines", "step": "lines/steps[0]", "outcome": "refused"}) or 0.0
    async with facade_client(tmp_path) as client:
        first = await client.post("/lines", json={"order": "o-1", "line": 1})
        second = await client.post("/lines", json={"order": "o-2", "line": 2})
        same = await client.post("/lines", json={"order": "o-1", "line": 3})
    assert first.status_code == 202 and same.status_code == 202
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert second.headers["content-type"].startswith("application/problem+json")
    assert second.json()["type"].endswith("/aggregator-full") and "max_groups of 1" in second.json()["detail"]
    assert _sent(orders) == [("/orders/o-1/stopped", [1, 3])]
    assert metrics.REGISTRY.get_sample_value("interlace_aggregated_messages_total", {
        "flow": "lines", "step": "lines/steps[0]", "outcome": "refused"}) == refused + 1


async def test_a_completed_group_goes_to_a_sequence(tmp_path: Path, orders: BackendServer) -> None:
    write_flows(tmp_path, f"""
    endpoints:
      orders: {{http: {{url: "{orders.url}"}}}}
    sequences:
      settle:
        - set: {{header: x-group-size, value: "${{vars.group.size}}"}}
        - call: {{endpoint: orders, method: PUT, path: "/settle/${{vars.group.key}}"}}
    flows:
      lines:
        source: {{http: {{method: POST, path: /lines}}}}
        steps:
          - aggregate: {{correlation: '${{headers."x-batch"}}', complete: {{size: 2}}, sequence: settle}}
          - respond: {{status: 202}}
    """)
    async with facade_client(tmp_path) as client:
        for n in range(2):
            await client.post("/lines", json={"n": n}, headers={"x-batch": "b-1"})
        await arrived(orders, 1)
    assert _sent(orders) == [("/settle/b-1", [{"n": 0}, {"n": 1}])]
    assert orders.requests[0].headers["x-group-size"] == "2"


def _durable_flows(orders: BackendServer, url: str, kind: str = "sql") -> str:
    return f"""
    endpoints:
      orders: {{http: {{url: "{orders.url}"}}}}
      groups: {{{kind}: {{url: "{url}"}}}}
    flows:
      by-size:
        source: {{http: {{method: POST, path: /lines}}}}
        steps:
          - aggregate:
              correlation: "${{payload.order}}"
              value: "${{payload.line}}"
              complete: {{size: 3}}
              store: groups
              call: {{endpoint: orders, method: POST, path: "/orders/${{vars.group.key}}/${{vars.group.completed_by}}"}}
          - respond: {{status: 202}}
      by-time:
        source: {{http: {{method: POST, path: /late}}}}
        steps:
          - aggregate:
              correlation: "${{payload.order}}"
              value: "${{payload.line}}"
              complete: {{timeout: 1s}}
              store: groups
              call: {{endpoint: orders, method: POST, path: "/late/${{vars.group.key}}/${{vars.group.completed_by}}"}}
          - respond: {{status: 202}}
    """


def _survive_a_kill(tmp_path: Path, orders: BackendServer, flows: str) -> None:
    """Groups open when their engine is SIGKILLed (no drain, no completion on stop: only the
    store has them) are completed by the next engine on the same store: by time as soon as it
    starts, by size with their next message."""
    write_flows(tmp_path, flows)
    with run_engine(tmp_path) as engine:
        assert httpx.post(f"{engine.url}/late", json={"order": "o-2", "line": "x"}, timeout=10).status_code == 202
        for n in range(2):
            assert httpx.post(f"{engine.url}/lines", json={"order": "o-1", "line": n}, timeout=10).status_code == 202
        os.killpg(engine.process.pid, signal.SIGKILL)
        engine.process.wait(10)
    assert orders.requests == []
    with run_engine(tmp_path) as engine:
        # o-2, older than its timeout, is completed by the new engine without any new message
        wait_for(lambda: len(orders.requests) == 1, "the timed-out group sent by the new engine")
        assert httpx.post(f"{engine.url}/lines", json={"order": "o-1", "line": 2}, timeout=10).status_code == 202
        wait_for(lambda: len(orders.requests) == 2, "the group completed by its third message")
        assert engine.terminate() == 0
    assert _sent(orders) == [("/late/o-2/timeout", ["x"]), ("/orders/o-1/size", [0, 1, 2])]


def test_groups_in_sqlite_survive_the_engine_being_killed(tmp_path: Path, orders: BackendServer) -> None:
    _survive_a_kill(tmp_path, orders, _durable_flows(orders, f"sqlite:///{tmp_path}/groups.db"))


def test_groups_in_postgresql_survive_the_engine_being_killed(tmp_path: Path, orders: BackendServer) -> None:
    with PostgresServer() as postgres:
        _survive_a_kill(tmp_path, orders, _durable_flows(orders, postgres.url))


def test_two_engines_on_one_postgresql_gather_into_the_same_groups(tmp_path: Path, orders: BackendServer) -> None:
    with PostgresServer() as postgres:
        postgres.psql("CREATE DATABASE groups")
        url = postgres.url.rsplit("/", 1)[0] + "/groups"
        one = write_flows(tmp_path / "one", _durable_flows(orders, url))
        two = write_flows(tmp_path / "two", _durable_flows(orders, url))
        with run_engine(one) as first, run_engine(two) as second:
            for n, engine in enumerate([first, second, first]):
                assert httpx.post(f"{engine.url}/lines", json={"order": "o-1", "line": n},
                                  timeout=10).status_code == 202
            wait_for(lambda: len(orders.requests) == 1, "the group completed on the second engine")
        rows = postgres.psql_in("groups", "SELECT count(*) FROM interlace_aggregation")
    assert _sent(orders) == [("/orders/o-1/size", [0, 1, 2])]
    assert rows == "0"  # taken out of the table when it completed


def _sql_store(url: str) -> str:
    return f'\n      groups: {{sql: {{url: "{url}"}}}}'


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_groups_in_sql_complete_by_size_and_by_predicate(tmp_path: Path, orders: BackendServer,
                                                               database: str) -> None:
    """The size comes from the group's row, the values are read back only for the predicate."""
    with contextlib.ExitStack() as stack:
        url = (f"sqlite:///{tmp_path}/groups.db" if database == "sqlite"
               else stack.enter_context(PostgresServer()).url)
        write_flows(tmp_path, _flows(orders, "{size: 3, when: \"${payload[-1] == 'end'}\"}", "store: groups",
                                     store=_sql_store(url)))
        async with facade_client(tmp_path) as client:
            answers = [await client.post("/lines", json={"order": "o-1", "line": line})
                       for line in ["a", "end", "b", "c", "d", "e"]]
            await arrived(orders, 2)
    assert [a.json()["group"]["size"] for a in answers] == [1, 2, 1, 2, 3, 1]
    assert [a.json()["group"]["completed_by"] for a in answers] == [None, "predicate", None, None, "size", None]
    assert _sent(orders) == [("/orders/o-1/predicate", ["a", "end"]), ("/orders/o-1/size", ["b", "c", "d"])]


async def test_a_sqlite_table_from_before_the_groups_rows_keeps_its_open_groups(tmp_path: Path,
                                                                                orders: BackendServer) -> None:
    """interlace_aggregation as the version before left it (a row per value, no row per group):
    the engine starting on it counts the group it holds, and its next message completes it."""
    with sqlite3.connect(tmp_path / "groups.db") as db:
        db.execute("CREATE TABLE interlace_aggregation (id INTEGER PRIMARY KEY AUTOINCREMENT, step TEXT NOT NULL, "
                   "key TEXT NOT NULL, value BLOB NOT NULL, arrived REAL NOT NULL)")
        db.executemany("INSERT INTO interlace_aggregation (step, key, value, arrived) VALUES (?, ?, ?, ?)",
                       [("lines/steps[0]", "o-1", b'"a"', 1.0), ("lines/steps[0]", "o-1", b'"b"', 2.0)])
    write_flows(tmp_path, _flows(orders, "{size: 3}", "store: groups",
                                 store=_sql_store(f"sqlite:///{tmp_path}/groups.db")))
    async with facade_client(tmp_path) as client:
        answer = await client.post("/lines", json={"order": "o-1", "line": "c"})
        await arrived(orders, 1)
    assert answer.json() == {"group": {"key": "o-1", "size": 3, "completed_by": "size"}}
    assert _sent(orders) == [("/orders/o-1/size", ["a", "b", "c"])]


def _race_two_engines(tmp_path: Path, orders: BackendServer, flows: str,
                      drained: Callable[[], bool] = lambda: True) -> None:
    """Each group's lines posted at once to two engines sharing a store: each line is sent in
    exactly one group, and a group sent for its size holds at least that many (a part of a group
    taken by the other engine would be sent as a group of its own, too small)."""
    flows = flows.replace("complete: {size: 3}", "complete: {size: 3, timeout: 2s}")
    one = write_flows(tmp_path / "one", flows)
    two = write_flows(tmp_path / "two", flows)
    lines = [(f"o-{group}", n) for group in range(12) for n in range(8)]  # a group's lines at once
    with run_engine(one) as first, run_engine(two) as second:
        engines = [first.url, second.url]

        def post(index: int) -> int:
            order, n = lines[index]
            return httpx.post(f"{engines[index % 2]}/lines", json={"order": order, "line": n},
                              timeout=20).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            assert set(pool.map(post, range(len(lines)))) == {202}
        wait_for(lambda: sum(len(values) for _path, values in _sent(orders)) >= len(lines),
                 "every line sent in a group", timeout=20)
        wait_for(drained, "every group taken out of the store")
    sent = _sent(orders)
    by_size = [values for path, values in sent if str(path).endswith("/size")]
    assert by_size and all(len(values) >= 3 for values in by_size), sent  # type: ignore[arg-type]
    gathered = sorted((str(path).split("/")[2], n) for path, values in sent for n in values)  # type: ignore[attr-defined]
    assert gathered == sorted(lines)  # each line once: none lost, none sent twice


def test_two_engines_racing_on_one_postgresql_never_send_a_group_in_parts(tmp_path: Path,
                                                                           orders: BackendServer) -> None:
    with PostgresServer() as postgres:
        postgres.psql("CREATE DATABASE groups")
        _race_two_engines(tmp_path, orders, _durable_flows(orders, postgres.url.rsplit("/", 1)[0] + "/groups"))


def test_two_engines_racing_on_one_sqlite_file_never_send_a_group_in_parts(tmp_path: Path,
                                                                            orders: BackendServer) -> None:
    """Each add and take is a BEGIN IMMEDIATE transaction: the engines' writes follow one another."""
    _race_two_engines(tmp_path, orders, _durable_flows(orders, f"sqlite:///{tmp_path}/groups.db"))


@pytest.mark.parametrize(("step", "message", "where"), [
    ('{correlation: "${payload.id}", complete: {}, call: {endpoint: orders}}', "a group needs a way to complete",
     "5:61"),
    ('{correlation: "${payload.id}", complete: {size: 2}}', "give call (an endpoint) or sequence", "5:20"),
    ('{correlation: "${payload.id}", complete: {size: 2}, call: {endpoint: nowhere}}', "unknown endpoint 'nowhere'",
     "5:89"),
    ('{correlation: "${payload.id}", complete: {timeout: 0s}, call: {endpoint: orders}}',
     "a duration greater than zero", "5:71"),
    ('{correlation: "${payload.id", complete: {size: 2}, call: {endpoint: orders}}', "unclosed ${", "5:34"),
    ('{correlation: "${payload.id}", complete: {size: 2}, call: {endpoint: orders}, store: orders}',
     "cannot keep aggregation groups; declare a sql endpoint (endpoints: orders: sql: {url: sqlite:///groups.db}), "
     "a redis one", "5:105"),
    ('{correlation: "${payload.id}", complete: {size: 0}, call: {endpoint: orders}}',
     "less than the minimum of 1 in complete.size", "5:68"),
    ('{correlation: "${payload.id}", complete: {size: 2}, call: {endpoint: orders}, on_full: drop}',
     "expected one of complete_oldest, refuse in on_full", "5:107"),
])
def test_a_wrong_aggregate_is_a_load_error_at_its_place(tmp_path: Path, step: str, message: str, where: str) -> None:
    assert_step_load_error(tmp_path, "aggregate", step, message, where, """
    endpoints:
      orders: {http: {url: "http://127.0.0.1:9"}}
    """)



# -- the redis repository --

def _redis_store(redis: RedisServer) -> str:
    return f'\n      groups: {{redis: {{url: "{redis.url}", key_prefix: "agg-test:"}}}}'


def _held_keys(redis: RedisServer, prefix: str = "agg-test:") -> list[str]:
    """The keys the aggregate steps hold in Redis (their message counters aside)."""
    reply = redis.command("KEYS", prefix + "*").decode()
    return sorted(line for line in reply.split("\r\n") if line.startswith(prefix) and not line.endswith(":seq"))


@pytest.mark.parametrize(("complete", "lines", "pause", "sent"), [
    ("{size: 3}", [0, 1, 2, 3], 0.0, [("/orders/o-1/size", [0, 1, 2])]),
    ("{timeout: 300ms}", ["a", "b"], 0.0, [("/orders/o-1/timeout", ["a", "b"])]),
    ("{idle: 400ms}", [0, 1, 2], 0.2, [("/orders/o-1/idle", [0, 1, 2])]),
    ("{when: \"${payload[-1] == 'end'}\"}", ["a", "end", "b"], 0.0, [("/orders/o-1/predicate", ["a", "end"])]),
])
async def test_groups_in_redis_complete_as_in_memory(tmp_path: Path, orders: BackendServer, redis: RedisServer,
                                                     complete: str, lines: list[object], pause: float,
                                                     sent: list[tuple[str, object]]) -> None:
    write_flows(tmp_path, _flows(orders, complete, "store: groups", store=_redis_store(redis)))
    async with facade_client(tmp_path) as client:
        answers = []
        for line in lines:
            answers.append(await client.post("/lines", json={"order": "o-1", "line": line}))
            await asyncio.sleep(pause)
        await arrived(orders, 1)
        await asyncio.sleep(0.3)  # nothing more is sent: the message after the group opened a new one
    assert [a.status_code for a in answers] == [202] * len(lines)
    assert answers[0].json() == {"group": {"key": "o-1", "size": 1, "completed_by": None}}
    assert _sent(orders) == sent
    left = len(lines) - len(sent[0][1])  # type: ignore[arg-type]
    # a group left open is kept for the next engine, not sent on stop; a completed one is gone from Redis
    step = "agg-test:aggregate:{lines/steps[0]}:"
    assert _held_keys(redis) == ([f"{step}first", f"{step}g:o-1", f"{step}last", f"{step}m:o-1", f"{step}open"]
                                 if left else [])


async def test_an_add_to_a_group_in_redis_reads_no_value_back(tmp_path: Path, orders: BackendServer,
                                                              redis: RedisServer) -> None:
    """A group completed by size: Redis answers each add with the group's length, and the values
    are read once, when the group is taken (with a predicate they would be read on every add)."""
    write_flows(tmp_path, _flows(orders, "{size: 20}", "store: groups", store=_redis_store(redis)))
    async with facade_client(tmp_path) as client:
        await client.post("/lines", json={"order": "warm-up", "line": 0})  # scripts loaded
        assert redis.command("CONFIG", "RESETSTAT").startswith(b"+OK")
        answers = [await client.post("/lines", json={"order": "o-1", "line": n}) for n in range(20)]
        await arrived(orders, 1)
        stats = redis.command("INFO", "commandstats").decode()
    assert [a.json()["group"]["size"] for a in answers] == list(range(1, 21))
    assert _sent(orders) == [("/orders/o-1/size", list(range(20)))]
    assert "cmdstat_rpush:calls=20," in stats and "cmdstat_lrange:calls=1," in stats, stats


async def test_groups_in_redis_keep_max_size_and_max_groups(tmp_path: Path, orders: BackendServer,
                                                            redis: RedisServer) -> None:
    write_flows(tmp_path, _flows(orders, "{size: 10}", "store: groups\nmax_size: 2\nmax_groups: 2",
                                 store=_redis_store(redis)))
    async with facade_client(tmp_path) as client:
        for order, line in [("o-1", 0), ("o-1", 1), ("o-2", 2), ("o-3", 3), ("o-4", 4), ("o-5", 5)]:
            assert (await client.post("/lines", json={"order": order, "line": line})).status_code == 202
        await arrived(orders, 3)
    # each group goes out from a task of its own, after its take from Redis: o-2's and o-3's sends
    # may reach the backend in either order (the eviction order is what the paths say)
    assert sorted(_sent(orders)) == [("/orders/o-1/max_size", [0, 1]), ("/orders/o-2/max_groups", [2]),
                                     ("/orders/o-3/max_groups", [3])]


async def test_groups_in_redis_past_max_groups_with_on_full_refuse_get_503(tmp_path: Path, orders: BackendServer,
                                                                           redis: RedisServer) -> None:
    write_flows(tmp_path, _flows(orders, "{size: 2}", "store: groups\nmax_groups: 1\non_full: refuse",
                                 store=_redis_store(redis)))
    async with facade_client(tmp_path) as client:
        first = await client.post("/lines", json={"order": "o-1", "line": 1})
        second = await client.post("/lines", json={"order": "o-2", "line": 2})
        same = await client.post("/lines", json={"order": "o-1", "line": 3})
        await arrived(orders, 1)
    assert (first.status_code, second.status_code, same.status_code) == (202, 503, 202)
    assert second.headers["content-type"].startswith("application/problem+json")
    assert second.json()["type"].endswith("/aggregator-full")
    assert _sent(orders) == [("/orders/o-1/size", [1, 3])]


async def test_a_redis_store_that_is_down_answers_503_problem_json(tmp_path: Path, orders: BackendServer) -> None:
    down = f'\n      groups: {{redis: {{url: "redis://127.0.0.1:{free_port()}/0", timeout: 200ms}}}}'
    write_flows(tmp_path, _flows(orders, "{size: 2}", "store: groups", store=down))
    async with facade_client(tmp_path) as client:
        answer = await client.post("/lines", json={"order": "o-1", "line": 1})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "aggregation store cannot be reached" in answer.json()["detail"]
    assert "127.0.0.1" not in answer.text
    assert orders.requests == []


def test_groups_in_redis_survive_the_engine_being_killed(tmp_path: Path, orders: BackendServer,
                                                         redis: RedisServer) -> None:
    _survive_a_kill(tmp_path, orders, _durable_flows(orders, redis.url, kind="redis"))


def test_two_engines_racing_on_one_redis_never_send_a_group_in_parts(tmp_path: Path, orders: BackendServer,
                                                                     redis: RedisServer) -> None:
    _race_two_engines(tmp_path, orders, _durable_flows(orders, redis.url, kind="redis"),
                      lambda: not _held_keys(redis, "interlace:"))


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_message_without_a_correlation_key_is_a_422_problem(tmp_path: Path, orders: BackendServer,
                                                                    redis: RedisServer, kind: str) -> None:
    """A message whose correlation template gives nothing (the field is missing) is refused: it
    joined one group "None" with every other keyless message (and with the order really named
    "None"), and that group was sent as if it were an order."""
    durable = kind == "redis"
    write_flows(tmp_path, _flows(orders, "{size: 2}", "store: groups" if durable else "",
                                 store=_redis_store(redis) if durable else ""))
    async with facade_client(tmp_path) as client:
        keyless = [await client.post("/lines", json={"line": line}) for line in (1, 2)]
        named = [await client.post("/lines", json={"order": "None", "line": line}) for line in (3, 4)]
        await arrived(orders, 1)
    assert [a.status_code for a in keyless] == [422, 422]
    assert keyless[0].headers["content-type"].startswith("application/problem+json")
    assert keyless[0].json()["type"].endswith("/no-correlation-key")
    assert [a.status_code for a in named] == [202, 202]
    assert _sent(orders) == [("/orders/None/size", [3, 4])]


async def test_a_redis_store_failing_as_a_group_completes_loses_and_duplicates_nothing(
        tmp_path: Path, orders: BackendServer, redis: RedisServer) -> None:
    """Redis takes the message into its group, then fails taking the completed group (here its
    ACL refuses DEL, as a store going away between the two would): the caller's message is kept,
    so it is answered 202, not 500 (a retry would have added it twice), and the group completes
    with the next message once Redis answers again."""
    assert redis.command("ACL", "SETUSER", "no-del", "on", ">pw", "~*", "+@all", "-del").startswith(b"+OK")
    store = f'\n      groups: {{redis: {{url: "redis://no-del:pw@127.0.0.1:{redis.port}/0", key_prefix: "agg-acl:"}}}}'
    write_flows(tmp_path, _flows(orders, "{size: 2}", "store: groups", store=store))
    try:
        async with facade_client(tmp_path) as client:
            first = await client.post("/lines", json={"order": "o-1", "line": 1})
            second = await client.post("/lines", json={"order": "o-1", "line": 2})
            assert redis.command("ACL", "SETUSER", "no-del", "+del").startswith(b"+OK")
            third = await client.post("/lines", json={"order": "o-1", "line": 3})
            await arrived(orders, 1)
    finally:
        redis.command("ACL", "DELUSER", "no-del")
    assert (first.status_code, second.status_code, third.status_code) == (202, 202, 202)
    assert second.json() == {"group": {"key": "o-1", "size": 2, "completed_by": None}}
    assert third.json() == {"group": {"key": "o-1", "size": 3, "completed_by": "size"}}
    assert _sent(orders) == [("/orders/o-1/size", [1, 2, 3])]


@pytest.mark.parametrize("database", ["memory", "sqlite", "postgresql"])
async def test_a_correlation_key_no_store_can_hold_is_a_422_problem(tmp_path: Path, orders: BackendServer,
                                                                    database: str) -> None:
    # PostgreSQL refused a key holding U+0000 or past its index row's ~2.7 kB, and the caller got
    # 503 "the aggregation store cannot be reached", with Retry-After: retried, refused again, forever
    with contextlib.ExitStack() as stack:
        store = ""
        if database != "memory":
            url = (f"sqlite:///{tmp_path}/groups.db" if database == "sqlite"
                   else stack.enter_context(PostgresServer()).url)
            store = _sql_store(url)
        write_flows(tmp_path, _flows(orders, "{size: 2}", "store: groups" if store else "", store=store))
        async with facade_client(tmp_path) as client:
            refused = [await client.post("/lines", json={"order": order, "line": 1})
                       for order in ("a\u0000b", "k" * 3000, "é" * 513)]
            longest = [await client.post("/lines", json={"order": "é" * 512, "line": line}) for line in (1, 2)]
            await arrived(orders, 1)
    for answer in refused:
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"].endswith("/bad-correlation-key")
        assert "at most 1024 bytes of UTF-8 without U+0000" in answer.json()["detail"]
    assert [a.status_code for a in longest] == [202, 202]  # 1024 bytes: held
    assert [path for path, _ in _sent(orders)] == [f"/orders/{'%C3%A9' * 512}/size"]
