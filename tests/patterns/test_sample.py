"""sample: the nested steps run for one message per period or one in every N, the others answer
all the same; in memory and across two engines on one real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backends import BackendServer, closed_port
from tests.support.engine import assert_step_load_error, facade_client, write_flows
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def analytics() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


def _flows(analytics: BackendServer, settings: str, store_url: str | None = None) -> str:
    store = f"\n      shared: {{redis: {{url: \"{store_url}\"}}}}" if store_url else ""
    return f"""
    endpoints:
      analytics: {{http: {{url: "{analytics.url}"}}}}{store}
    flows:
      sampled:
        source: {{http: {{method: GET, path: "/items/{{id}}"}}}}
        steps:
          - sample:
              {settings}
              steps:
                - call: {{endpoint: analytics, method: POST, path: "/samples/${{path.id}}", into: seen}}
                - set: {{header: x-sampled, value: "yes"}}
          - respond: {{json: {{id: "${{path.id}}"}}}}
    """


async def _get(client: object, count: int, **headers: str) -> list[str]:
    answers = [await client.get(f"/items/{n}", headers=headers) for n in range(count)]  # type: ignore[attr-defined]
    assert all(a.status_code == 200 for a in answers)
    return [a.headers.get("x-sampled", "no") for a in answers]


async def test_one_message_per_period_runs_the_steps_the_others_answer_all_the_same(
        tmp_path: Path, analytics: BackendServer) -> None:
    write_flows(tmp_path, _flows(analytics, 'per: 1h\n              key: ${headers."x-client-id"}'))
    async with facade_client(tmp_path) as client:
        first = await _get(client, 3, **{"x-client-id": "a"})
        other = await _get(client, 2, **{"x-client-id": "b"})
    assert first == ["yes", "no", "no"] and other == ["yes", "no"]
    assert [r.path for r in analytics.requests] == ["/samples/0", "/samples/0"]


async def test_one_in_every_n(tmp_path: Path, analytics: BackendServer) -> None:
    write_flows(tmp_path, _flows(analytics, "every: 3"))
    async with facade_client(tmp_path) as client:
        picked = await _get(client, 7)
    assert picked == ["yes", "no", "no", "yes", "no", "no", "yes"]
    assert [r.path for r in analytics.requests] == ["/samples/0", "/samples/3", "/samples/6"]


async def test_two_engines_on_one_redis_take_one_sample_between_them(tmp_path: Path, analytics: BackendServer,
                                                                     redis: RedisServer) -> None:
    flows = _flows(analytics, "per: 1h\n              store: shared", redis.url)
    write_flows(tmp_path / "one", flows)
    write_flows(tmp_path / "two", flows)
    async with facade_client(tmp_path / "one") as one, facade_client(tmp_path / "two") as two:
        picked = await _get(one, 2) + await _get(two, 2)
    assert picked == ["yes", "no", "no", "no"] and len(analytics.requests) == 1


async def test_a_store_that_cannot_be_reached_samples_nothing_and_fails_nothing(
        tmp_path: Path, analytics: BackendServer) -> None:
    write_flows(tmp_path, _flows(analytics, "per: 1s\n              store: shared",
                                 f"redis://127.0.0.1:{closed_port()}/0"))
    async with facade_client(tmp_path) as client:
        picked = await _get(client, 2)
    assert picked == ["no", "no"] and analytics.requests == []


@pytest.mark.parametrize(("step", "message", "where"), [
    ("{steps: [{log: x}]}", "give per or every", "5:17"),
    ("{per: 1s, every: 5, steps: [{log: x}]}", "give per or every", "5:34"),
    ("{every: 5, key: '${query.k}', steps: [{log: x}]}", "key goes with per", "5:33"),
    ("{every: 1, steps: [{log: x}]}", "less than the minimum of 2", "5:25"),
    ("{per: 0s, steps: [{log: x}]}", "greater than zero", "5:23"),
])
def test_a_wrong_sample_is_a_load_error_at_its_place(tmp_path: Path, step: str, message: str, where: str) -> None:
    assert_step_load_error(tmp_path, "sample", step, message, where)
