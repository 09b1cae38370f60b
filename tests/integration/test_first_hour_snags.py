"""Snags 4 and 6 of the first hour: what a non-2xx from a backend does by default, json_to_xml
namespaces, and enrich's select naming the corrected expression."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.loader import LoadErrors, load_project
from tests.support.backends import BackendServer
from tests.support.engine import facade_client, write_flows

pytestmark = pytest.mark.anyio


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


def status_flows(folder: Path, backend: BackendServer) -> Path:
    return write_flows(folder, f"""
    endpoints:
      crm: {{http: {{url: "{backend.url}"}}}}
    flows:
      plain-call:
        source: {{http: {{method: GET, path: "/call/{{code}}"}}}}
        steps:
          - call: {{endpoint: crm, method: GET, path: "/status/${{path.code}}"}}
      handled-call:
        source: {{http: {{method: GET, path: "/handled/{{code}}"}}}}
        steps:
          - call: {{endpoint: crm, method: GET, path: "/status/${{path.code}}"}}
        on_error:
          - respond: {{status: 404, json: {{missing: "${{error.backend_status}}", code: "${{error.code}}"}}}}
      proxy-call:
        source: {{http: {{method: GET, path: "/proxy/{{code}}"}}}}
        steps:
          - call: {{endpoint: crm, method: GET, path: "/status/${{path.code}}", expect_status: any}}
      enrich:
        source: {{http: {{method: POST, path: "/enrich/{{code}}"}}}}
        steps:
          - enrich:
              call: {{endpoint: crm, method: POST, path: "/status/${{path.code}}", body: {{name: Ada}}}}
              select: payload.name
              into: $.customer
          - respond: {{}}
      enrich-taking-404:
        source: {{http: {{method: POST, path: "/enrich-404/{{code}}"}}}}
        steps:
          - enrich:
              call: {{endpoint: crm, method: POST, path: "/status/${{path.code}}", body: {{name: Ada}},
                     expect_status: [2xx, 404]}}
              select: "{{name: payload.name, status: status}}"
              into: $.customer
          - respond: {{}}
    """)


async def test_a_non_2xx_from_call_is_an_error_by_default(tmp_path: Path, backend: BackendServer) -> None:
    async with facade_client(status_flows(tmp_path, backend)) as client:
        ok = await client.get("/call/200")
        failed = await client.get("/call/404")
        handled = await client.get("/handled/404")
        proxied = await client.get("/proxy/404")
    assert ok.status_code == 200
    assert failed.status_code == 502 and failed.headers["content-type"] == "application/problem+json"
    assert failed.json()["backend_status"] == 404 and failed.json()["type"].endswith("/backend-status")
    assert handled.status_code == 404 and handled.json() == {"missing": 404, "code": "backend-status"}
    assert proxied.status_code == 404  # expect_status: any passes the backend's answer through


async def test_enrich_fails_on_a_non_2xx_unless_told(tmp_path: Path, backend: BackendServer) -> None:
    async with facade_client(status_flows(tmp_path, backend)) as client:
        merged = await client.post("/enrich/200", json={"id": 1})
        failed = await client.post("/enrich/404", json={"id": 1})
        taken = await client.post("/enrich-404/404", json={"id": 1})
    assert merged.json() == {"id": 1, "customer": "Ada"}
    assert failed.status_code == 502 and failed.json()["backend_status"] == 404
    assert taken.status_code == 200 and taken.json() == {"id": 1, "customer": {"name": "Ada", "status": 404}}


def test_the_reference_documents_the_defaults() -> None:
    from engine.docs import reference

    text = reference()
    assert "A non-2xx reply is an error (backend-status, 502) the flow's on_error can handle" in text
    assert "never merged, unless call.expect_status takes it" in text
    assert "default [2xx]" in text


async def test_json_to_xml_sets_a_namespace(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    namespaces:
      soap: http://schemas.xmlsoap.org/soap/envelope/
      m: http://example.com/stock
    flows:
      quote:
        source: {http: {method: POST, path: /quote}}
        steps:
          - transform: {json_to_xml: {root: getQuote, namespace: "http://example.com/stock", prefix: m}}
      envelope:
        source: {http: {method: POST, path: /envelope}}
        steps:
          - payload: {json: {"soap:Body": {"m:getQuote": {symbol: "${payload.symbol}"}}}}
          - transform: {json_to_xml: {root: "soap:Envelope"}}
      default-ns:
        source: {http: {method: POST, path: /default}}
        steps:
          - transform: {json_to_xml: {root: getQuote, namespace: "http://example.com/stock"}}
    """)
    async with facade_client(tmp_path) as client:
        quote = await client.post("/quote", json={"symbol": "IBM"})
        envelope = await client.post("/envelope", json={"symbol": "IBM"})
        default = await client.post("/default", json={"symbol": "IBM"})
    assert quote.text.endswith('<m:getQuote xmlns:m="http://example.com/stock"><m:symbol>IBM</m:symbol>'
                               '</m:getQuote>')
    assert envelope.text.endswith(
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://example.com/stock">'
        '<soap:Body><m:getQuote><symbol>IBM</symbol></m:getQuote></soap:Body></soap:Envelope>')
    assert default.text.endswith('<getQuote xmlns="http://example.com/stock"><symbol>IBM</symbol></getQuote>')


def test_a_prefix_needs_a_namespace(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    flows:
      quote:
        source: {http: {method: POST, path: /quote}}
        steps:
          - transform: {json_to_xml: {root: getQuote, prefix: m}}
    """)
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    assert "flows.yaml:5:" in str(caught.value) and "prefix goes with namespace" in str(caught.value)


def test_enrich_select_with_a_bare_field_shows_the_corrected_expression(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    endpoints:
      crm: {http: {url: "http://127.0.0.1:9"}}
    flows:
      f:
        source: {http: {method: POST, path: /f}}
        steps:
          - enrich:
              call: {endpoint: crm, path: /c}
              select: "{name: name, tier: tier}"
              into: $.customer
    """)
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    message = str(caught.value)
    assert "flows.yaml:9:" in message
    assert "for a field of the payload write {name: payload.name, tier: payload.tier}" in message


def test_validate_reports_every_error_in_one_pass(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    flows:
      a:
        source: {http: {method: GET, path: /a}}
        steps:
          - respond: {status: ok}
          - respond: {status: 700}
          - respond: {status: "${vars.s}"}
          - sequence: shared
          - call: {endpoint: broken-file-endpoint, path: /x}
      b:
        source: {http: {method: GET, path: /b}}
        steps:
          - tranform: {jmespath: a}
    """)
    write_flows(tmp_path, """
    endpoints:
      broken-file-endpoint: {http: {url: "http://127.0.0.1:9"}}
    sequences:
      shared: [{log: hi}]
    flows:
      c:
        sourc: {http: {method: GET, path: /c}}
        steps: []
    """, name="other.yaml")
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    messages = [f"{e.file.name}:{e.line}:{e.column}: {e.message}" for e in caught.value.errors]
    assert messages[0] == "flows.yaml:5:27: respond: expected an integer or a ${...} expression in status, " \
                          "got the string 'ok'"
    assert messages[1] == "flows.yaml:6:27: respond: 700 is greater than the maximum of 599 in status"
    assert messages[2].startswith("flows.yaml:13:9: unknown step kind 'tranform' (did you mean 'transform'?)")
    assert messages[3] == "other.yaml:6:3: missing required key 'source' in flows.c"
    assert messages[4].startswith("other.yaml:7:5: unknown key 'sourc' in flows.c (did you mean 'source'?)")
    assert len(messages) == 5  # the names the wrong file declares are not "unknown" where they are used
