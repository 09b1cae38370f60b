"""Envelopes, header blocks and faults as bytes: what the wire carries, read back with lxml."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from lxml import etree

from connectors.soap.envelope import (
    PASSWORD_DIGEST,
    PASSWORD_TEXT,
    SOAP11,
    SOAP12,
    WSA_NS,
    WSSE_NS,
    WSU_NS,
    Addressing,
    EnvelopeWriter,
    Member,
    SoapVersion,
    UsernameToken,
    action_of_content_type,
    element_bytes,
    fault_envelope,
    fault_status,
)
from connectors.soap.replies import MalformedSoapReply, SoapFault, body_content, read_fault, to_json
from connectors.soap.wsdl import WsdlError, load_wsdl
from tests.support.engine import REPO
from tests.support.soap_server import soap_server

NOW = datetime.datetime(2026, 12, 1, 8, 0, 0, tzinfo=datetime.UTC)


def test_versions_put_the_action_where_their_spec_says() -> None:
    assert SOAP11.headers("urn:a") == [("content-type", "text/xml; charset=utf-8"), ("soapaction", '"urn:a"')]
    assert SOAP12.headers("urn:a") == [("content-type", 'application/soap+xml; charset=utf-8; action="urn:a"')]
    assert SOAP11.headers(None)[1] == ("soapaction", '""')  # 1.1 always sends the header
    assert action_of_content_type('application/soap+xml; charset=utf-8; action="urn:a"') == "urn:a"


def test_json_members_are_written_in_schema_order_escaped_repeated_and_null_omitted() -> None:
    shape = {"symbol": Member(), "price": Member(), "tags": Member(many=True)}
    xml = element_bytes("urn:q", "quote", {"tags": ["a", "b<"], "price": 1.0, "note": None, "extra": True,
                                           "symbol": "A&B"}, shape)
    assert xml == (b'<quote xmlns="urn:q"><symbol>A&amp;B</symbol><price>1</price><tags>a</tags><tags>b&lt;</tags>'
                   b"<extra>true</extra></quote>")
    unqualified = element_bytes("urn:q", "quote", {"symbol": "X"}, qualified=False)
    assert unqualified == b'<ns0:quote xmlns:ns0="urn:q"><symbol>X</symbol></ns0:quote>'


def test_a_digest_username_token_follows_the_token_profile() -> None:
    token = UsernameToken("ada", "s3cret", digest=True)
    xml = token.render(SOAP11, now=NOW, nonce=bytes(range(16)))
    root = etree.fromstring(f'<h xmlns:soap="{SOAP11.namespace}">{xml}</h>'.encode())
    password = root.find(f"{{{WSSE_NS}}}Security/{{{WSSE_NS}}}UsernameToken/{{{WSSE_NS}}}Password")
    assert password is not None and password.get("Type") == PASSWORD_DIGEST
    # Base64(SHA-1(nonce + created + password)), computed independently
    assert password.text == "PLSPntX5149t8BU7teouyRpGNvE="
    assert root.findtext(f".//{{{WSU_NS}}}Created") == "2026-12-01T08:00:00Z"
    assert root.findtext(f".//{{{WSU_NS}}}Expires") == "2026-12-01T08:05:00Z"
    assert "s3cret" not in xml and "s3cret" not in repr(token)


def test_an_envelope_carries_security_and_addressing_headers() -> None:
    writer = EnvelopeWriter(SOAP12, security=UsernameToken("ada", "pw", timestamp=False),
                            addressing=Addressing("http://127.0.0.1:1/q"))
    first, second = (etree.fromstring(writer.write(b"<ping xmlns='urn:x'/>", "urn:ping")) for _ in range(2))
    header = first.find(f"{{{SOAP12.namespace}}}Header")
    assert header is not None
    password = header.find(f".//{{{WSSE_NS}}}Password")
    assert password is not None and (password.get("Type"), password.text) == (PASSWORD_TEXT, "pw")
    security = header.find(f"{{{WSSE_NS}}}Security")
    assert security is not None and security.get(f"{{{SOAP12.namespace}}}mustUnderstand") == "true"
    assert header.findtext(f"{{{WSA_NS}}}Action") == "urn:ping"
    assert header.findtext(f"{{{WSA_NS}}}To") == "http://127.0.0.1:1/q"
    assert header.findtext(f"{{{WSA_NS}}}ReplyTo/{{{WSA_NS}}}Address") == f"{WSA_NS}/anonymous"
    ids = [root.findtext(f".//{{{WSA_NS}}}MessageID") for root in (first, second)]
    assert ids[0] != ids[1] and all(i and i.startswith("urn:uuid:") for i in ids)
    assert first.find(f"{{{SOAP12.namespace}}}Body/{{urn:x}}ping") is not None


@pytest.mark.parametrize("version", [SOAP11, SOAP12])
def test_faults_we_write_read_back_with_every_field(version: SoapVersion) -> None:
    v = version
    xml = fault_envelope(v, "Client", "bad <symbol>", subcode=("urn:q", "UnknownSymbol"), actor="urn:svc",
                         detail=b"<?xml version='1.0'?><q:why xmlns:q='urn:q'><q:symbol>X</q:symbol></q:why>")
    with pytest.raises(SoapFault) as caught:
        body_content(xml, "quotes", "getQuote")
    fault = caught.value.fault
    assert fault.version == v.name
    assert fault.code == ("Client.UnknownSymbol" if v is SOAP11 else "Sender")
    assert fault.code_ns == v.namespace
    assert (fault.subcode, fault.subcode_ns) == ((None, None) if v is SOAP11 else ("UnknownSymbol", "urn:q"))
    assert (fault.string, fault.actor, fault.detail) == ("bad <symbol>", "urn:svc", {"why": {"symbol": "X"}})
    assert fault_status(v, "Client") == (500 if v is SOAP11 else 400)
    error = caught.value.as_dict()
    assert error["code"] == "soap-fault" and error["fault"]["string"] == "bad <symbol>"
    assert "bad <symbol>" not in caught.value.detail  # the backend's words stay out of problem bodies


def test_a_fault_written_by_another_stack_is_read_with_its_own_prefixes() -> None:
    xml = (b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><e:Fault>'
           b'<e:Code><e:Value>e:Receiver</e:Value><e:Subcode><e:Value xmlns:m="urn:m">m:Busy</e:Value></e:Subcode>'
           b'</e:Code><e:Reason><e:Text xml:lang="en">later</e:Text></e:Reason><e:Node>urn:n</e:Node>'
           b"<e:Detail>plain words</e:Detail></e:Fault></e:Body></e:Envelope>")
    fault = read_fault(etree.fromstring(xml)[0][0])
    assert (fault.code, fault.subcode, fault.subcode_ns, fault.node, fault.detail) == \
        ("Receiver", "Busy", "urn:m", "urn:n", "plain words")


@pytest.mark.parametrize(("body", "words"), [
    (b"", "an empty body"),
    (b"<html><p>down", "not XML"),
    (b"<quote/>", "not a SOAP envelope (its root is quote)"),
    (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"/>', "without a Body"),
    (b'<!DOCTYPE x [<!ENTITY a "b">]><x/>', "DOCTYPE"),
])
def test_an_answer_that_is_no_envelope_is_a_malformed_reply(body: bytes, words: str) -> None:
    with pytest.raises(MalformedSoapReply) as caught:
        body_content(body, "quotes")
    assert words in caught.value.detail
    assert caught.value.status == 502


def test_answers_read_as_json_with_and_without_the_schemas_types() -> None:
    wsdl = load_wsdl("stockquote.wsdl", REPO / "flows")
    output = wsdl.operation("getQuote").output
    assert output is not None
    element = etree.fromstring(b'<q:r xmlns:q="urn:q" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
                               b"<q:symbol>X</q:symbol><q:price>12.50</q:price><q:qty>7</q:qty><q:tags>a</q:tags>"
                               b'<q:name xsi:nil="true"/></q:r>')
    assert to_json(element, output.shape) == {"symbol": "X", "price": 12.5, "qty": 7, "tags": ["a"], "name": None}
    assert to_json(element) == {"symbol": "X", "price": "12.50", "qty": "7", "tags": "a", "name": None}


def test_a_wsdl_is_read_from_a_url_at_load_and_its_mistakes_are_named(tmp_path: Path) -> None:
    with soap_server() as server:
        wsdl = load_wsdl(f"{server.url}/stockquote.wsdl", tmp_path)
        assert wsdl.address == f"{server.url}/soap11"
        with pytest.raises(WsdlError, match="answered 404"):
            load_wsdl(f"{server.url}/nothing.wsdl", tmp_path)
    operation = wsdl.operation("getQuote")
    assert (operation.action, operation.version, operation.input and operation.input.required()) == \
        ("http://example.com/stockquote/getQuote", SOAP11, ["symbol"])
    with pytest.raises(WsdlError, match=r"no operation 'getquote' \(did you mean 'getQuote'\?\)"):
        wsdl.operation("getquote")
    (tmp_path / "bad.wsdl").write_text("<definitions")
    with pytest.raises(WsdlError, match="not well-formed"):
        load_wsdl("bad.wsdl", tmp_path)
    with pytest.raises(WsdlError, match="no service 'Other'"):
        load_wsdl("stockquote.wsdl", REPO / "flows", service="Other")


RPC_WSDL = """<?xml version="1.0"?>
<definitions name="Calc" targetNamespace="urn:calc" xmlns="http://schemas.xmlsoap.org/wsdl/"
  xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:tns="urn:calc" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <message name="addRequest"><part name="a" type="xsd:int"/><part name="b" type="xsd:int"/></message>
  <message name="addResponse"><part name="sum" type="xsd:int"/></message>
  <portType name="CalcPort"><operation name="add"><input message="tns:addRequest"/>
    <output message="tns:addResponse"/></operation></portType>
  <binding name="CalcBinding" type="tns:CalcPort">
    <soap:binding style="rpc" transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="add"><soap:operation soapAction="urn:calc#add"/>
      <input><soap:body use="literal" namespace="urn:calc"/></input>
      <output><soap:body use="literal" namespace="urn:calc"/></output></operation>
  </binding>
  <service name="Calc"><port name="CalcPort" binding="tns:CalcBinding">
    <soap:address location="http://127.0.0.1:1/calc"/></port></service>
</definitions>
"""


def test_a_soap12_binding_and_an_rpc_binding_are_modelled(tmp_path: Path) -> None:
    text = (REPO / "flows" / "stockquote.wsdl").read_text()
    (tmp_path / "s12.wsdl").write_text(text.replace("http://schemas.xmlsoap.org/wsdl/soap/",
                                                    "http://schemas.xmlsoap.org/wsdl/soap12/"))
    assert load_wsdl("s12.wsdl", tmp_path).operation("getQuote").version is SOAP12
    (tmp_path / "rpc.wsdl").write_text(RPC_WSDL)
    add = load_wsdl("rpc.wsdl", tmp_path).operation("add")
    assert (add.style, add.action, add.input and add.input.required()) == ("rpc", "urn:calc#add", ["a", "b"])
    assert add.input is not None and add.output is not None
    # rpc/literal: the wrapper is in the namespace, its parts are not
    written = element_bytes(add.input.namespace, add.input.name, {"b": 2, "a": 1}, add.input.shape,
                            add.input.qualified)
    assert written == b'<ns0:add xmlns:ns0="urn:calc"><a>1</a><b>2</b></ns0:add>'
    assert to_json(etree.fromstring(b'<c:addResponse xmlns:c="urn:calc"><sum>3</sum></c:addResponse>'),
                   add.output.shape) == {"sum": 3}
