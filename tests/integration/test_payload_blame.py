"""Steps that refuse a payload of the wrong shape (a JSONPath that cannot be written, a claim_check
part not there, a sequence number or a correlation key missing, a body of another media type)
answer the caller's mistake (422, or 415) only while the payload is the caller's request body as it
came (``Message.payload_is_request``); once a step built the payload, the same refusal is the flow's
own bug (500), though the headers are still the request's.  A request header the flow removed and
then reads is the flow's too (``remove_header`` keeps its name in ``headers_explicit``)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support import rawhttp
from tests.support.backends import BackendServer
from tests.support.engine import RunningEngine, run_engine, write_flows

pytestmark = pytest.mark.timeout(60)

FLOWS = """
endpoints:
  echo: {http: {url: "%s"}}
flows:
  place:
    source: {http: {method: POST, path: /place}}
    steps:
      - set: {path: $.lines, action: child, value: 1}
      - respond: {json: "${payload}"}
  place-built:
    source: {http: {method: POST, path: /place-built}}
    steps:
      - payload: {json: {lines: 5}}
      - set: {path: $.lines, action: child, value: 1}
      - respond: {json: "${payload}"}
  write:
    source: {http: {method: POST, path: /write}}
    steps:
      - set: {path: $.id, value: 1}
      - respond: {json: "${payload}"}
  write-built:
    source: {http: {method: POST, path: /write-built}}
    steps:
      - payload: {json: "${payload.list}"}
      - set: {path: $.id, value: 1}
      - respond: {json: "${payload}"}
  json-body:
    source: {http: {method: POST, path: /json-body}}
    steps:
      - set: {path: $.id, value: 1}
      - respond: {json: "${payload}"}
  json-body-built:
    source: {http: {method: POST, path: /json-body-built}}
    steps:
      - payload: {xml: <order/>}
      - set: {path: $.id, value: 1}
      - respond: {json: "${payload}"}
  xml-body:
    source: {http: {method: POST, path: /xml-body}}
    steps:
      - set: {xpath: /order, action: child, value: "<line/>"}
      - respond: {text: done}
  xml-body-built:
    source: {http: {method: POST, path: /xml-body-built}}
    steps:
      - payload: {json: {order: 1}}
      - set: {xpath: /order, action: child, value: "<line/>"}
      - respond: {text: done}
  claim:
    source: {http: {method: POST, path: /claim}}
    steps:
      - claim_check: {part: $.document, ttl: 1m}
      - respond: {json: "${payload}"}
  claim-built:
    source: {http: {method: POST, path: /claim-built}}
    steps:
      - payload: {json: {other: "${payload.document}"}}
      - claim_check: {part: $.document, ttl: 1m}
      - respond: {json: "${payload}"}
  order:
    source: {http: {method: POST, path: /order}}
    steps:
      - resequence: {number: "${payload.seq}", call: {endpoint: echo, method: POST, path: /echo}}
  order-built:
    source: {http: {method: POST, path: /order-built}}
    steps:
      - payload: {json: {seq: "${payload.name}"}}
      - resequence: {number: "${payload.seq}", call: {endpoint: echo, method: POST, path: /echo}}
  order-vars:
    source: {http: {method: POST, path: /order-vars}}
    steps:
      - set: {var: seq, value: "${payload.name}"}
      - resequence: {number: "${vars.seq}", call: {endpoint: echo, method: POST, path: /echo}}
  gather:
    source: {http: {method: POST, path: /gather}}
    steps:
      - aggregate: {correlation: "${payload.orderId}", complete: {size: 2},
                    call: {endpoint: echo, method: POST, path: /echo}}
  gather-built:
    source: {http: {method: POST, path: /gather-built}}
    steps:
      - payload: {json: {line: "${payload.line}"}}
      - aggregate: {correlation: "${payload.orderId}", complete: {size: 2},
                    call: {endpoint: echo, method: POST, path: /echo}}
  agent:
    source: {http: {method: GET, path: /agent}}
    steps:
      - respond: {text: "${lower(headers.\\"x-agent\\")}"}
  agent-removed:
    source: {http: {method: GET, path: /agent-removed}}
    steps:
      - remove: {header: X-Agent}
      - respond: {text: "${lower(headers.\\"x-agent\\")}"}
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    with BackendServer() as backend:
        folder = write_flows(tmp_path_factory.mktemp("payload-blame"), FLOWS % backend.url)
        with run_engine(folder) as running:
            yield running


def post(engine: RunningEngine, path: str, body: object) -> rawhttp.RawResponse:
    return rawhttp.request(engine.port, path, method="POST", body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})


def post_xml(engine: RunningEngine, path: str, body: bytes) -> rawhttp.RawResponse:
    return rawhttp.request(engine.port, path, method="POST", body=body, headers={"Content-Type": "application/xml"})


def problem(answer: rawhttp.RawResponse) -> tuple[int, str]:
    return answer.status, str(answer.json()["type"]).rsplit("/", 1)[-1]


def test_a_child_placed_into_the_callers_number_is_a_422_into_the_flows_own_a_500(engine: RunningEngine) -> None:
    assert post(engine, "/place", {"lines": [0]}).json() == {"lines": [0, 1]}
    assert post(engine, "/place", {"lines": 5}).status == 422
    assert post(engine, "/place-built", {}).status == 500


def test_a_jsonpath_written_into_the_callers_array_is_a_422_into_the_flows_own_a_500(engine: RunningEngine) -> None:
    assert post(engine, "/write", {}).json() == {"id": 1}
    assert post(engine, "/write", [1]).status == 422
    assert post(engine, "/write-built", {"list": [1]}).status == 500


def test_a_body_of_another_media_type_is_a_415_only_while_it_is_the_callers(engine: RunningEngine) -> None:
    assert post_xml(engine, "/json-body", b"<order/>").status == 415
    assert post(engine, "/json-body-built", {}).status == 500
    assert post_xml(engine, "/xml-body", b"<order/>").body == b"done"
    assert post(engine, "/xml-body", {"order": 1}).status == 415
    assert post(engine, "/xml-body-built", {}).status == 500


def test_a_claim_check_part_missing_from_the_callers_body_is_a_422_from_the_flows_a_500(engine: RunningEngine) -> None:
    assert post(engine, "/claim", {"document": {"a": 1}}).status == 200
    assert post(engine, "/claim", {"other": 1}).status == 422
    assert post(engine, "/claim-built", {"document": {"a": 1}}).status == 500


def test_a_sequence_number_the_caller_sent_wrong_is_a_422_one_the_flow_made_a_500(engine: RunningEngine) -> None:
    caller = post(engine, "/order", {"seq": "x"})
    assert problem(caller) == (422, "bad-sequence-number")
    assert problem(post(engine, "/order-built", {"name": "x"})) == (500, "bad-sequence-number")
    assert problem(post(engine, "/order-vars", {"name": "x"})) == (500, "bad-sequence-number")


def test_a_correlation_key_the_caller_left_out_is_a_422_one_the_flow_lost_a_500(engine: RunningEngine) -> None:
    assert problem(post(engine, "/gather", {"line": 1})) == (422, "no-correlation-key")
    assert problem(post(engine, "/gather-built", {"orderId": "a", "line": 1})) == (500, "no-correlation-key")


def test_a_header_the_flow_removed_and_then_read_is_the_flows_500(engine: RunningEngine) -> None:
    assert rawhttp.request(engine.port, "/agent", headers={"X-Agent": "CLI"}).body == b"cli"
    assert problem(rawhttp.request(engine.port, "/agent")) == (422, "request-data-invalid")
    assert problem(rawhttp.request(engine.port, "/agent-removed", headers={"X-Agent": "CLI"})) == \
        (500, "expression-error")
