"""load_balance: one of a declared set of endpoints per message, with failover, against real
backends on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import metrics
from tests.support.backends import BackendServer
from tests.support.engine import assert_step_load_error, facade_client, write_flows

pytestmark = pytest.mark.anyio

NAMES = ("a", "b", "c")


@pytest.fixture
def backends() -> Iterator[dict[str, BackendServer]]:
    with BackendServer() as a, BackendServer() as b, BackendServer() as c:
        yield {"a": a, "b": b, "c": c}


def _flows(backends: dict[str, BackendServer], *settings: str, endpoint_settings: str = "") -> str:
    """The flow: GET /items/{id} through a load_balance with ``settings`` (one key: value each)."""
    lines = "\n              ".join(settings)
    declared = "".join(f'      {name}: {{http: {{url: "{server.url}"{endpoint_settings}}}}}\n'
                       for name, server in backends.items())
    return f"""
    endpoints:
{declared}
    flows:
      spread:
        source: {{http: {{method: GET, path: "/items/{{id}}"}}}}
        steps:
          - load_balance:
              {lines}
              call: {{method: GET, path: "/items/${{path.id}}"}}
          - set: {{header: x-served-by, value: "${{vars.load_balanced}}"}}
    """


def _served(answers: list[object]) -> list[str]:
    return [a.headers["x-served-by"] for a in answers]  # type: ignore[attr-defined]


def _count(endpoint: str, outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("interlace_load_balanced_calls_total", {
        "flow": "spread", "step": "spread/steps[0]", "endpoint": endpoint, "outcome": outcome}) or 0.0


async def test_round_robin_takes_each_in_turn_and_says_which_answered(
        tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    write_flows(tmp_path, _flows(backends, "endpoints: [a, b, c]"))
    answered = {name: _count(name, "answered") for name in NAMES}
    async with facade_client(tmp_path) as client:
        answers = [await client.get(f"/items/{n}") for n in range(6)]
    assert [a.status_code for a in answers] == [200] * 6
    assert _served(answers) == ["a", "b", "c", "a", "b", "c"]
    assert [r.path for r in backends["a"].requests] == ["/items/0", "/items/3"]
    assert {name: _count(name, "answered") - answered[name] for name in NAMES} == {"a": 2, "b": 2, "c": 2}


async def test_an_endpoint_that_cannot_be_reached_fails_over_to_the_next(
        tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    backends["b"].stop()
    write_flows(tmp_path, _flows(backends, "endpoints: [a, b, c]"))
    failed_over = _count("b", "failed_over")
    async with facade_client(tmp_path) as client:
        answers = [await client.get(f"/items/{n}") for n in range(6)]
    assert [a.status_code for a in answers] == [200] * 6
    assert _served(answers) == ["a", "c", "c", "a", "c", "c"]
    assert _count("b", "failed_over") == failed_over + 2


async def test_a_listed_status_fails_over_and_an_unlisted_one_is_the_flows_error(
        tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    backends["a"].set_behaviour(status=503)
    write_flows(tmp_path / "listed", _flows(backends, "endpoints: [a, b]", "failover_on: [503]"))
    write_flows(tmp_path / "unlisted", _flows(backends, "endpoints: [a, b]"))
    async with facade_client(tmp_path / "listed") as client:
        listed = [await client.get(f"/items/{n}") for n in range(2)]
    async with facade_client(tmp_path / "unlisted") as client:
        unlisted = await client.get("/items/9")
    assert [a.status_code for a in listed] == [200, 200] and _served(listed) == ["b", "b"]
    assert unlisted.status_code == 502
    assert unlisted.headers["content-type"] == "application/problem+json"
    assert unlisted.json()["type"].endswith("/backend-status")


async def test_when_every_endpoint_is_down_the_caller_gets_a_problem_not_a_500(
        tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    for server in backends.values():
        server.stop()
    write_flows(tmp_path, _flows(backends, "endpoints: [a, b, c]"))
    async with facade_client(tmp_path) as client:
        answer = await client.get("/items/1")
    assert answer.status_code == 502
    assert answer.json()["type"].endswith("/backend-unreachable")


async def test_every_endpoint_answering_a_failover_status_gives_the_last_answer(
        tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    for server in backends.values():
        server.set_behaviour(status=503)
    write_flows(tmp_path, _flows(backends, "endpoints: [a, b, c]", "failover_on: [503]").replace(
        'path: "/items/${path.id}"}', 'path: "/items/${path.id}", expect_status: [200, 503]}'))
    async with facade_client(tmp_path) as client:
        answer = await client.get("/items/1")
    assert answer.status_code == 503 and answer.headers["x-served-by"] == "c"
    assert [len(server.requests) for server in backends.values()] == [1, 1, 1]


async def test_an_open_breaker_is_passed_over_without_calling_its_endpoint(
        tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    backends["a"].stop()
    write_flows(tmp_path, _flows(backends, "endpoints: [a, b]",
                                 endpoint_settings=", breaker: {failures: 1, reset: 1h}"))
    async with facade_client(tmp_path) as client:
        answers = [await client.get(f"/items/{n}") for n in range(4)]
        backends["a"].start()
        after = [await client.get(f"/items/{n}") for n in range(4)]
    assert _served(answers) == ["b"] * 4
    # a's breaker opened on its first failure: a, back up, is still not called for its reset time
    assert _served(after) == ["b"] * 4 and backends["a"].requests == []


async def test_weighted_spreads_by_weight_in_turn(tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    write_flows(tmp_path, _flows(backends, "strategy: weighted", "endpoints: [{name: a, weight: 3}, b]"))
    async with facade_client(tmp_path) as client:
        answers = [await client.get(f"/items/{n}") for n in range(8)]
    assert _served(answers) == ["a", "a", "b", "a"] * 2


async def test_random_spreads_over_every_endpoint(tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    write_flows(tmp_path, _flows(backends, "strategy: random", "endpoints: [a, b, c]"))
    async with facade_client(tmp_path) as client:
        answers = [await client.get(f"/items/{n}") for n in range(60)]
    seen = Counter(_served(answers))
    assert set(seen) == set(NAMES) and sum(seen.values()) == 60


async def test_sticky_keeps_a_key_on_its_endpoint_and_fails_over_while_it_is_down(
        tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    write_flows(tmp_path, _flows(backends, "strategy: sticky", "key: '${headers.\"x-session\"}'",
                                "endpoints: [a, b, c]"))
    sessions = [f"s-{n}" for n in range(30)]
    async with facade_client(tmp_path) as client:
        first = {s: (await client.get("/items/1", headers={"x-session": s})).headers["x-served-by"] for s in sessions}
        again = {s: (await client.get("/items/2", headers={"x-session": s})).headers["x-served-by"] for s in sessions}
        backends["a"].stop()
        while_down = {s: (await client.get("/items/3", headers={"x-session": s})).headers["x-served-by"]
                      for s in sessions}
        backends["a"].start()
        back = {s: (await client.get("/items/4", headers={"x-session": s})).headers["x-served-by"] for s in sessions}
    assert first == again == back
    assert set(first.values()) == set(NAMES)  # the keys spread over all three
    on_a = [s for s in sessions if first[s] == "a"]
    assert all(while_down[s] != "a" for s in on_a)
    assert all(while_down[s] == first[s] for s in sessions if s not in on_a)  # the others did not move


@pytest.mark.parametrize(("step", "message", "where"), [
    ("{strategy: sticky, endpoints: [a, b]}", "strategy sticky picks the endpoint by a key", "5:34"),
    ("{key: '${query.k}', endpoints: [a, b]}", "key picks the endpoint only with strategy: sticky", "5:29"),
    ("{endpoints: [a, a]}", "endpoint 'a' is listed twice", "5:39"),
    ("{endpoints: [a, nowhere]}", "unknown endpoint 'nowhere'", "5:39"),
    ("{endpoints: [a], call: {endpoint: b}}", "leave endpoint out of call", "5:57"),
    ("{endpoints: [{name: a, weight: 2}, b]}", "set strategy: weighted", "5:23"),
    ("{endpoints: []}", "should be non-empty", "5:35"),
])
def test_a_wrong_load_balance_is_a_load_error_at_its_place(tmp_path: Path, step: str, message: str,
                                                           where: str) -> None:
    assert_step_load_error(tmp_path, "load_balance", step, message, where, """
    endpoints:
      a: {http: {url: "http://127.0.0.1:9"}}
      b: {http: {url: "http://127.0.0.1:9"}}
    """)


async def test_least_connections_passes_over_an_endpoint_still_busy_and_takes_idle_ones_in_turn(
        tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    write_flows(tmp_path, _flows(backends, "strategy: least_connections", "endpoints: [a, b, c]"))
    backends["a"].set_behaviour(delay=1.5)
    async with facade_client(tmp_path) as client:
        slow = asyncio.ensure_future(client.get("/items/slow"))
        await asyncio.to_thread(backends["a"].wait_for_requests, 1)  # a holds one call until it answers
        while_busy = [await client.get(f"/items/{n}") for n in range(4)]
        answered_slow = await slow
        backends["a"].set_behaviour()
        after = [await client.get(f"/items/{n}") for n in range(3)]
    assert answered_slow.headers["x-served-by"] == "a"
    assert _served(while_busy) == ["b", "c", "b", "c"]
    assert sorted(_served(after)) == ["a", "b", "c"]  # all idle again: each in turn


async def test_least_connections_counts_calls_per_weight(
        tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    write_flows(tmp_path, _flows(backends, "strategy: least_connections",
                                 "endpoints: [{name: a, weight: 2}, b]"))
    for server in backends.values():
        server.set_behaviour(delay=1.0)
    async with facade_client(tmp_path) as client:
        answers = await asyncio.gather(*(client.get(f"/items/{n}") for n in range(6)))
    # two calls on a weigh as one on b: of six at once, a takes four and b two
    assert Counter(_served(list(answers))) == {"a": 4, "b": 2}
