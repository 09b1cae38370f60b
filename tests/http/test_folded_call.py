"""A call of a plain http endpoint (one URL, no retry) runs as one coroutine
(connectors/_http_call.py): what a flow sees of it must be what the resilience layer gives. Each
case runs the same flows on a plain endpoint and on one with ``retry: {attempts: 2}`` (which goes
through ``Endpoint.invoke``), in failures a retry does not change, against real backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine import metrics
from tests.support.backends import BackendServer, closed_port
from tests.support.engine import facade_client, write_flows

pytestmark = pytest.mark.anyio

FLOWS = """
endpoints:
  plain: {{http: {{url: "{url}"}}}}
  layered: {{http: {{url: "{url}", retry: {{attempts: 2, backoff: 1ms}}}}}}
  plain-dead: {{http: {{url: "{dead}"}}}}
  layered-dead: {{http: {{url: "{dead}", retry: {{attempts: 2, backoff: 1ms}}}}}}
flows:
  call:
    source: {{http: {{method: POST, path: "/call/{{endpoint}}"}}}}
    steps:
      - call: {{endpoint: "plain", path: /echo}}
  into:
    source: {{http: {{method: POST, path: "/into/{{endpoint}}"}}}}
    steps:
      - call: {{endpoint: "plain", path: /echo, into: answer}}
      - payload: {{json: {{status: "${{vars.answer.status}}", body: "${{vars.answer.body}}"}}}}
  status:
    source: {{http: {{method: GET, path: "/status/{{endpoint}}"}}}}
    steps:
      - call: {{endpoint: "plain", method: GET, path: /status/404}}
    on_error:
      - respond: {{status: 599, json: {{code: "${{error.code}}", endpoint: "${{error.endpoint}}",
                                        backend: "${{error.backend_status}}"}}}}
  dead:
    source: {{http: {{method: GET, path: "/dead/{{endpoint}}"}}}}
    steps:
      - call: {{endpoint: "plain-dead", path: /}}
    on_error:
      - respond: {{status: 599, json: {{code: "${{error.code}}", endpoint: "${{error.endpoint}}",
                                        operation: "${{error.operation}}", status: "${{error.status}}"}}}}
"""


def flows(backend: BackendServer) -> str:
    text = FLOWS.format(url=backend.url, dead=f"http://127.0.0.1:{closed_port()}")
    # each flow twice: the plain endpoint's and the layered one's (same steps, other endpoint)
    layered = text.split("flows:\n", 1)[1].replace('"plain', '"layered').replace("  call:", "  call-l:") \
        .replace("  into:", "  into-l:").replace("  status:", "  status-l:").replace("  dead:", "  dead-l:") \
        .replace('path: "/', 'path: "/l/')
    return text + layered


def counted(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_folded_call_answers_as_the_layered_one(tmp_path: Path, backend: BackendServer) -> None:
    write_flows(tmp_path, flows(backend))
    answers: dict[str, list[Any]] = {}
    async with facade_client(tmp_path) as client:
        for endpoint, prefix in (("plain", ""), ("layered", "/l")):
            call = await client.post(f"{prefix}/call/x", content=b'{"a": 1}',
                                     headers={"content-type": "application/json", "x-forwarded-thing": "yes"})
            into = await client.post(f"{prefix}/into/x", content=b"text", headers={"content-type": "text/plain"})
            status = await client.get(f"{prefix}/status/x")
            dead = await client.get(f"{prefix}/dead/x")
            answers[endpoint] = [
                (call.status_code, call.content, call.headers["content-type"], call.headers["x-backend-path"]),
                (into.status_code, into.json()),
                (status.status_code, status.json()),
                (dead.status_code, {**dead.json(), "endpoint": dead.json()["endpoint"].replace(endpoint, "E")}),
            ]
    assert answers["plain"] == answers["layered"]
    assert answers["plain"][0] == (200, b'{"a": 1}', "application/json", "/echo")
    assert answers["plain"][1] == (200, {"status": 200, "body": "text"})
    assert answers["plain"][2] == (599, {"code": "backend-status", "endpoint": None, "backend": 404})
    assert answers["plain"][3] == (599, {"code": "backend-unreachable", "endpoint": "E-dead", "operation": "request",
                                         "status": 502})
    plain, layered = backend.requests[0], backend.requests[3]
    assert plain.headers["x-forwarded-thing"] == layered.headers["x-forwarded-thing"] == "yes"
    assert plain.headers["x-request-id"] and layered.headers["x-request-id"]


async def test_a_folded_call_is_measured_as_the_layered_one(tmp_path: Path, backend: BackendServer) -> None:
    write_flows(tmp_path, flows(backend))
    steps = "interlace_step_duration_seconds_count"
    calls = "interlace_backend_request_duration_seconds_count"
    before = {(flow, outcome): counted(steps, flow=flow, step=f"{flow}/steps[0]", kind="call", outcome=outcome)
              for flow in ("call", "call-l", "dead", "dead-l") for outcome in ("ok", "error")}
    backend_before = {e: counted(calls, endpoint=e, url=backend.url, outcome="2xx") for e in ("plain", "layered")}
    async with facade_client(tmp_path) as client:
        for prefix in ("", "/l"):
            for _ in range(3):
                assert (await client.post(f"{prefix}/call/x", content=b"x")).status_code == 200
            assert (await client.get(f"{prefix}/dead/x")).status_code == 599
    metrics.push()
    for flow in ("call", "call-l"):
        assert counted(steps, flow=flow, step=f"{flow}/steps[0]", kind="call", outcome="ok") - before[(flow, "ok")] == 3
    for flow in ("dead", "dead-l"):
        assert counted(steps, flow=flow, step=f"{flow}/steps[0]", kind="call", outcome="error") \
            - before[(flow, "error")] == 1
    for endpoint in ("plain", "layered"):
        assert counted(calls, endpoint=endpoint, url=backend.url, outcome="2xx") - backend_before[endpoint] == 3


SLOW = """
endpoints:
  plain-slow: {{http: {{url: "{url}", timeout: {{read: 100ms}}, breaker: {{failures: 2, reset: 1h}}}}}}
  layered-slow: {{http: {{url: "{url}", timeout: {{read: 100ms}}, breaker: {{failures: 2, reset: 1h}},
                         retry: {{attempts: 2, backoff: 1ms}}}}}}
  plain-deadline: {{http: {{url: "{url}", deadline: 150ms}}}}
  layered-deadline: {{http: {{url: "{url}", deadline: 150ms, retry: {{attempts: 2, backoff: 1ms}}}}}}
flows:
"""
SLOW_FLOW = """
  {name}:
    source: {{http: {{method: GET, path: /{name}}}}}
    steps:
      - call: {{endpoint: {name}, path: /slow}}
    on_error:
      - respond: {{status: 599, json: {{code: "${{error.code}}", status: "${{error.status}}",
                                        endpoint: "${{error.endpoint}}", message: "${{error.message}}"}}}}
"""


async def test_a_folded_call_keeps_the_breaker_and_the_deadline(tmp_path: Path, backend: BackendServer) -> None:
    """A read timeout (after the request went: never retried) counts for the breaker, which opens
    after two; a deadline is a backend-timeout with its own message: the same on both endpoints."""
    backend.set_behaviour(delay=0.6)
    names = ("plain-slow", "layered-slow", "plain-deadline", "layered-deadline")
    write_flows(tmp_path, SLOW.format(url=backend.url) + "".join(SLOW_FLOW.format(name=n) for n in names))
    seen: dict[str, list[Any]] = {}
    async with facade_client(tmp_path) as client:
        for name in names:
            count = 3 if name.endswith("slow") else 1
            answers = [(await client.get(f"/{name}")) for _ in range(count)]
            seen[name] = [(a.status_code, {k: v.replace(name, "E") if isinstance(v, str) else v
                                           for k, v in a.json().items()}) for a in answers]
    assert seen["plain-slow"] == seen["layered-slow"]
    assert [(status, answer["code"], answer["status"]) for status, answer in seen["plain-slow"]] == [
        (599, "backend-timeout", 504), (599, "backend-timeout", 504), (599, "circuit-open", 503)]
    assert seen["plain-deadline"] == seen["layered-deadline"] == [
        (599, {"code": "backend-timeout", "status": 504, "endpoint": "E",
               "message": "endpoint 'E' did not answer within its deadline of 0.15 s"})]
