"""A run-time expression error on the caller's data is the caller's mistake (422
``request-data-invalid``); the same error on what the flow chose or a backend answered stays the
flow's (500 ``expression-error``).  engine/expression_blame.py says where the line runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.loader import LoadErrors, load_project
from tests.support import rawhttp
from tests.support.backends import BackendServer
from tests.support.engine import RunningEngine, facade_client, run_engine, write_flows

pytestmark = pytest.mark.timeout(60)

FLOWS = """
endpoints:
  echo: {http: {url: "%s"}}
flows:
  count:
    source: {http: {method: POST, path: /count}}
    steps:
      - respond: {json: {count: "${length(payload.items)}"}}
  count-text:
    source: {http: {method: POST, path: /count-text}}
    steps:
      - respond: {text: "items: ${length(payload.items)}"}
  count-after-call:
    source: {http: {method: POST, path: /count-after-call}}
    steps:
      - call: {endpoint: echo, method: POST, path: /echo}
      - respond: {json: {count: "${length(payload.items)}"}}
  count-vars:
    source: {http: {method: POST, path: /count-vars}}
    steps:
      - set: {var: items, value: "${payload.items}"}
      - respond: {json: {count: "${length(vars.items)}"}}
  shout:
    source: {http: {method: GET, path: /shout}}
    steps:
      - respond: {json: {name: "${upper(query.name)}", agent: "${lower(headers.\\"x-agent\\")}"}}
  route:
    source: {http: {method: POST, path: /route}}
    steps:
      - choice:
          when:
            - if: ${length(payload.items) > `2`}
              steps: [{respond: {text: many}}]
          otherwise:
            - respond: {text: few}
  sift:
    source: {http: {method: POST, path: /sift}}
    steps:
      - filter:
          if: ${contains(payload.tags, 'vip')}
          steps: [{respond: {text: vip}}]
      - respond: {text: plain}
  literal:
    source: {http: {method: POST, path: /literal}}
    steps:
      - respond: {json: {count: "${length(payload.items || `5`)}"}}
  split-by:
    source: {http: {method: POST, path: /split-by}}
    steps:
      - respond: {json: {parts: "${split(payload.text, payload.separator)}"}}
  dearest:
    source: {http: {method: POST, path: /dearest}}
    steps:
      - respond: {json: {dearest: "${max_by(payload.lines, &price)}", cheapest: "${min_by(payload.lines, &price)}"}}
  answer-as-asked:
    source: {http: {method: POST, path: /answer-as-asked}}
    steps:
      - respond: {status: "${payload.status}", json: {ok: true}}
  answer-as-kept:
    source: {http: {method: POST, path: /answer-as-kept}}
    steps:
      - set: {var: status, value: "${payload.status}"}
      - respond: {status: "${vars.status}", json: {ok: true}}
  above:
    source: {http: {method: POST, path: /above}}
    steps:
      - respond: {json: {above: "${payload.lines[?price > `10`]}"}}
"""


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, backend: BackendServer) -> Iterator[RunningEngine]:
    folder = write_flows(tmp_path_factory.mktemp("request-data"), FLOWS % backend.url)
    with run_engine(folder) as running:
        yield running


def post(engine: RunningEngine, path: str, body: object) -> rawhttp.RawResponse:
    return rawhttp.request(engine.port, path, method="POST", body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})


def test_the_requests_body_of_the_wrong_type_is_a_422_that_says_what_did_not_fit(engine: RunningEngine) -> None:
    problem = rawhttp.assert_problem(post(engine, "/count", {"items": 5}), 422, "request-data-invalid")
    assert problem["title"] == "Request data does not fit the flow"
    assert problem["detail"] == ("the request does not fit this flow in its body: ${length(payload.items)} needs "
                                 "string or array or object for length(), and got number")
    assert post(engine, "/count", {"items": [1, 2]}).json() == {"count": 2}


def chunked(engine: RunningEngine, path: str, body: bytes) -> rawhttp.RawResponse:
    """POST ``body`` with Transfer-Encoding: chunked, in two chunks: a body the front streams."""
    half = len(body) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:])) + b"0\r\n\r\n"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    with rawhttp.connect(engine.port) as sock:
        sock.sendall(head + chunks)
        return rawhttp.read_response(sock)


def test_the_body_is_the_callers_however_it_came_whole_chunked_or_streamed(engine: RunningEngine) -> None:
    # the front's three ways of taking a body (Message.set_request_body): all there, a chunked
    # stream, and one declared larger than the stream threshold (256 KiB)
    assert chunked(engine, "/count", b'{"items": [1, 2]}').json() == {"count": 2}
    rawhttp.assert_problem(chunked(engine, "/count", b'{"items": 5}'), 422, "request-data-invalid")
    large = json.dumps({"items": 5, "padding": "x" * 300_000}).encode()
    answer = rawhttp.request(engine.port, "/count", method="POST", body=large,
                             headers={"Content-Type": "application/json"})
    rawhttp.assert_problem(answer, 422, "request-data-invalid")


def test_a_missing_field_is_the_callers_too(engine: RunningEngine) -> None:
    problem = rawhttp.assert_problem(post(engine, "/count", {"other": 1}), 422, "request-data-invalid")
    assert str(problem["detail"]).endswith("and got nothing (it is missing)")


def test_a_template_mixing_text_and_an_expression_is_a_422_too(engine: RunningEngine) -> None:
    rawhttp.assert_problem(post(engine, "/count-text", {"items": 5}), 422, "request-data-invalid")


def test_the_query_and_a_header_are_the_callers_data(engine: RunningEngine) -> None:
    assert rawhttp.request(engine.port, "/shout?name=ada", headers={"X-Agent": "CLI"}).json() == \
        {"name": "ADA", "agent": "cli"}
    missing_query = rawhttp.assert_problem(rawhttp.request(engine.port, "/shout", headers={"X-Agent": "cli"}),
                                           422, "request-data-invalid")
    assert "in its query string: ${upper(query.name)} needs string for upper()" in str(missing_query["detail"])
    missing_header = rawhttp.assert_problem(rawhttp.request(engine.port, "/shout?name=ada"), 422,
                                            "request-data-invalid")
    assert "in its headers: ${lower(headers.\"x-agent\")}" in str(missing_header["detail"])


def test_a_choice_condition_and_a_filter_condition_on_the_body(engine: RunningEngine) -> None:
    assert post(engine, "/route", {"items": [1, 2, 3]}).body == b"many"
    route = rawhttp.assert_problem(post(engine, "/route", {"items": 5}), 422, "request-data-invalid")
    assert "${length(payload.items) > `2`}" in str(route["detail"])
    assert post(engine, "/sift", {"tags": ["vip"]}).body == b"vip"
    sift = rawhttp.assert_problem(post(engine, "/sift", {"tags": 7}), 422, "request-data-invalid")
    assert "${contains(payload.tags, 'vip')} needs array or string for contains(), and got number" in \
        str(sift["detail"])


def test_the_same_expression_on_a_backends_answer_is_the_flows_500(engine: RunningEngine,
                                                                   backend: BackendServer) -> None:
    # the echo backend answers the very bytes the caller sent: still the backend's answer, not the request
    answer = post(engine, "/count-after-call", {"items": 5})
    problem = rawhttp.assert_problem(answer, 500, "expression-error")
    assert "could not be evaluated" in str(problem["detail"])
    assert backend.requests[-1].body == b'{"items": 5}'
    assert post(engine, "/count-after-call", {"items": [1]}).json() == {"count": 1}


def test_an_expression_over_vars_is_the_flows_500(engine: RunningEngine) -> None:
    rawhttp.assert_problem(post(engine, "/count-vars", {"items": 5}), 500, "expression-error")


def test_a_literal_that_may_be_the_bad_value_keeps_the_500(engine: RunningEngine) -> None:
    # ${length(payload.items || `5`)}: with no items the flow's own `5` reaches length()
    rawhttp.assert_problem(post(engine, "/literal", {}), 500, "expression-error")


def test_the_callers_data_that_python_itself_refuses_is_a_422_not_a_500(engine: RunningEngine) -> None:
    # an empty separator (str.split's ValueError) and mixed keys in max_by/min_by (a TypeError in
    # max()) were 500s with a traceback, where the same data in sort_by was already a 422
    assert post(engine, "/split-by", {"text": "a,b", "separator": ","}).json() == {"parts": ["a", "b"]}
    split = rawhttp.assert_problem(post(engine, "/split-by", {"text": "a,b", "separator": ""}), 422,
                                   "request-data-invalid")
    assert "${split(payload.text, payload.separator)} needs non-empty string for split(), and got empty string" \
        in str(split["detail"])
    lines = [{"price": 3}, {"price": "12"}]
    assert post(engine, "/dearest", {"lines": [{"price": 3}, {"price": 12}]}).json() == \
        {"dearest": {"price": 12}, "cheapest": {"price": 3}}
    dearest = rawhttp.assert_problem(post(engine, "/dearest", {"lines": lines}), 422, "request-data-invalid")
    assert "needs number for max_by(), and got string" in str(dearest["detail"])
    # a string ordered against a number is null (JMESPath's rule, and the compiled comparisons'), not a TypeError
    assert post(engine, "/above", {"lines": [{"price": "x"}, {"price": 12}]}).json() == {"above": [{"price": 12}]}
    assert "Traceback" not in engine.log()


def test_a_status_the_caller_sent_that_is_no_status_is_a_422(engine: RunningEngine) -> None:
    # respond: {status: ${payload.status}} with 99, "abc" or nothing was a 500 expression-error
    assert post(engine, "/answer-as-asked", {"status": 201}).status == 201
    for status in (99, "abc", None):
        problem = rawhttp.assert_problem(post(engine, "/answer-as-asked", {"status": status}), 422,
                                         "request-data-invalid")
        assert "status must be a number from 100 to 599" in str(problem["detail"])
    # through a variable it is the flow's choice, as with any expression over vars
    rawhttp.assert_problem(post(engine, "/answer-as-kept", {"status": 99}), 500, "expression-error")


def test_a_slice_with_step_0_and_a_split_on_nothing_are_load_errors(tmp_path: Path) -> None:
    # both raised a ValueError (a 500) on every message; the flow's own, so found at load
    write_flows(tmp_path, """
    flows:
      every:
        source: {http: {method: POST, path: /every}}
        steps:
          - respond: {json: {every: "${payload.items[::0]}"}}
          - respond: {json: {parts: "${split(payload.text, '')}"}}
    """)
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    assert "flows.yaml:5:25: respond: a slice's step cannot be 0 ([start:stop:step])" in str(caught.value)
    assert "flows.yaml:6:25: respond: split()'s separator cannot be empty" in str(caught.value)


def test_the_callers_mistake_is_logged_at_info_the_flows_as_a_warning(engine: RunningEngine) -> None:
    post(engine, "/count", {"items": "logged-422"})
    post(engine, "/count-vars", {"items": 5})
    text = engine.log_path.read_text(encoding="utf-8")
    caller = [line for line in text.splitlines() if "flow count: 422" in line]
    flows = [line for line in text.splitlines() if "flow count-vars: 500" in line]
    assert caller and all("INFO" in line or '"info"' in line for line in caller), caller
    assert flows and all("WARNING" in line or '"warning"' in line for line in flows), flows
    assert "logged-422" not in text  # the detail names types, never the caller's values


@pytest.mark.anyio
async def test_the_in_process_facade_answers_the_same(tmp_path: Path) -> None:
    write_flows(tmp_path, FLOWS % "http://127.0.0.1:9")
    async with facade_client(tmp_path) as client:
        reply: httpx.Response = await client.post("/count", json={"items": 5})
    assert reply.status_code == 422
    assert reply.json()["type"].endswith("/request-data-invalid")


@pytest.mark.anyio
async def test_a_transform_query_over_the_requests_body_and_over_a_reply(tmp_path: Path) -> None:
    with BackendServer() as backend:
        write_flows(tmp_path, f"""
        endpoints:
          echo: {{http: {{url: "{backend.url}"}}}}
        flows:
          sizes:
            source: {{http: {{method: POST, path: /sizes}}}}
            steps:
              - transform: {{jmespath: "{{count: length(items)}}"}}
          sizes-after-call:
            source: {{http: {{method: POST, path: /sizes-after-call}}}}
            steps:
              - call: {{endpoint: echo, method: POST, path: /echo}}
              - transform: {{jmespath: "{{count: length(items)}}"}}
        """)
        async with facade_client(tmp_path) as client:
            fine = await client.post("/sizes", json={"items": [1, 2]})
            caller = await client.post("/sizes", json={"items": 5})
            reply = await client.post("/sizes-after-call", json={"items": 5})
    assert fine.json() == {"count": 2}
    assert caller.status_code == 422
    assert caller.json()["detail"] == ("the request does not fit this flow in its body: {count: length(items)} needs "
                                       "string or array or object for length(), and got number")
    assert reply.status_code == 500 and reply.json()["type"].endswith("/expression-error")


@pytest.mark.anyio
async def test_a_split_of_the_requests_body_keeps_each_item_the_callers(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    flows:
      lines:
        source: {http: {method: POST, path: /lines}}
        steps:
          - foreach:
              items: ${payload.orders}
              steps: [{payload: {json: {n: "${length(payload.lines)}"}}}]
      lines-each:
        source: {http: {method: POST, path: /lines-each}}
        steps:
          - foreach:
              items: ${payload.orders}
              concurrency: 2
              steps:
                - log: item ${vars.index}
                - payload: {json: {n: "${length(payload.lines)}"}}
      lines-streamed:
        source: {http: {method: POST, path: /lines-streamed}}
        steps:
          - foreach:
              stream: {json: "$.orders[*]"}
              steps: [{payload: {json: {n: "${length(payload.lines)}"}}}]
      lines-of-vars:
        source: {http: {method: POST, path: /lines-of-vars}}
        steps:
          - set: {var: orders, value: "${payload.orders}"}
          - foreach:
              items: ${vars.orders}
              steps: [{payload: {json: {n: "${length(payload.lines)}"}}}]
    """)
    good, bad = {"orders": [{"lines": [1, 2]}]}, {"orders": [{"lines": [1]}, {"lines": 5}]}
    async with facade_client(tmp_path) as client:
        for path in ("/lines", "/lines-each", "/lines-streamed"):
            assert (await client.post(path, json=good)).json() == [{"n": 2}], path
            caller = await client.post(path, json=bad)
            assert caller.status_code == 422, (path, caller.text)
            assert caller.json()["type"].endswith("/request-data-invalid")
        # the same items taken through the flow's variables: the flow chose them
        flows = await client.post("/lines-of-vars", json=bad)
    assert flows.status_code == 500 and flows.json()["type"].endswith("/expression-error")
