"""SOAP services in the OpenAPI export: POST PATH with the version's media type and the
SOAPAction header, an example envelope per operation, the faults' statuses, the WSDL linked
and served at GET PATH?wsdl.  What the document says is checked against the serving engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from openapi_spec_validator import validate as validate_openapi

from deploy.openapi import openapi_document
from engine.loader import load_project
from tests.support.engine import REPO, facade_client, write_flows

pytestmark = pytest.mark.anyio

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"


async def test_the_examples_soap_service_is_described_and_answers_as_described() -> None:
    document = openapi_document(load_project(REPO / "flows"))
    validate_openapi(document)  # type: ignore[arg-type]
    service = document["paths"]["/services/stockquote"]
    post = service["post"]
    assert post["operationId"] == "soap-getQuote"
    assert list(post["requestBody"]["content"]) == ["text/xml"]
    assert post["parameters"] == [{
        "name": "SOAPAction", "in": "header", "required": False,
        "description": 'The operation\'s action, quoted, e.g. "http://example.com/stockquote/getQuote"',
        "schema": {"type": "string", "enum": ['"http://example.com/stockquote/getQuote"']}}]
    assert set(post["responses"]) == {"200", "500"}
    assert post["externalDocs"]["url"] == "/services/stockquote?wsdl"
    example = post["requestBody"]["content"]["text/xml"]["examples"]["getQuote"]["value"]
    assert "<getQuote xmlns=\"http://example.com/stockquote\"><symbol>...</symbol></getQuote>" in example
    assert service["get"]["parameters"][0]["name"] == "wsdl"
    assert document["paths"]["/quotes/{symbol}"]["get"]["operationId"] == "quotes-rest"  # the REST facade too

    async with facade_client(REPO / "flows", env={"INVENTORY_DB": "sqlite:///:memory:"}) as client:
        answer = await client.post("/services/stockquote", content=example.replace("...", "SKU-1"),
                                   headers={"content-type": "text/xml",
                                            "soapaction": post["parameters"][0]["schema"]["enum"][0]})
        fault = await client.post("/services/stockquote", content=example.replace("...", "NOPE"),
                                  headers={"content-type": "text/xml"})
        wsdl = await client.get(post["externalDocs"]["url"])
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/xml")
    assert etree.fromstring(answer.content).findtext(".//{http://example.com/stockquote}name") == "anvil"
    assert fault.status_code == 500 and b"Fault" in fault.content
    assert wsdl.status_code == 200 and wsdl.headers["content-type"].startswith(next(iter(
        service["get"]["responses"]["200"]["content"])))
    assert etree.fromstring(wsdl.content).tag == "{http://schemas.xmlsoap.org/wsdl/}definitions"


def test_a_soap12_service_without_a_wsdl_is_described_by_its_operations(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", """
        namespaces:
          a: urn:a
        flows:
          ping:
            description: Answers pong.
            source: {soap: {path: /svc, operation: ping, action: "urn:ping", element: "a:ping", version: "1.2"}}
            steps:
              - respond: {xml: "<a:pong xmlns:a='urn:a'/>"}
          echo:
            source: {soap: {path: /svc, operation: echo, element: "a:echo", version: "1.2"}}
            steps:
              - respond: {json: {said: hi}}
        """)
    document = openapi_document(load_project(folder))
    validate_openapi(document)  # type: ignore[arg-type]
    service = document["paths"]["/svc"]
    assert set(service) == {"post"}  # no WSDL to serve
    post = service["post"]
    assert post["operationId"] == "soap-ping-echo" and "parameters" not in post
    content = post["requestBody"]["content"]["application/soap+xml"]
    assert content["examples"]["ping"] == {
        "summary": "Answers pong.",
        "value": '<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body>'
                 '<ping xmlns="urn:a"/></soap:Body></soap:Envelope>'}
    assert set(post["responses"]) == {"200", "400", "500"}
    assert "ping (action urn:ping); echo" in post["description"]
