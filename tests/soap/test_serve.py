"""Flows serving SOAP: envelopes and faults of both versions, routing, ?wsdl, and zeep (a real
SOAP client) calling the service by its WSDL over a real socket."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from lxml import etree

from engine.loader import LoadErrors, load_project
from tests.support.engine import REPO, facade_client, run_engine, write_flows

pytestmark = pytest.mark.anyio

WSDL = REPO / "flows" / "stockquote.wsdl"
Q = "http://example.com/stockquote"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
ACTION = "http://example.com/stockquote/getQuote"

SERVICE = """
namespaces:
  q: http://example.com/stockquote
flows:
  get-quote:
    source:
      soap: {path: /services/stockquote, wsdl: stockquote.wsdl, operation: getQuote, validate: true}
    steps:
      - set: {var: symbol, value: "${xpath('string(//q:symbol)')}"}
      - filter:
          if: ${vars.symbol == 'BOOM'}
          steps:
            - fail: {message: the quote feed is down, status: 503}
      - filter:
          if: ${vars.symbol != 'IBM'}
          steps:
            - soap_fault:
                code: Client
                subcode: q:UnknownSymbol
                string: unknown symbol ${vars.symbol}
                actor: urn:stockquote
                detail: <q:unknownSymbol xmlns:q="http://example.com/stockquote"><q:symbol>${vars.symbol}</q:symbol></q:unknownSymbol>
      - respond:
          json: {qty: 3, price: 12.5, name: International Business Machines, symbol: "${vars.symbol}",
                 tags: [blue, chip]}
"""


def service_folder(tmp_path: Path, text: str = SERVICE) -> Path:
    folder = write_flows(tmp_path / "flows", text)
    shutil.copy(WSDL, folder / "stockquote.wsdl")
    return folder


def envelope(symbol: str, ns: str = SOAP11) -> str:
    return (f'<s:Envelope xmlns:s="{ns}"><s:Body><getQuote xmlns="{Q}"><symbol>{symbol}</symbol></getQuote>'
            "</s:Body></s:Envelope>")


def body_of(text: str, ns: str = SOAP11) -> etree._Element:
    root = etree.fromstring(text.encode())
    assert root.tag == f"{{{ns}}}Envelope"
    body = root.find(f"{{{ns}}}Body")
    assert body is not None
    return body[0]


async def test_an_answer_in_json_is_written_as_the_output_element_in_schema_order(tmp_path: Path) -> None:
    async with facade_client(service_folder(tmp_path)) as client:
        reply = await client.post("/services/stockquote", content=envelope("IBM"),
                                  headers={"content-type": "text/xml; charset=utf-8", "soapaction": f'"{ACTION}"'})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/xml; charset=utf-8"
    answer = body_of(reply.text)
    assert answer.tag == f"{{{Q}}}getQuoteResponse"
    assert [etree.QName(c).localname for c in answer] == ["symbol", "name", "price", "qty", "tags", "tags"]
    assert answer.findtext(f"{{{Q}}}price") == "12.5"


async def test_a_soap_fault_step_answers_a_fault_of_the_request_version(tmp_path: Path) -> None:
    async with facade_client(service_folder(tmp_path)) as client:
        v11 = await client.post("/services/stockquote", content=envelope("XYZ"),
                                headers={"content-type": "text/xml", "soapaction": f'"{ACTION}"'})
        v12 = await client.post("/services/stockquote", content=envelope("XYZ", SOAP12),
                                headers={"content-type": f'application/soap+xml; action="{ACTION}"'})
    assert v11.status_code == 500  # SOAP 1.1: every fault is a 500
    fault = body_of(v11.text)
    assert fault.findtext("faultcode") == "soap:Client.UnknownSymbol"
    assert fault.findtext("faultstring") == "unknown symbol XYZ"
    assert fault.findtext("faultactor") == "urn:stockquote"
    assert fault.findtext(f"detail/{{{Q}}}unknownSymbol/{{{Q}}}symbol") == "XYZ"

    assert v12.status_code == 400  # SOAP 1.2: a Sender fault is a 400
    assert v12.headers["content-type"].startswith("application/soap+xml")
    fault = body_of(v12.text, SOAP12)
    ns = f"{{{SOAP12}}}"
    assert fault.findtext(f"{ns}Code/{ns}Value") == "soap:Sender"
    sub = fault.find(f"{ns}Code/{ns}Subcode/{ns}Value")
    assert sub is not None and sub.text is not None and sub.nsmap[sub.text.split(":")[0]] == Q
    assert fault.findtext(f"{ns}Reason/{ns}Text") == "unknown symbol XYZ"
    assert fault.findtext(f"{ns}Role") == "urn:stockquote"
    assert fault.findtext(f"{ns}Detail/{{{Q}}}unknownSymbol/{{{Q}}}symbol") == "XYZ"


async def test_a_flow_error_is_a_server_fault_and_bad_requests_are_client_faults(tmp_path: Path) -> None:
    async with facade_client(service_folder(tmp_path)) as client:
        boom = await client.post("/services/stockquote", content=envelope("BOOM", SOAP12),
                                 headers={"content-type": "application/soap+xml"})
        malformed = await client.post("/services/stockquote", content="<s:Envelope",
                                      headers={"content-type": "text/xml"})
        not_soap = await client.post("/services/stockquote", content=f'<getQuote xmlns="{Q}"/>',
                                     headers={"content-type": "text/xml"})
        invalid = await client.post("/services/stockquote", content=envelope("IBM").replace("symbol>", "sym>"),
                                    headers={"content-type": "text/xml"})
        mismatch = await client.post("/services/stockquote", content=envelope("IBM", SOAP12),
                                     headers={"content-type": "text/xml"})
        must = await client.post(
            "/services/stockquote", headers={"content-type": "text/xml"},
            content=envelope("IBM").replace("<s:Body>", '<s:Header><t:tx xmlns:t="urn:tx" s:mustUnderstand="1"/>'
                                                        "</s:Header><s:Body>"))
        wrong_media = await client.post("/services/stockquote", content=envelope("IBM"),
                                        headers={"content-type": "application/json"})
    ns = f"{{{SOAP12}}}"
    assert boom.status_code == 500
    assert body_of(boom.text, SOAP12).findtext(f"{ns}Code/{ns}Value") == "soap:Receiver"
    assert body_of(boom.text, SOAP12).findtext(f"{ns}Reason/{ns}Text") == "the quote feed is down"
    cases = {"malformed": (malformed, "soap:Client", "not well-formed XML"),
             "not soap": (not_soap, "soap:Client", "not a SOAP envelope"),
             "invalid": (invalid, "soap:Client", "does not match the WSDL's schema"),
             "version": (mismatch, "soap:VersionMismatch", "SOAP 1.2 envelope sent as text/xml"),
             "must understand": (must, "soap:MustUnderstand", "{urn:tx}tx must be understood"),
             "media type": (wrong_media, "soap:Client", "not application/json")}
    for name, (reply, code, words) in cases.items():
        assert reply.status_code == 500, name
        fault = body_of(reply.text)
        assert fault.findtext("faultcode") == code, name
        assert words in (fault.findtext("faultstring") or ""), (name, fault.findtext("faultstring"))


async def test_requests_are_routed_by_action_else_by_the_body_element(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", """
        namespaces:
          a: urn:a
        flows:
          ping:
            source: {soap: {path: /svc, operation: ping, action: "urn:ping", element: "a:ping"}}
            steps:
              - respond: {xml: "<a:pong xmlns:a='urn:a'>${vars.soap.operation} ${vars.soap.action}</a:pong>"}
          echo:
            source: {soap: {path: /svc, operation: echo, element: "a:echo"}}
            steps:
              - respond: {json: {said: "${xpath('string(//a:text)')}", version: "${vars.soap.version}"}}
        """)
    async with facade_client(folder) as client:
        by_action = await client.post("/svc", headers={"content-type": "text/xml", "soapaction": '"urn:ping"'},
                                      content=f'<s:Envelope xmlns:s="{SOAP11}"><s:Body/></s:Envelope>')
        by_element = await client.post("/svc", headers={"content-type": "application/soap+xml"},
                                       content=f'<s:Envelope xmlns:s="{SOAP12}"><s:Body><echo xmlns="urn:a">'
                                               "<text>hi</text></echo></s:Body></s:Envelope>")
        unknown = await client.post("/svc", headers={"content-type": "text/xml"},
                                    content=f'<s:Envelope xmlns:s="{SOAP11}"><s:Body><other/></s:Body></s:Envelope>')
        no_wsdl = await client.get("/svc?wsdl")
    assert body_of(by_action.text).text == "ping urn:ping"
    answer = body_of(by_element.text, SOAP12)
    assert answer.tag == "{urn:a}echoResponse"
    assert answer.findtext("{urn:a}said") == "hi" and answer.findtext("{urn:a}version") == "1.2"
    assert "no operation of this service takes other" in (body_of(unknown.text).findtext("faultstring") or "")
    assert no_wsdl.status_code == 404


async def test_the_wsdl_is_served_with_the_address_it_was_asked_on(tmp_path: Path) -> None:
    async with facade_client(service_folder(tmp_path)) as client:
        reply = await client.get("/services/stockquote?wsdl", headers={"host": "quotes.example:8443",
                                                                        "x-forwarded-proto": "https"})
    assert reply.status_code == 200
    address = etree.fromstring(reply.content).find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert address is not None and address.get("location") == "https://quotes.example:8443/services/stockquote"


def test_zeep_calls_the_served_operation_by_its_wsdl(tmp_path: Path) -> None:
    import zeep
    import zeep.exceptions

    with run_engine(service_folder(tmp_path), log_dir=tmp_path) as engine:
        client = zeep.Client(f"{engine.url}/services/stockquote?wsdl")
        quote = client.service.getQuote(symbol="IBM")
        assert (quote.symbol, quote.name, float(quote.price), quote.qty, quote.tags) == \
            ("IBM", "International Business Machines", 12.5, 3, ["blue", "chip"])
        with pytest.raises(zeep.exceptions.Fault) as caught:
            client.service.getQuote(symbol="NOPE")
        assert caught.value.code == "soap:Client.UnknownSymbol"
        assert caught.value.message == "unknown symbol NOPE"
        assert caught.value.detail is not None
        assert caught.value.detail.findtext(f"{{{Q}}}unknownSymbol/{{{Q}}}symbol") == "NOPE"
        # the same service, called by hand without a SOAPAction: routed by the Body's element
        reply = httpx.post(f"{engine.url}/services/stockquote", content=envelope("IBM"),
                           headers={"content-type": "text/xml"})
        assert reply.status_code == 200 and body_of(reply.text).findtext(f"{{{Q}}}symbol") == "IBM"
        listed = httpx.get(f"{engine.management_url}/flows").json()["flows"]
        assert {"name": "get-quote", "path": "/services/stockquote", "methods": ["POST"],
                "soap_operation": "getQuote"}.items() <= listed[0].items()


@pytest.mark.parametrize(("source", "line", "column", "words"), [
    ("{path: /svc, wsdl: stockquote.wsdl, operation: getQoute}", 4, 60,
     "has no operation 'getQoute' (did you mean 'getQuote'?)"),
    ("{path: /svc, wsdl: missing.wsdl, operation: getQuote}", 4, 32, "no WSDL file 'missing.wsdl'"),
    ('{path: /svc, operation: ping, element: "x:ping"}', 4, 52, "the prefix 'x' of 'x:ping' is not declared"),
    ("{path: /svc, operation: ping, validate: true}", 4, 53, "validate needs a wsdl"),
])
def test_a_served_operation_the_wsdl_does_not_have_is_a_positioned_load_error(
        tmp_path: Path, source: str, line: int, column: int, words: str) -> None:
    folder = service_folder(tmp_path, f"""
        flows:
          quote:
            source:
              soap: {source}
            steps:
              - respond: {{json: {{}}}}
        """)
    with pytest.raises(LoadErrors) as caught:
        load_project(folder)
    [error] = caught.value.errors
    assert (error.file.name, error.line, error.column) == ("flows.yaml", line, column), str(error)
    assert words in error.message


def test_a_soap_path_that_an_http_flow_serves_is_a_load_error(tmp_path: Path) -> None:
    folder = service_folder(tmp_path, """
        flows:
          quote:
            source: {soap: {path: /svc, operation: ping}}
            steps: [{respond: {json: {}}}]
          page:
            source: {http: {method: GET, path: /svc}}
            steps: [{respond: {json: {}}}]
        """)
    with pytest.raises(LoadErrors) as caught:
        load_project(folder)
    assert "takes GET on its path, and flow 'page'" in str(caught.value)


def test_a_served_operation_can_require_a_username_token_zeep_sends(tmp_path: Path) -> None:
    import zeep
    import zeep.exceptions
    from zeep.wsse.username import UsernameToken

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "QUOTES_PASSWORD").write_text("s3cret")
    folder = service_folder(tmp_path, SERVICE.replace(
        "validate: true}", "validate: true,\n              ws_security: {username: ada, password: "
                           "'${secret.QUOTES_PASSWORD}'}}"))
    with run_engine(folder, log_dir=tmp_path, env={"INTERLACE_SECRETS_DIR": str(secrets)}) as engine:
        url = f"{engine.url}/services/stockquote?wsdl"
        for digest in (False, True):
            client = zeep.Client(url, wsse=UsernameToken("ada", "s3cret", use_digest=digest))
            assert client.service.getQuote(symbol="IBM").symbol == "IBM"
        for wsse in (UsernameToken("ada", "wrong", use_digest=True), UsernameToken("eve", "s3cret"), None):
            with pytest.raises(zeep.exceptions.Fault) as caught:
                zeep.Client(url, wsse=wsse).service.getQuote(symbol="IBM")
            assert caught.value.code == "soap:Client.FailedAuthentication"
        assert "s3cret" not in engine.log()


def test_a_digest_token_is_refused_when_replayed_or_stale() -> None:
    import datetime

    from connectors.soap.envelope import SOAP11 as V11
    from connectors.soap.envelope import EnvelopeWriter, UsernameToken
    from connectors.soap.service import TokenCheck, _ClientFault

    check = TokenCheck("ada", "s3cret")

    def envelope_with(token_xml: str) -> etree._Element:
        return etree.fromstring(EnvelopeWriter(V11, header_xml=token_xml).write(b"<ping/>"))

    now = datetime.datetime.now(datetime.UTC)
    fresh = envelope_with(UsernameToken("ada", "s3cret", digest=True).render(V11, now=now, nonce=b"n" * 16))
    check.check(fresh, V11)
    for root, words in [(fresh, "nonce was used already"),
                        (envelope_with(UsernameToken("ada", "s3cret", digest=True).render(
                            V11, now=now - datetime.timedelta(minutes=10))), "created too long ago"),
                        (envelope_with(""), "no WS-Security UsernameToken")]:
        with pytest.raises(_ClientFault, match=words):
            check.check(root, V11)
    assert "s3cret" not in repr(check)
