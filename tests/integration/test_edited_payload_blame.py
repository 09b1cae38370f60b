"""A flow that writes a few places of the caller's JSON body leaves the rest the caller's: a wrong
shape the caller sent elsewhere is still the caller's mistake (422), after the writes as before
them.  What the flow put there itself (a place it wrote, a place it removed, a whole new payload)
is the flow's (500), whatever the caller sent (``Message.payload_is_request_at``)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support import rawhttp
from tests.support.engine import RunningEngine, run_engine, write_flows

pytestmark = pytest.mark.timeout(60)

FLOWS = """
flows:
  count:
    source: {http: {method: POST, path: /count}}
    steps:
      - set: {path: $.meta.seen, value: true}
      - respond: {json: {n: "${length(payload.items)}", meta: "${payload.meta}"}}
  count-own:
    source: {http: {method: POST, path: /count-own}}
    steps:
      - set: {path: $.items, value: 5}
      - respond: {json: {n: "${length(payload.items)}"}}
  count-removed:
    source: {http: {method: POST, path: /count-removed}}
    steps:
      - remove: {path: $.items}
      - respond: {json: {n: "${length(payload.items)}"}}
  count-whole:
    source: {http: {method: POST, path: /count-whole}}
    steps:
      - set: {path: $, value: {items: "${payload.items}"}}
      - respond: {json: {n: "${length(payload.items)}"}}
  number:
    source: {http: {method: POST, path: /number}}
    steps:
      - set: {path: $.meta, action: child, value: {seen: true}}
      - set: {path: "$.items[0].id", value: 1}
      - respond: {json: "${payload}"}
  number-own:
    source: {http: {method: POST, path: /number-own}}
    steps:
      - set: {path: $.items, value: x}
      - set: {path: "$.items[0].id", value: 1}
      - respond: {json: "${payload}"}
  lines:
    source: {http: {method: POST, path: /lines}}
    steps:
      - set: {path: $.meta, action: sibling, value: {seen: true}}
      - set: {path: $.lines, action: child, value: 1}
      - respond: {json: "${payload}"}
  orders:
    source: {http: {method: POST, path: /orders}}
    steps:
      - set: {path: $.meta.seen, value: true}
      - foreach:
          items: ${payload.orders}
          steps:
            - payload: {json: {n: "${length(payload.lines)}"}}
      - respond: {json: "${payload}"}
  orders-own:
    source: {http: {method: POST, path: /orders-own}}
    steps:
      - set: {path: "$.orders[0].lines", value: 5}
      - foreach:
          items: ${payload.orders}
          steps:
            - payload: {json: {n: "${length(payload.lines)}"}}
      - respond: {json: "${payload}"}
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    folder = write_flows(tmp_path_factory.mktemp("edited-payload"), FLOWS)
    with run_engine(folder) as running:
        yield running


def post(engine: RunningEngine, path: str, body: object) -> rawhttp.RawResponse:
    return rawhttp.request(engine.port, path, method="POST", body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})


def problem(answer: rawhttp.RawResponse) -> tuple[int, str]:
    assert answer.header("content-type") == "application/problem+json"
    return answer.status, str(answer.json()["type"]).rsplit("/", 1)[-1]


def test_an_expression_on_a_part_the_flow_did_not_write_is_still_the_callers_422(engine: RunningEngine) -> None:
    assert post(engine, "/count", {"items": [1, 2]}).json() == {"n": 2, "meta": {"seen": True}}
    answer = post(engine, "/count", {"items": 5})
    assert problem(answer) == (422, "request-data-invalid")
    assert answer.json()["detail"] == ("the request does not fit this flow in its body: ${length(payload.items)} "
                                       "needs string or array or object for length(), and got number")


def test_an_expression_on_a_part_the_flow_wrote_removed_or_replaced_is_the_flows_500(engine: RunningEngine) -> None:
    assert problem(post(engine, "/count-own", {"items": [1, 2]})) == (500, "expression-error")
    assert problem(post(engine, "/count-removed", {"items": [1, 2]})) == (500, "expression-error")
    assert problem(post(engine, "/count-whole", {"items": 5})) == (500, "expression-error")


def test_a_write_into_a_part_the_flow_did_not_write_is_still_the_callers_422(engine: RunningEngine) -> None:
    assert post(engine, "/number", {"meta": {}, "items": [{}]}).json() == {"meta": {"seen": True}, "items": [{"id": 1}]}
    assert problem(post(engine, "/number", {"meta": {}, "items": "x"})) == (422, "payload-shape")
    assert problem(post(engine, "/number-own", {"items": [{}]})) == (500, "payload-shape")


def test_a_child_placed_after_a_sibling_the_flow_added_is_still_the_callers_422(engine: RunningEngine) -> None:
    assert post(engine, "/lines", {"meta": {}, "lines": [0]}).json() == {"meta": {}, "seen": True, "lines": [0, 1]}
    assert problem(post(engine, "/lines", {"meta": {}, "lines": 5})) == (422, "payload-shape")
    assert problem(post(engine, "/lines", {"meta": {}, "seen": 5, "lines": 5})) == (422, "payload-shape")


def test_foreach_items_split_from_an_edited_body_are_the_callers_unless_the_flow_wrote_them(
        engine: RunningEngine) -> None:
    assert post(engine, "/orders", {"orders": [{"lines": [1]}]}).json() == [{"n": 1}]
    assert problem(post(engine, "/orders", {"orders": [{"lines": 5}]})) == (422, "request-data-invalid")
    assert problem(post(engine, "/orders-own", {"orders": [{"lines": [1]}]})) == (500, "expression-error")
