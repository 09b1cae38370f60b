"""Calling SOAP services through soap endpoints, against an independent SOAP server on loopback
(tests/support/soap_server.py): both versions, actions, WS-Security, Basic, WS-Addressing,
faults as ${error.fault}, malformed answers, and the load-time checks against the WSDL."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from engine.loader import LoadErrors, load_project
from tests.support.engine import REPO, facade_client, write_flows
from tests.support.soap_server import ACTION, SOAP12, SoapServer, soap_server

pytestmark = pytest.mark.anyio

WSA = "http://www.w3.org/2005/08/addressing"


@pytest.fixture(scope="module")
def server() -> Iterator[SoapServer]:
    with soap_server() as running:
        yield running


def folder_with(tmp_path: Path, text: str) -> Path:
    folder = write_flows(tmp_path / "flows", text)
    shutil.copy(REPO / "flows" / "stockquote.wsdl", folder / "stockquote.wsdl")
    return folder


def quote_flows(url: str, settings: str = "", call: str = 'body: {symbol: "${path.symbol}"}') -> str:
    return f"""
        endpoints:
          quotes:
            soap:
              url: {url}
              wsdl: stockquote.wsdl
              {settings}
        flows:
          quote:
            source: {{http: {{method: GET, path: "/quotes/{{symbol}}"}}}}
            steps:
              - call: {{endpoint: quotes, operation: getQuote, {call}}}
              - respond: {{status: 200}}
            on_error:
              - filter:
                  if: ${{error.code == 'soap-fault' && starts_with(error.fault.code, 'Client')}}
                  steps:
                    - fail: {{status: 404, code: unknown-symbol,
                              message: "no quote for ${{path.symbol}}: ${{error.fault.string}}"}}
        """


async def test_a_call_by_the_wsdl_answers_json_typed_by_its_schema(server: SoapServer, tmp_path: Path) -> None:
    async with facade_client(folder_with(tmp_path, quote_flows(f"{server.url}/soap11"))) as client:
        reply = await client.get("/quotes/IBM", headers={"x-request-id": "case-7"})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"symbol": "IBM", "name": "Quoted", "price": 12.5, "qty": 7, "tags": ["a", "b"]}
    sent = server.last()
    assert sent.headers["soapaction"] == f'"{ACTION}"'
    assert sent.headers["content-type"] == "text/xml; charset=utf-8"
    assert sent.headers["x-request-id"] == "case-7"
    body = etree.fromstring(sent.body).find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
    assert body is not None and body[0].tag == "{http://example.com/stockquote}getQuote"


async def test_a_soap12_call_with_the_action_parameter_and_an_xml_result(server: SoapServer, tmp_path: Path) -> None:
    flows = f"""
        namespaces:
          q: http://example.com/stockquote
        endpoints:
          quotes12:
            soap: {{url: "{server.url}/soap12", version: "1.2"}}
        flows:
          quote:
            source: {{http: {{method: GET, path: "/quotes/{{symbol}}"}}}}
            steps:
              - call:
                  endpoint: quotes12
                  operation: getQuote
                  action: {ACTION}
                  result: xml
                  xml: <q:getQuote xmlns:q="http://example.com/stockquote"><q:symbol>${{path.symbol}}</q:symbol></q:getQuote>
              - respond: {{json: {{price: "${{xpath('number(//q:price)')}}", tags: "${{xpath('//q:tags/text()')}}"}}}}
        """
    async with facade_client(folder_with(tmp_path, flows)) as client:
        reply = await client.get("/quotes/IBM")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"price": 12.5, "tags": ["a", "b"]}
    sent = server.last()
    assert sent.headers["content-type"] == f'application/soap+xml; charset=utf-8; action="{ACTION}"'
    assert "soapaction" not in sent.headers
    assert etree.fromstring(sent.body).tag == f"{{{SOAP12}}}Envelope"


@pytest.mark.parametrize("digest", [False, True])
async def test_ws_security_username_tokens_are_accepted_by_the_service(server: SoapServer, tmp_path: Path,
                                                                      digest: bool) -> None:
    good = quote_flows(f"{server.url}/secure11", "ws_security: {username: ada, password: '${secret.QUOTES_PASSWORD}', "
                                                 f"digest: {str(digest).lower()}}}")
    async with facade_client(folder_with(tmp_path, good), secrets={"QUOTES_PASSWORD": "s3cret"}) as client:
        reply = await client.get("/quotes/IBM")
    assert reply.status_code == 200, reply.text
    assert (b"#PasswordDigest" in server.last().body) is digest
    async with facade_client(folder_with(tmp_path, good), secrets={"QUOTES_PASSWORD": "wrong"}) as client:
        refused = await client.get("/quotes/IBM")
    # the service's wsse:FailedAuthentication fault is no Client fault: unmapped, a 502 soap-fault problem
    assert refused.status_code == 502
    assert refused.json()["type"].endswith("/soap-fault")
    assert "wrong" not in refused.text


async def test_http_basic_from_secrets_and_a_refusal_without_an_envelope(server: SoapServer, tmp_path: Path) -> None:
    flows = quote_flows(f"{server.url}/basic11", "basic: {username: ada, password: '${secret.QUOTES_PASSWORD}'}")
    async with facade_client(folder_with(tmp_path, flows), secrets={"QUOTES_PASSWORD": "s3cret"}) as client:
        assert (await client.get("/quotes/IBM")).status_code == 200
    async with facade_client(folder_with(tmp_path, flows), secrets={"QUOTES_PASSWORD": "nope"}) as client:
        refused = await client.get("/quotes/IBM")
    assert refused.status_code == 502
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/soap-malformed-reply") and "answered 401" in problem["detail"]
    assert "nope" not in refused.text


async def test_ws_addressing_headers_go_when_asked(server: SoapServer, tmp_path: Path) -> None:
    flows = quote_flows(f"{server.url}/soap11", "addressing: true")
    async with facade_client(folder_with(tmp_path, flows)) as client:
        assert (await client.get("/quotes/IBM")).status_code == 200
    header = etree.fromstring(server.last().body).find("{http://schemas.xmlsoap.org/soap/envelope/}Header")
    assert header is not None
    assert header.findtext(f"{{{WSA}}}Action") == ACTION
    assert header.findtext(f"{{{WSA}}}To") == f"{server.url}/soap11"
    assert (header.findtext(f"{{{WSA}}}MessageID") or "").startswith("urn:uuid:")


@pytest.mark.parametrize("path", ["soap11", "soap12"])
async def test_a_fault_of_each_version_is_mapped_by_error_fault(server: SoapServer, tmp_path: Path, path: str) -> None:
    version = "1.2" if path == "soap12" else "1.1"
    flows = f"""
        endpoints:
          quotes:
            soap: {{url: "{server.url}/{path}", version: "{version}"}}
        flows:
          quote:
            source: {{http: {{method: GET, path: "/quotes/{{symbol}}"}}}}
            steps:
              - call:
                  endpoint: quotes
                  operation: getQuote
                  action: {ACTION}
                  xml: <q:getQuote xmlns:q="http://example.com/stockquote"><q:symbol>${{path.symbol}}</q:symbol></q:getQuote>
            on_error:
              - filter:
                  if: ${{error.code == 'soap-fault' && error.fault.code != 'Server' && error.fault.code != 'Receiver'}}
                  steps:
                    - respond:
                        status: 404
                        json: {{code: "${{error.fault.code}}", subcode: "${{error.fault.subcode}}",
                                string: "${{error.fault.string}}", actor: "${{error.fault.actor}}",
                                hint: "${{error.fault.detail.unknownSymbol.hint}}", version: "${{error.fault.version}}",
                                category: "${{error.category}}"}}
        """
    async with facade_client(folder_with(tmp_path, flows)) as client:
        mapped = await client.get("/quotes/FAULT")
        unmapped = await client.get("/quotes/BOOM")
    assert mapped.status_code == 404, mapped.text
    assert mapped.json() == {"code": "Client" if version == "1.1" else "Sender",
                             "subcode": None if version == "1.1" else "UnknownSymbol",
                             "string": "unknown symbol FAULT", "actor": "urn:quotes", "hint": "try IBM",
                             "version": version, "category": "fault"}
    assert unmapped.status_code == 502
    problem = unmapped.json()
    assert problem["type"].endswith("/soap-fault")
    assert "the quote feed is down" not in problem["detail"]  # the backend's own words stay in ${error.fault}


@pytest.mark.parametrize(("symbol", "words"), [
    ("HTML", "not a SOAP envelope (its root is html)"), ("NOTSOAP", "not a SOAP envelope"),
    ("BROKEN", "not XML"), ("NOBODY", "without a Body"),
])
async def test_a_malformed_answer_is_a_502_problem(server: SoapServer, tmp_path: Path, symbol: str, words: str) -> None:
    async with facade_client(folder_with(tmp_path, quote_flows(f"{server.url}/soap11"))) as client:
        reply = await client.get(f"/quotes/{symbol}")
    assert reply.status_code == 502
    problem = reply.json()
    assert problem["type"].endswith("/soap-malformed-reply") and words in problem["detail"], problem


async def test_the_payload_is_the_body_and_validate_refuses_what_the_schema_does(server: SoapServer,
                                                                                 tmp_path: Path) -> None:
    flows = f"""
        endpoints:
          quotes:
            soap: {{url: "{server.url}/soap11", wsdl: stockquote.wsdl, validate: true}}
        flows:
          quote:
            source: {{http: {{method: POST, path: /quotes}}}}
            steps:
              - call: {{endpoint: quotes, operation: getQuote}}
              - respond: {{status: 200}}
        """
    async with facade_client(folder_with(tmp_path, flows)) as client:
        good = await client.post("/quotes", json={"symbol": "IBM"})
        bad = await client.post("/quotes", json={"ticker": "IBM"})
    assert good.status_code == 200 and good.json()["symbol"] == "IBM"
    assert bad.status_code == 422
    assert "does not match the WSDL's schema" in bad.json()["detail"]


@pytest.mark.parametrize(("call", "line", "column", "words"), [
    ("operation: getQoute, body: {symbol: x}", 8, 45, "has no operation 'getQoute' (did you mean 'getQuote'?)"),
    ("operation: getQuote, body: {sym: x}", 8, 61, "operation 'getQuote' requires symbol"),
    ("operation: getQuote, xml: '<q:getQuote xmlns:q=\"http://example.com/stockquote\"/>'", 8, 60,
     "operation 'getQuote' requires symbol"),
    ("operation: getQuote, xml: '<getQuote/>'", 8, 60, "takes {http://example.com/stockquote}getQuote"),
])
def test_the_wsdl_checks_a_call_at_load_with_its_position(tmp_path: Path, call: str, line: int, column: int,
                                                          words: str) -> None:
    folder = folder_with(tmp_path, f"""
        endpoints:
          quotes:
            soap: {{url: "http://127.0.0.1:9/soap", wsdl: stockquote.wsdl}}
        flows:
          quote:
            source: {{http: {{method: GET, path: /q}}}}
            steps:
              - call: {{endpoint: quotes, {call}}}
        """)
    with pytest.raises(LoadErrors) as caught:
        load_project(folder)
    [error] = caught.value.errors
    assert words in error.message, error.message
    assert (error.line, error.column) == (line, column), str(error)
