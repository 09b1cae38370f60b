"""The connector protocol and its shared resilience layer, seen through a kind that is not HTTP:
retries and failover key off the typed errors, the breaker counts outages and not refusals, the
deadline bounds everything, ${error.*} names the endpoint and category, and a step's operation
keys are checked at load against that operation's schema."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from connectors.base import Connector, Operation, Reply, Request
from connectors.resilience import Endpoint
from engine.errors import BackendFault, BackendRejected, BackendTimeout, BackendUnreachable, CircuitOpen
from engine.loader import LoadErrors, load_project
from tests.support.engine import facade_client, write_flows

pytestmark = pytest.mark.anyio


class Scripted(Connector):
    """A kind whose attempts fail as scripted: one outcome per attempt, per target."""

    OPERATIONS = {"get": Operation("Get a thing.")}

    def __init__(self, outcomes: list[Any], targets: int = 1) -> None:
        super().__init__("scripted", {})
        self.targets = tuple(f"target-{i}" for i in range(targets))
        self.outcomes = outcomes
        self.tried: list[int] = []

    async def attempt(self, request: Request, target: int) -> Reply:
        self.tried.append(target)
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, Exception):
            raise outcome
        return Reply(payload={"from": self.targets[target]})


def endpoint(outcomes: list[Any], targets: int = 1, **settings: Any) -> tuple[Endpoint, Scripted]:
    connector = Scripted(outcomes, targets)
    return Endpoint("things", connector, settings, "scripted"), connector


async def test_unreachable_fails_over_at_once_and_retries_the_round() -> None:
    down = BackendUnreachable("down")
    things, connector = endpoint([down, down, "ok"], targets=2, retry={"attempts": 2, "backoff": 0})
    reply = await things.invoke(Request("get"))
    assert reply.payload == {"from": "target-0"}
    assert connector.tried == [0, 1, 0]


@pytest.mark.parametrize("error", [BackendRejected("no such table"), BackendFault("fault")])
async def test_rejections_and_faults_are_answers_never_retried_and_not_counted_by_the_breaker(
        error: Exception) -> None:
    things, connector = endpoint([error, error], targets=2, retry={"attempts": 3, "backoff": 0},
                                 breaker={"failures": 1})
    with pytest.raises(type(error)) as raised:
        await things.invoke(Request("get"))
    assert connector.tried == [0]
    assert things.health()["targets"][0]["breaker"] == "closed"
    assert raised.value.as_dict()["endpoint"] == "things" and raised.value.as_dict()["operation"] == "get"


async def test_a_timeout_after_sending_is_retried_only_when_asked() -> None:
    late = BackendTimeout("late")
    things, _ = endpoint([late, "ok"], retry={"attempts": 2, "backoff": 0})
    with pytest.raises(BackendTimeout):
        await things.invoke(Request("get"))
    things, _ = endpoint([late, "ok"], retry={"attempts": 2, "backoff": 0, "on_timeout": True})
    assert (await things.invoke(Request("get"))).payload == {"from": "target-0"}
    never_sent = BackendTimeout("connect timeout", reached=False)
    things, _ = endpoint([never_sent, "ok"], retry={"attempts": 2, "backoff": 0})
    assert (await things.invoke(Request("get"))).payload == {"from": "target-0"}


async def test_the_breaker_opens_per_target_and_then_fails_fast() -> None:
    down = BackendUnreachable("down")
    things, connector = endpoint([down, down], breaker={"failures": 2, "reset": "1m"})
    for _ in range(2):
        with pytest.raises(BackendUnreachable):
            await things.invoke(Request("get"))
    with pytest.raises(CircuitOpen) as raised:
        await things.invoke(Request("get"))
    assert connector.tried == [0, 0]
    assert raised.value.as_dict()["category"] == "unavailable"


async def test_the_deadline_bounds_retries_and_pauses() -> None:
    down = BackendUnreachable("down")
    things, connector = endpoint([down] * 10, retry={"attempts": 10, "backoff": "1s", "max_backoff": "1s"},
                                 deadline="300ms")
    with pytest.raises(BackendTimeout, match=r"deadline of 0\.3 s"):
        await things.invoke(Request("get"))
    assert len(connector.tried) == 1


async def test_a_request_that_cannot_be_replayed_is_sent_once() -> None:
    class OneShot(Request):
        def replayable(self) -> bool:
            return False

    things, connector = endpoint([BackendUnreachable("down"), "ok"], targets=2, retry={"attempts": 3})
    with pytest.raises(BackendUnreachable):
        await things.invoke(OneShot("get"))
    assert connector.tried == [0]


FLOWS = """
endpoints:
  dead:
    http: {url: "http://127.0.0.1:9", retry: {attempts: 1}}
flows:
  mapped:
    source: {http: {method: GET, path: /mapped}}
    steps:
      - call: {endpoint: dead, path: /x}
    on_error:
      - respond:
          status: 503
          json: {category: "${error.category}", endpoint: "${error.endpoint}", code: "${error.code}",
                 operation: "${error.operation}"}
"""


async def test_error_handlers_see_category_endpoint_and_operation(tmp_path: Path) -> None:
    async with facade_client(write_flows(tmp_path, FLOWS)) as client:
        answer = await client.get("/mapped")
    assert answer.status_code == 503
    assert answer.json() == {"category": "unavailable", "endpoint": "dead", "code": "backend-unreachable",
                             "operation": "request"}


@pytest.mark.parametrize(("step", "message"), [
    ("{endpoint: dead, operation: select, path: /x}",
     "flows.yaml:8:43: call: endpoint 'dead' (http) has no operation 'select'; operations: request"),
    ("{endpoint: dead, methd: GET}",
     "flows.yaml:8:32: call: unknown key 'methd' (did you mean 'method'?)"),
    ("{endpoint: dead, forward_headers: maybe}",
     "flows.yaml:8:49: call: expected true or false or a list in forward_headers, got the string 'maybe'"),
])
def test_operation_keys_are_checked_at_load_with_their_position(tmp_path: Path, step: str, message: str) -> None:
    write_flows(tmp_path, FLOWS.replace("{endpoint: dead, path: /x}", step))
    with pytest.raises(LoadErrors) as raised:
        load_project(tmp_path)
    assert message in str(raised.value)


async def test_readiness_fails_while_a_required_endpoint_is_down(tmp_path: Path) -> None:
    import httpx

    from engine.management import build_management_app
    from engine.runtime import Runtime
    from tests.support.backends import BackendServer

    with BackendServer() as backend:
        write_flows(tmp_path, f"""
            endpoints:
              needed:
                http: {{url: "{backend.url}", required: true}}
              optional:
                http: {{url: "http://127.0.0.1:9"}}
            flows:
              ping:
                source: {{http: {{method: GET, path: /ping}}}}
                steps:
                  - call: {{endpoint: needed, path: /x}}
            """)
        runtime = Runtime(tmp_path)
        await runtime.start()
        app = build_management_app(runtime, token="")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as client:
            assert (await client.get("/health/ready")).status_code == 200
            backend.stop()
            await asyncio.sleep(1.1)  # readiness checks an endpoint at most once a second
            answer = await client.get("/health/ready")
            assert answer.status_code == 503
            assert answer.json() == {"status": "unready", "endpoints": {"needed": "endpoint 'needed' is unreachable"}}
            endpoints = (await client.get("/endpoints")).json()["endpoints"]
            assert endpoints["needed"]["required"] is True and endpoints["optional"]["required"] is False
        await runtime.stop()
