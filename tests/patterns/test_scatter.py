"""scatter: branches run at once against real slow backends on loopback, and are gathered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backends import BackendServer
from tests.support.engine import facade_client, write_flows

pytestmark = pytest.mark.anyio


@pytest.fixture
def backends() -> Iterator[list[BackendServer]]:
    with BackendServer() as a, BackendServer() as b, BackendServer() as c:
        yield [a, b, c]


FLOW = """
endpoints:
  profile: {http: {url: "%s"}}
  orders: {http: {url: "%s"}}
  loyalty: {http: {url: "%s"}}
flows:
  overview:
    source: {http: {method: GET, path: "/customers/{id}/overview"}}
    steps:
      - scatter:
          timeout: %s
          on_failure: default
          partial: partial
          errors: failed
          branches:
            - name: profile
              steps:
                - call: {endpoint: profile, method: POST, path: "/p/${path.id}", body: {name: Ada}}
            - name: orders
              steps:
                - call: {endpoint: orders, method: POST, path: "/o/${path.id}", body: [{id: 1}]}
            - name: loyalty
              steps:
                - call: {endpoint: loyalty, method: POST, path: "/l/${path.id}", body: {points: 7}}
      - respond: {status: 200}
"""


def _flow(backends: list[BackendServer], timeout: str = "2s") -> str:
    return FLOW % (backends[0].url, backends[1].url, backends[2].url, timeout)


async def test_branches_are_gathered_by_name(tmp_path: Path, backends: list[BackendServer]) -> None:
    write_flows(tmp_path, _flow(backends))
    async with facade_client(tmp_path) as client:
        reply = await client.get("/customers/42/overview")
    assert reply.status_code == 200
    assert reply.json() == {"profile": {"name": "Ada"}, "orders": [{"id": 1}], "loyalty": {"points": 7}}
    assert [b.requests[-1].path for b in backends] == ["/p/42", "/o/42", "/l/42"]


async def test_branches_run_at_the_same_time(tmp_path: Path, backends: list[BackendServer]) -> None:
    for backend in backends:
        backend.set_behaviour(delay=1.0)
    write_flows(tmp_path, _flow(backends, "5s"))
    async with facade_client(tmp_path) as client:
        started = time.monotonic()
        pending = asyncio.ensure_future(client.get("/customers/1/overview"))
        # every backend holds its request before any has answered: the calls overlap
        while sum(len(b.requests) for b in backends) < 3 and time.monotonic() - started < 0.9:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        seen_while_first_pending = sum(len(b.requests) for b in backends)
        reply = await pending
        elapsed = time.monotonic() - started
    assert seen_while_first_pending == 3
    assert reply.status_code == 200
    assert elapsed < 2.5  # three 1 s calls one after the other would take 3 s


async def test_a_slow_branch_times_out_into_its_default(tmp_path: Path, backends: list[BackendServer]) -> None:
    backends[1].set_behaviour(delay=3.0)
    listed = "      - set: {path: $.failed, value: '${keys(vars.failed)}'}\n      - respond: {status: 200}"
    write_flows(tmp_path, _flow(backends, "500ms").replace("      - respond: {status: 200}", listed))
    async with facade_client(tmp_path) as client:
        reply = await client.get("/customers/7/overview")
    assert reply.status_code == 200
    assert reply.json() == {"profile": {"name": "Ada"}, "orders": None, "loyalty": {"points": 7},
                            "partial": True, "failed": ["orders"]}


async def test_a_failed_branch_fails_the_scatter_by_default(tmp_path: Path, backends: list[BackendServer]) -> None:
    backends[2].stop()
    write_flows(tmp_path, _flow(backends).replace("on_failure: default", "on_failure: fail"))
    async with facade_client(tmp_path) as client:
        reply = await client.get("/customers/7/overview")
    assert reply.status_code == 502
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["type"].endswith("/backend-unreachable")


async def test_skip_array_xml_and_vars_gathering(tmp_path: Path, backends: list[BackendServer]) -> None:
    backends[0].stop()
    write_flows(tmp_path, f"""
    endpoints:
      a: {{http: {{url: "{backends[0].url}"}}}}
      b: {{http: {{url: "{backends[1].url}"}}}}
    flows:
      as-array:
        source: {{http: {{method: GET, path: /array}}}}
        steps:
          - scatter:
              on_failure: skip
              gather: array
              branches:
                - {{name: a, steps: [{{call: {{endpoint: a, method: POST, body: {{n: 1}}}}}}]}}
                - {{name: b, steps: [{{call: {{endpoint: b, method: POST, body: {{n: 2}}}}}}]}}
          - respond: {{status: 200}}
      as-xml:
        source: {{http: {{method: GET, path: /xml}}}}
        steps:
          - scatter:
              gather: xml
              root: quotes
              branches:
                - name: first
                  steps: [{{call: {{endpoint: b, method: POST, content_type: text/xml, xml: "<q>1</q>"}}}}]
                - {{name: second, steps: [{{call: {{endpoint: b, method: POST, body: {{price: 2}}}}}}]}}
          - respond: {{status: 200}}
      as-vars:
        source: {{http: {{method: POST, path: /vars}}}}
        steps:
          - scatter:
              gather: vars
              branches:
                - {{name: left, steps: [{{call: {{endpoint: b, method: POST, path: /l}}}}]}}
                - {{name: right, steps: [{{set: {{path: $.side, value: right}}}}]}}
          - respond: {{json: {{left: "${{vars.left}}", right: "${{vars.right}}", mine: "${{payload}}"}}}}
    """)
    async with facade_client(tmp_path) as client:
        array = await client.get("/array")
        xml = await client.get("/xml")
        as_vars = await client.post("/vars", json={"side": "left"})
    assert array.json() == [{"n": 2}]
    assert xml.status_code == 200
    assert xml.text.split("?>", 1)[-1].strip() == (
        "<quotes><first><q>1</q></first><second><price>2</price></second></quotes>")
    assert as_vars.json() == {"left": {"side": "left"}, "right": {"side": "right"}, "mine": {"side": "left"}}


async def test_two_branches_with_one_name_is_a_load_error(tmp_path: Path) -> None:
    from engine.loader import LoadErrors, load_project

    write_flows(tmp_path, """
    flows:
      twice:
        source: {http: {method: GET, path: /t}}
        steps:
          - scatter:
              branches:
                - {name: a, steps: [{log: one}]}
                - {name: a, steps: [{log: two}]}
    """)
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    assert "flows.yaml:8:22: scatter: two branches are named 'a'" in str(caught.value)
