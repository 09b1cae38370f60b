"""load_balance strategy least_response_time, against real backends on 127.0.0.1 that answer at
different speeds: the fast one takes most calls, failures count as slow, and an endpoint that
becomes fast again is taken again."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backends import BackendServer, closed_port
from tests.support.engine import assert_step_load_error, facade_client, run_engine, write_flows

pytestmark = pytest.mark.anyio


@pytest.fixture
def backends() -> Iterator[dict[str, BackendServer]]:
    with BackendServer() as a, BackendServer() as b, BackendServer() as c:
        yield {"a": a, "b": b, "c": c}


def _flows(urls: dict[str, str], *settings: str) -> str:
    lines = "\n              ".join(("strategy: least_response_time", *settings))
    declared = "".join(f'      {name}: {{http: {{url: "{url}"}}}}\n' for name, url in urls.items())
    return f"""
    endpoints:
{declared}
    flows:
      spread:
        source: {{http: {{method: GET, path: "/items/{{id}}"}}}}
        steps:
          - load_balance:
              {lines}
              endpoints: [{", ".join(urls)}]
              call: {{method: GET, path: "/items/${{path.id}}"}}
          - set: {{header: x-served-by, value: "${{vars.load_balanced}}"}}
    """


def _urls(backends: dict[str, BackendServer]) -> dict[str, str]:
    return {name: server.url for name, server in backends.items()}


async def _served(client: object, count: int) -> list[str]:
    served = []
    for n in range(count):
        answer = await client.get(f"/items/{n}")  # type: ignore[attr-defined]
        assert answer.status_code == 200, answer.text
        served.append(answer.headers["x-served-by"])
    return served


async def test_the_fast_endpoint_takes_most_calls(tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    write_flows(tmp_path, _flows(_urls(backends), "probe_after: 1m"))
    backends["a"].set_behaviour(delay=0.6)
    backends["c"].set_behaviour(delay=0.3)
    async with facade_client(tmp_path) as client:
        served = await _served(client, 30)
    assert sorted(served[:3]) == ["a", "b", "c"]  # each is tried once first: none has a time yet
    assert served[3:] == ["b"] * 27, served


async def test_an_endpoint_that_becomes_fast_again_is_taken_again(
        tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    two = {"a": backends["a"].url, "b": backends["b"].url}
    write_flows(tmp_path, _flows(two, "decay: 1s", "probe_after: 1s"))
    backends["a"].set_behaviour(delay=0.4)
    async with facade_client(tmp_path) as client:
        before = await _served(client, 10)
        backends["a"].set_behaviour()
        backends["b"].set_behaviour(delay=0.4)
        after = await _served(client, 16)
    assert before.count("a") == 1 and before[1:] == ["b"] * 9, before  # a tried once, then left alone
    # a is probed, answers fast now, and b's answers slow down: a takes the calls back
    assert after.count("a") >= 10 and after[-5:] == ["a"] * 5, after


async def test_calls_in_flight_and_weights_spread_the_load(
        tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    two = {"a": backends["a"].url, "b": backends["b"].url}
    write_flows(tmp_path, _flows(two, "probe_after: 1m").replace("endpoints: [a, b]",
                                                                 "endpoints: [{name: a, weight: 2}, b]"))
    for server in backends.values():
        server.set_behaviour(delay=0.5)
    async with facade_client(tmp_path) as client:
        warm = await _served(client, 2)
        at_once = await asyncio.gather(*(client.get(f"/items/{n}") for n in range(6)))
    assert sorted(warm) == ["a", "b"]
    served = Counter(answer.headers["x-served-by"] for answer in at_once)
    # as fast as each other: the fastest average alone would send all six to one; each call in
    # flight weighs on its endpoint, a weight-2 endpoint's half as much
    assert served["a"] > served["b"] >= 1, served


async def test_failures_count_as_slow(tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    # a answers 503 at once, c refuses connections: both are quicker than b, and neither is taken
    urls = {"a": backends["a"].url, "b": backends["b"].url, "c": f"http://127.0.0.1:{closed_port()}"}
    write_flows(tmp_path, _flows(urls, "failover_on: [503]", "probe_after: 1m"))
    backends["a"].set_behaviour(status=503)
    backends["b"].set_behaviour(delay=0.1)
    async with facade_client(tmp_path) as client:
        served = await _served(client, 12)
    assert served == ["b"] * 12  # every failure failed over to b
    # each tried while it had no time yet (c's first try fails over to a, a second time), then no more
    assert len(backends["a"].requests) <= 2 and len(backends["b"].requests) == 12


@pytest.mark.parametrize(("step", "message", "where"), [
    ("{endpoints: [a, b], decay: 5s}", "decay goes with strategy: least_response_time (this one is round_robin)",
     "5:50"),
    ("{strategy: least_connections, endpoints: [a, b], probe_after: 1s}", "probe_after goes with strategy", "5:85"),
    ("{strategy: least_response_time, endpoints: [a, b], decay: 0s}", "greater than zero", "5:81"),
])
def test_its_options_are_checked_at_load(tmp_path: Path, step: str, message: str, where: str) -> None:
    assert_step_load_error(tmp_path, "load_balance", step, message, where, """
    endpoints:
      a: {http: {url: "http://127.0.0.1:9"}}
      b: {http: {url: "http://127.0.0.1:9"}}
    """)


def test_metrics_show_each_endpoints_average_the_balancer_picks_by(
        tmp_path: Path, backends: dict[str, BackendServer]) -> None:
    """A running engine, a slow (0.3 s) and a quick endpoint: after the calls, /metrics has the two
    averages, the slow one's above 0.3 s and above the quick one's; an endpoint of a step with
    another strategy has none."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    slow, quick = backends["a"], backends["b"]
    urls = {"slow": slow.url, "quick": quick.url}
    write_flows(tmp_path, _flows(urls, "probe_after: 1m") + """
      turns:
        source: {http: {method: GET, path: "/turns/{id}"}}
        steps:
          - load_balance: {endpoints: [slow, quick], call: {method: GET, path: "/items/${path.id}"}}
    """)
    slow.set_behaviour(delay=0.3)
    with run_engine(tmp_path) as engine, httpx.Client(base_url=engine.url, timeout=10) as client:
        served = [client.get(f"/items/{n}").headers["x-served-by"] for n in range(8)]
        client.get("/turns/1")
        exposed = httpx.get(f"{engine.management_url}/metrics", timeout=10).text
    averages = {sample.labels["endpoint"]: (sample.value, sample.labels)
                for family in text_string_to_metric_families(exposed)
                if family.name == "interlace_load_balance_response_time_seconds" for sample in family.samples}
    assert sorted(served[:2]) == ["quick", "slow"] and served[2:] == ["quick"] * 6, served
    assert set(averages) == {"slow", "quick"}  # the turns step (round_robin) shows none
    (slow_average, slow_labels), (quick_average, quick_labels) = averages["slow"], averages["quick"]
    assert slow_average >= 0.3 > quick_average, averages
    assert slow_labels == {"flow": "spread", "step": slow_labels["step"], "endpoint": "slow", "url": slow.url}
    assert quick_labels["url"] == quick.url and quick_labels["step"] == slow_labels["step"]
