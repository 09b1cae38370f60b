"""on_error.redelivery on flows served over HTTP: the caller waits while the flow is tried again on the
request as it arrived, then the request is dead-lettered and the on_error steps answer it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.loader import LoadErrors, load_project
from tests.support.backends import BackendServer
from tests.support.engine import run_engine, write_flows

FLOWS = """
endpoints:
  backend:
    http: {url: "${env.BACKEND_URL}", timeout: {connect: 1s, read: 5s}}

flows:
  orders:
    source: {http: {method: POST, path: /orders}}
    steps:
      - call:
          endpoint: backend
          method: POST
          path: ${query.to}
          headers: {X-Attempt: "${vars.attempt}"}
          expect_status: [2xx]
    on_error:
      redelivery:
        max_attempts: 3
        backoff: {initial: 10ms, max: 20ms}
        retry_on: {statuses: [503]}
        dead_letter: {store: orders.dead}

  answered:
    source: {http: {method: POST, path: /answered}}
    steps:
      - call: {endpoint: backend, method: POST, path: /status/503, expect_status: [2xx]}
    on_error:
      redelivery:
        max_attempts: 2
        backoff: {initial: 10ms, max: 10ms}
        dead_letter: {folder: dead}
      steps:
        - respond:
            status: 503
            json: {kept: "${error.dead_letter_id}", attempts: "${error.attempts}", reason: "${error.code}"}
"""


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


def test_http_flow_retried_then_dead_lettered(tmp_path: Path, backend: BackendServer) -> None:
    folder = write_flows(tmp_path / "flows", FLOWS)
    env = {"BACKEND_URL": backend.url, "INTERLACE_DATA_DIR": str(tmp_path / "data")}
    with run_engine(folder, env=env) as engine:
        # 503 twice, then the echo: the caller gets the third attempt's answer
        backend.set_behaviour(statuses=[503, 503])
        reply = httpx.post(f"{engine.url}/orders?to=/ok", json={"order": 1})
        assert reply.status_code == 200 and reply.json() == {"order": 1}
        assert [r.headers["x-attempt"] for r in backend.requests] == ["1", "2", "3"]
        assert [json.loads(r.body) for r in backend.requests] == [{"order": 1}] * 3  # the request as it came

        # always 503: three attempts, then the request is kept with its error and the caller told so
        backend.clear()
        backend.set_behaviour()
        reply = httpx.post(f"{engine.url}/orders?to=/status/503", json={"order": 2},
                           headers={"authorization": "Bearer s3cret", "x-customer": "c-9"})
        assert reply.status_code == 502 and reply.headers["content-type"] == "application/problem+json"
        problem = reply.json()
        assert problem["attempts"] == 3 and problem["type"].endswith("/backend-status")
        assert len(backend.requests) == 3
        [dead] = httpx.get(f"{engine.management_url}/stores/orders.dead/dead").json()["messages"]
        assert dead["id"] == problem["dead_letter_id"] and dead["flow"] == "orders" and dead["attempts"] == 3
        assert json.loads(dead["body"]) == {"order": 2} and dead["error"]["backend_status"] == 503
        stored_headers = json.dumps(httpx.get(f"{engine.management_url}/stores/orders.dead/dead").json())
        assert "s3cret" not in stored_headers  # the caller's credentials are not kept

        # a failure retry_on does not name is not tried again
        backend.clear()
        reply = httpx.post(f"{engine.url}/orders?to=/status/404", json={"order": 3})
        assert reply.status_code == 502 and reply.json()["attempts"] == 1 and len(backend.requests) == 1

        # on_error steps answer once, after the last attempt, with the dead letter's id
        backend.clear()
        reply = httpx.post(f"{engine.url}/answered", content=b"<order/>", headers={"content-type": "application/xml"})
        assert reply.status_code == 503 and len(backend.requests) == 2
        body = reply.json()
        assert body["attempts"] == 2 and body["reason"] == "backend-status"
        kept = tmp_path / "flows" / "dead" / body["kept"]
        assert kept.read_bytes() == b"<order/>"
        assert json.loads((kept.parent / f"{body['kept']}.error.json").read_text())["error"]["attempts"] == 2


def test_a_queue_dead_letter_on_an_http_flow_is_a_load_error(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    flows:
      orders:
        source: {http: {method: POST, path: /orders}}
        steps:
          - respond: {status: 200}
        on_error:
          redelivery:
            max_attempts: 2
            dead_letter: {source: true}
    """)
    with pytest.raises(LoadErrors, match=r"flows.yaml:9:\d+: dead_letter: \{source: true\} is a queue source's own"):
        load_project(tmp_path)
