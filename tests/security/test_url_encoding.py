"""Issue 9, item 3: values reaching a backend URL are percent-encoded where they land.

A path parameter goes into the call's path as one segment, a query value as a query value;
``${raw(...)}`` is the one way to insert a piece of URL as it is; no value climbs out of the
endpoint's base path.  Requests go over a bare socket so their escapes arrive as written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import rawhttp
from tests.support.backends import BackendServer
from tests.support.engine import RunningEngine, run_engine, write_flows

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def engine(backend: BackendServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    folder = write_flows(tmp_path_factory.mktemp("url-encoding"), f"""
    endpoints:
      backend: {{http: {{url: "{backend.url}/api"}}}}
    flows:
      by-id:
        source: {{http: {{method: GET, path: "/orders/{{id}}"}}}}
        steps:
          - call: {{endpoint: backend, method: GET, path: "/orders/${{path.id}}?view=${{query.view}}"}}
      by-query:
        source: {{http: {{method: GET, path: /search}}}}
        steps:
          - call: {{endpoint: backend, method: GET, path: /search, query: {{q: "${{query.q}}"}}}}
      whole:
        source: {{http: {{method: GET, path: /whole}}}}
        steps:
          - call: {{endpoint: backend, method: GET, path: "${{query.path}}"}}
      id-itself:
        source: {{http: {{method: GET, path: "/ids/{{id}}"}}}}
        steps:
          - respond: {{json: {{id: "${{path.id}}"}}}}
      raw:
        source: {{http: {{method: GET, path: /next}}}}
        steps:
          - call: {{endpoint: backend, method: GET, path: "${{raw(query.page)}}"}}
    """)
    with run_engine(folder) as running:
        yield running


def backend_saw(backend: BackendServer, engine: RunningEngine, target: str) -> str:
    backend.clear()
    answer = rawhttp.request(engine.port, target)
    assert answer.status == 200, answer
    return backend.wait_for_requests(1)[0].path


@pytest.mark.parametrize(("target", "expected"), [
    # the reproduction of the issue: the backend saw /api/orders/1?admin=true&x=1
    ("/orders/1%3Fadmin=true%26x=1", "/api/orders/1%3Fadmin%3Dtrue%26x%3D1?view="),
    ("/orders/a%23b", "/api/orders/a%23b?view="),  # was cut at the '#'
    ("/orders/%E2%82%AC%20x", "/api/orders/%E2%82%AC%20x?view="),
    ("/orders/7?view=a%26admin%3D1%23x", "/api/orders/7?view=a%26admin%3D1%23x"),
    ("/orders/...", "/api/orders/...?view="),  # three dots are a plain name
])
def test_path_and_query_values_are_encoded_where_they_land(backend: BackendServer, engine: RunningEngine,
                                                           target: str, expected: str) -> None:
    assert backend_saw(backend, engine, target) == expected


@pytest.mark.parametrize(("target", "expected"), [
    ("/orders/a%2Fb", "/api/orders/a%2Fb?view="),  # was a 404: the front routed on the decoded /orders/a/b
    ("/orders/a%2fb%2F", "/api/orders/a%2Fb%2F?view="),
    ("/orders/a%252Fb", "/api/orders/a%252Fb?view="),  # an encoded percent stays a percent
    ("/orders/%2F..%2F..%2Fadmin", "/api/orders/%2F..%2F..%2Fadmin?view="),  # one segment: nothing climbs
])
def test_an_encoded_slash_stays_inside_its_path_parameter(backend: BackendServer, engine: RunningEngine,
                                                          target: str, expected: str) -> None:
    assert backend_saw(backend, engine, target) == expected


@pytest.mark.parametrize(("target", "value"), [
    ("/ids/a%2Fb", "a/b"), ("/ids/a%2Fb%25c", "a/b%c"), ("/ids/%2F", "/"), ("/ids/a%20b", "a b"),
])
def test_the_flow_sees_the_decoded_parameter(engine: RunningEngine, target: str, value: str) -> None:
    answer = rawhttp.request(engine.port, target)
    assert answer.status == 200, answer
    assert answer.json() == {"id": value}


def test_an_encoded_slash_does_not_make_a_path_match_another_route(engine: RunningEngine) -> None:
    assert rawhttp.request(engine.port, "/ids/a%2Fb/c").status == 404
    assert rawhttp.request(engine.port, "/search%2Fx").status == 404


def test_query_map_values_are_encoded(backend: BackendServer, engine: RunningEngine) -> None:
    assert backend_saw(backend, engine, "/search?q=a%26b%3Dc") in ("/api/search?q=a%26b%3Dc",)


@pytest.mark.parametrize("segment", ["%2e%2e", "%2E%2E", "..", "%2e", "."])
def test_dot_segments_never_climb_out_of_the_base_path(backend: BackendServer, engine: RunningEngine,
                                                       segment: str) -> None:
    backend.clear()
    answer = rawhttp.request(engine.port, f"/orders/{segment}")
    if answer.status == 404:  # '.' and '..' in the request's own path are resolved by nothing: no route
        return
    assert answer.status == 400, answer
    assert answer.header("content-type") == "application/problem+json"
    assert answer.json()["type"].endswith("/bad-url-value")
    assert backend.requests == []


@pytest.mark.parametrize(("target", "expected"), [
    ("/whole?path=/items/7", "/api/items/7"),  # its slashes stay
    ("/whole?path=/items/7%3Fadmin%3D1%23x", "/api/items/7%3Fadmin%3D1%23x"),  # nothing else does
])
def test_a_path_that_is_one_whole_expression_keeps_its_slashes(backend: BackendServer, engine: RunningEngine,
                                                              target: str, expected: str) -> None:
    assert backend_saw(backend, engine, target) == expected


def test_a_whole_expression_path_cannot_climb(backend: BackendServer, engine: RunningEngine) -> None:
    backend.clear()
    answer = rawhttp.request(engine.port, "/whole?path=/items/../../admin")
    assert answer.status == 400 and answer.json()["type"].endswith("/bad-url-value")
    assert backend.requests == []


def test_raw_inserts_a_piece_of_url_as_it_is(backend: BackendServer, engine: RunningEngine) -> None:
    assert backend_saw(backend, engine, "/next?page=%2Fitems%3Fpage%3D2") == "/api/items?page=2"


def test_raw_still_cannot_climb(backend: BackendServer, engine: RunningEngine) -> None:
    backend.clear()
    answer = rawhttp.request(engine.port, "/next?page=%2F..%2Fadmin")
    assert answer.status == 400 and answer.json()["type"].endswith("/bad-url-value")
    assert backend.requests == []


def test_validate_accepts_raw(tmp_path: Path) -> None:
    from engine.loader import load_project

    folder = write_flows(tmp_path, """
    endpoints:
      b: {http: {url: "http://127.0.0.1:9/api"}}
    flows:
      f:
        source: {http: {method: GET, path: /f}}
        steps:
          - call: {endpoint: b, path: "/x/${raw(vars.rest)}/${path.id}"}
    """)
    assert len(load_project(folder).flows) == 1
