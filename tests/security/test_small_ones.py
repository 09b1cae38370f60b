"""Issue 9, item 14: the smaller defects.  HEAD on a GET route answers as GET without a body
(it was 405); a request that is not HTTP gets a problem+json 400 (it was uvicorn's text/plain);
a busy port is one line naming the flag (it was an OSError traceback); a POST with no body
still meets the route's declared request schema (it skipped it), and one with no body where the
route declares only the type it takes is a 400 (it ran the flow on nothing)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import rawhttp
from tests.support.engine import REPO, RunningEngine, run_engine, write_flows
from tests.support.services import free_port

pytestmark = pytest.mark.timeout(60)

FLOWS = """
flows:
  hello:
    source: {http: {method: GET, path: /hello}}
    steps:
      - respond: {headers: {X-Method: "${method}"}, json: {hello: world}}
  item:
    source: {http: {method: GET, path: "/items/{id}"}}
    steps:
      - respond: {json: {id: "${path.id}"}}
  create:
    source:
      http:
        method: POST
        path: /orders
        request:
          content_type: application/json
          schema: {type: object, required: [customer], properties: {customer: {type: string}}}
    steps:
      - respond: {status: 201, json: {created: true}}
  stock:
    source: {http: {method: POST, path: /stock, request: {content_type: text/xml}}}
    steps:
      - respond: {json: {method: "${method}"}}
  stock-gone:
    source: {http: {method: DELETE, path: /stock, request: {content_type: text/xml}}}
    steps:
      - respond: {json: {method: "${method}"}}
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    with run_engine(write_flows(tmp_path_factory.mktemp("small"), FLOWS)) as running:
        yield running


@pytest.mark.parametrize(("which", "flag"), [("facade", "--port"), ("management", "--management-port")])
def test_a_busy_port_is_one_line_naming_the_flag(tmp_path: Path, which: str, flag: str) -> None:
    folder = write_flows(tmp_path, FLOWS)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {"facade": busy, "management": free_port()} if which == "facade" else \
            {"facade": free_port(), "management": busy}
        result = subprocess.run(
            [sys.executable, "-m", "engine.cli", "run", str(folder), "--port", str(ports["facade"]),
             "--management-port", str(ports["management"])], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [f"interlace: cannot listen on 127.0.0.1:{busy}: it is already in use; "
                     f"choose another port with {flag}"], result.stderr


@pytest.mark.parametrize("garbage", [b"NOT HTTP\r\n\r\n", b"GET /hello HTTP/1.1\r\nBad Header\r\n\r\n",
                                     b"GET /hello HTTP/1.1\r\nX: a\x01b\r\n\r\n"])
def test_a_request_that_is_not_http_gets_a_problem(engine: RunningEngine, garbage: bytes) -> None:
    with rawhttp.connect(engine.port) as sock:
        sock.sendall(garbage)
        answer = rawhttp.read_response(sock)
    assert answer.status == 400
    assert answer.header("content-type") == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == 400 and problem["type"].endswith("/bad-request")
    assert problem["detail"].startswith("the request is not valid HTTP/1.1")


@pytest.mark.parametrize("path", ["/hello", "/items/7"])
def test_head_on_a_get_route_answers_as_get_without_a_body(engine: RunningEngine, path: str) -> None:
    get = rawhttp.request(engine.port, path)
    with rawhttp.connect(engine.port) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        raw = rawhttp.read_all(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b""
    (answer,) = rawhttp.parse_responses(raw, head_only=True)
    assert answer.header("content-length") == get.header("content-length") == str(len(get.body))
    assert answer.header("content-type") == get.header("content-type")
    if path == "/hello":
        assert answer.header("x-method") == "GET"  # the flow ran as GET


def test_allow_names_head_with_get(engine: RunningEngine) -> None:
    answer = rawhttp.request(engine.port, "/hello", method="DELETE")
    assert answer.status == 405 and answer.header("allow") == "GET, HEAD"


@pytest.mark.parametrize("headers", [{}, {"Content-Type": "application/json"}])
def test_a_post_with_no_body_meets_the_request_schema(engine: RunningEngine, headers: dict[str, str]) -> None:
    answer = rawhttp.request(engine.port, "/orders", method="POST", headers=headers)
    assert answer.status == 422, answer
    assert answer.header("content-type") == "application/problem+json"
    problem = answer.json()
    assert problem["type"].endswith("/request-invalid") and "no body" in problem["detail"]
    ok = rawhttp.request(engine.port, "/orders", method="POST", body=b'{"customer": "c-1"}',
                         headers={"Content-Type": "application/json"})
    assert ok.status == 201


def test_an_empty_chunked_body_where_the_route_declares_its_type_is_a_400(engine: RunningEngine) -> None:
    """A chunked body of one zero-size chunk is no body either; a chunked body with content runs the flow."""
    def chunked(body: bytes) -> list[rawhttp.RawResponse]:
        chunks = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
        with rawhttp.connect(engine.port) as sock:
            sock.sendall(b"POST /stock HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
                         b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks)
            return rawhttp.parse_responses(rawhttp.read_all(sock))

    [empty] = chunked(b"")
    problem = rawhttp.assert_problem(empty, 400, "missing-body")
    assert problem["detail"] == "this route takes a text/xml body; the request has none"
    [ok] = chunked(b"<stock/>")
    assert ok.status == 200 and ok.json() == {"method": "POST"}


@pytest.mark.parametrize("headers", [{}, {"Content-Type": "text/xml; charset=utf-8"}])
def test_a_post_with_no_body_where_the_route_declares_its_type_is_a_400(engine: RunningEngine,
                                                                         headers: dict[str, str]) -> None:
    answer = rawhttp.request(engine.port, "/stock", method="POST", headers=headers)
    assert answer.status == 400, answer
    assert answer.header("content-type") == "application/problem+json"
    problem = answer.json()
    assert problem["type"].endswith("/missing-body") and problem["title"] == "Missing request body"
    assert problem["detail"] == "this route takes a text/xml body; the request has none"
    ok = rawhttp.request(engine.port, "/stock", method="POST", body=b"<stock/>", headers={"Content-Type": "text/xml"})
    assert ok.status == 200 and ok.json() == {"method": "POST"}
    # a method that takes no body is not asked for one
    assert rawhttp.request(engine.port, "/stock", method="DELETE").json() == {"method": "DELETE"}
