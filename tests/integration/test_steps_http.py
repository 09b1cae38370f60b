"""Each step kind, driven through the facade in-process, against real backends on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.backends import BackendServer
from tests.support.engine import facade_client, write_flows

pytestmark = pytest.mark.anyio
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

SOAP = (b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        b'<order><symbol>IBM</symbol><qty>3</qty></order><order><symbol>MSFT</symbol><qty>1</qty></order>'
        b'</s:Body></s:Envelope>')


async def test_set_log_payload_and_respond(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    flows:
      greet:
        source: {http: {method: POST, path: "/greet/{name}"}}
        steps:
          - set: {var: who, value: "${path.name}"}
          - log: greeting ${vars.who}
          - payload: {json: {hello: "${vars.who}", count: "${payload.count}", tags: ["${query.tag}"]}}
          - set: {path: $.meta.source, value: interlace}
          - remove: {path: $.tags}
          - respond: {status: 201, headers: {X-Who: "${vars.who}"}}
    """)
    async with facade_client(tmp_path) as client:
        reply = await client.post("/greet/ada?tag=x", json={"count": 2})
    assert reply.status_code == 201
    assert reply.headers["x-who"] == "ada"
    assert reply.json() == {"hello": "ada", "count": 2, "meta": {"source": "interlace"}}
    assert reply.headers["content-type"] == "application/json"


async def test_choice_routes_on_json_xml_and_headers(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    flows:
      route:
        source: {http: {method: POST, path: /route}}
        steps:
          - choice:
              when:
                - if: ${headers."x-kind" == 'xml' && xpath('//order[1]/symbol') == 'IBM'}
                  steps: [{respond: {text: xml-ibm}}]
                - if: ${headers."x-kind" == 'json' && payload.orders[0].symbol == 'IBM'}
                  steps: [{respond: {text: json-ibm}}]
              otherwise:
                - respond: {status: 404, text: other}
    """)
    async with facade_client(tmp_path) as client:
        xml = await client.post("/route", content=SOAP, headers={"x-kind": "xml", "content-type": "text/xml"})
        js = await client.post("/route", json={"orders": [{"symbol": "IBM"}]}, headers={"x-kind": "json"})
        other = await client.post("/route", json={"orders": [{"symbol": "X"}]}, headers={"x-kind": "json"})
    assert (xml.status_code, xml.text) == (200, "xml-ibm")
    assert (js.status_code, js.text) == (200, "json-ibm")
    assert (other.status_code, other.text) == (404, "other")


async def test_call_forwards_body_headers_and_correlation_id(tmp_path: Path) -> None:
    with BackendServer() as backend:
        write_flows(tmp_path, f"""
        endpoints:
          backend: {{http: {{url: "{backend.url}"}}}}
        flows:
          proxy:
            source: {{http: {{method: POST, path: /proxy}}}}
            steps:
              - call: {{endpoint: backend, path: /echo, headers: {{X-Extra: "${{query.v}}"}}}}
        """)
        async with facade_client(tmp_path) as client:
            reply = await client.post("/proxy?v=7", content=b'{"a": 1}',
                                      headers={"content-type": "application/json", "x-request-id": "req-123",
                                               "traceparent": TRACEPARENT})
        seen = backend.requests[-1]
    assert reply.status_code == 200
    assert reply.content == b'{"a": 1}'
    assert reply.headers["x-request-id"] == "req-123"
    assert seen.path == "/echo"
    assert seen.headers["x-request-id"] == "req-123"
    assert seen.headers["x-extra"] == "7"
    assert seen.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c")
    assert seen.body == b'{"a": 1}'


async def test_enrich_merges_a_reply_into_the_payload(tmp_path: Path) -> None:
    with BackendServer() as backend:
        write_flows(tmp_path, f"""
        endpoints:
          crm: {{http: {{url: "{backend.url}"}}}}
        flows:
          order:
            source: {{http: {{method: POST, path: /order}}}}
            steps:
              - enrich:
                  call: {{endpoint: crm, method: POST, path: /echo, body: {{name: Ada, tier: gold}}}}
                  select: payload.tier
                  into: $.customer.tier
        """)
        async with facade_client(tmp_path) as client:
            reply = await client.post("/order", json={"id": 1})
    assert reply.json() == {"id": 1, "customer": {"tier": "gold"}}


async def test_enrich_adds_a_reply_as_a_child_or_a_sibling(tmp_path: Path) -> None:
    with BackendServer() as backend:
        write_flows(tmp_path, f"""
        endpoints:
          pricing: {{http: {{url: "{backend.url}"}}}}
        flows:
          order:
            source: {{http: {{method: POST, path: /order}}}}
            steps:
              - enrich:
                  call: {{endpoint: pricing, method: POST, path: /echo, body: {{code: SPRING, percent: 10}}}}
                  into: $.adjustments
                  action: child
              - enrich:
                  call: {{endpoint: pricing, method: POST, path: /echo, body: {{code: LOYAL, percent: 5}}}}
                  into: $.adjustments[0]
                  action: sibling
        """)
        async with facade_client(tmp_path) as client:
            reply = await client.post("/order", json={"id": 1, "adjustments": [{"code": "STAFF", "percent": 20}]})
    assert reply.json() == {"id": 1, "adjustments": [{"code": "STAFF", "percent": 20}, {"code": "LOYAL", "percent": 5},
                                                     {"code": "SPRING", "percent": 10}]}


async def test_fail_and_error_handler_see_error_fields(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    flows:
      guarded:
        source: {http: {method: GET, path: /guarded}}
        steps:
          - fail: {status: 409, message: "conflict on ${query.id}", code: busy}
        on_error:
          - respond:
              status: ${error.status}
              json: {code: "${error.code}", why: "${error.message}"}
      bare:
        source: {http: {method: GET, path: /bare}}
        steps:
          - fail: {status: 418, message: teapot}
    """)
    async with facade_client(tmp_path) as client:
        handled = await client.get("/guarded?id=9")
        bare = await client.get("/bare", headers={"x-request-id": "abc"})
    assert handled.status_code == 409
    assert handled.json() == {"code": "busy", "why": "conflict on 9"}
    assert bare.status_code == 418
    assert bare.headers["content-type"] == "application/problem+json"
    problem = bare.json()
    assert problem["detail"] == "teapot" and problem["status"] == 418 and problem["correlation_id"] == "abc"


async def test_try_catch_and_sequences(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    sequences:
      mark: [{set: {var: marked, value: yes}}]
    flows:
      t:
        source: {http: {method: GET, path: /t}}
        steps:
          - try:
              steps: [{fail: {status: 500, message: boom}}]
              catch: [{set: {var: caught, value: "${error.message}"}}]
              finally: [{sequence: mark}]
          - respond: {json: {caught: "${vars.caught}", marked: "${vars.marked}"}}
    """)
    async with facade_client(tmp_path) as client:
        reply = await client.get("/t")
    assert reply.json() == {"caught": "boom", "marked": "yes"}


async def test_transforms_xslt_jmespath_and_conversions(tmp_path: Path) -> None:
    (tmp_path / "t.xsl").write_text(
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        '<xsl:param name="who"/><xsl:template match="/"><out by="{$who}"><xsl:for-each select="//order">'
        '<s><xsl:value-of select="symbol"/></s></xsl:for-each></out></xsl:template></xsl:stylesheet>')
    write_flows(tmp_path, """
    flows:
      xslt:
        source: {http: {method: POST, path: /xslt}}
        steps:
          - transform: {xslt: t.xsl, params: {who: "${query.who}"}}
      reshape:
        source: {http: {method: POST, path: /reshape}}
        steps:
          - transform: {jmespath: "{names: items[*].name}"}
      to-json:
        source: {http: {method: POST, path: /to-json}}
        steps:
          - transform: {xml_to_json: {strip_namespaces: true, arrays: [order]}}
      to-xml:
        source: {http: {method: POST, path: /to-xml}}
        steps:
          - transform: {json_to_xml: {root: doc}}
    """)
    async with facade_client(tmp_path) as client:
        xslt = await client.post("/xslt?who=me", content=SOAP, headers={"content-type": "application/xml"})
        reshape = await client.post("/reshape", json={"items": [{"name": "a"}, {"name": "b"}]})
        to_json = await client.post("/to-json", content=SOAP, headers={"content-type": "application/xml"})
        to_xml = await client.post("/to-xml", json={"a": "1"})
    assert b'<out by="me"><s>IBM</s><s>MSFT</s></out>' in xslt.content
    assert xslt.headers["content-type"].startswith("application/xml")
    assert reshape.json() == {"names": ["a", "b"]}
    body = to_json.json()
    assert body["Envelope"]["Body"]["order"][0]["symbol"] == "IBM"
    assert b"<doc><a>1</a></doc>" in to_xml.content


async def test_hostile_and_malformed_bodies_get_problem_json(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    flows:
      read:
        source: {http: {method: POST, path: /read, max_body: 1KiB}}
        steps:
          - respond: {json: {seen: "${payload != `null`}"}}
      readx:
        source: {http: {method: POST, path: /readx}}
        steps:
          - respond: {text: "${xpath('string(/a)')}"}
    """)
    billion = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
               b"<a>&b;</a>")
    xxe = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
    async with facade_client(tmp_path) as client:
        bad_json = await client.post("/read", content=b'{"a": ', headers={"content-type": "application/json"})
        too_big = await client.post("/read", content=b"x" * 2048, headers={"content-type": "application/json"})
        laughs = await client.post("/readx", content=billion, headers={"content-type": "application/xml"})
        external = await client.post("/readx", content=xxe, headers={"content-type": "application/xml"})
        unknown = await client.post("/nowhere")
        wrong_method = await client.get("/read")
    for reply, status in ((bad_json, 400), (too_big, 413), (laughs, 400), (external, 400), (unknown, 404),
                          (wrong_method, 405)):
        assert reply.status_code == status, reply.text
        assert reply.headers["content-type"] == "application/problem+json"
        assert reply.json()["status"] == status
    assert "root:" not in external.text
    assert wrong_method.headers["allow"] == "POST"
