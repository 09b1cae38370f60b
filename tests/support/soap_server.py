"""A small SOAP service of its own (stdlib HTTP server, lxml), independent of the engine.

It answers a stock-quote ``getQuote(symbol)`` in SOAP 1.1 on ``/soap11`` and in SOAP 1.2 on
``/soap12``, and checks what a real service checks:

- the action: the SOAPAction header (1.1) or the Content-Type's action parameter (1.2) must be
  ``http://example.com/stockquote/getQuote``, else a Client/Sender fault;
- ``/secure11``: a WS-Security UsernameToken for user ``ada`` / password ``s3cret``, as text or
  as a digest (recomputed here from the nonce and creation time), else a
  ``wsse:FailedAuthentication`` fault;
- ``/basic11``: HTTP Basic ``ada:s3cret``, else 401 with an HTML page.

The symbol chooses the answer: ``FAULT`` a Client/Sender fault with a detail, ``BOOM`` a
Server/Receiver fault, ``HTML`` a 200 HTML page, ``NOTSOAP`` plain XML, ``BROKEN`` truncated
XML, ``NOBODY`` an envelope without a Body; anything else a quote (price 12.5, qty 7).
``GET /stockquote.wsdl`` serves flows/stockquote.wsdl with its address set to ``/soap11``.
Every request is recorded (``server.requests``) for the tests to inspect.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lxml import etree

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
QUOTE_NS = "http://example.com/stockquote"
ACTION = "http://example.com/stockquote/getQuote"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
USER, PASSWORD = "ada", "s3cret"


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class SoapServer:
    url: str
    requests: list[Recorded] = field(default_factory=list)

    def last(self) -> Recorded:
        return self.requests[-1]


def _envelope(ns: str, body: str) -> bytes:
    return f'<?xml version="1.0"?><env:Envelope xmlns:env="{ns}"><env:Body>{body}</env:Body></env:Envelope>'.encode()


def _fault(ns: str, client: bool, text: str, detail: str = "", subcode: str = "") -> bytes:
    if ns == SOAP11:
        code = subcode if subcode else "env:Client" if client else "env:Server"
        detail_xml = f"<detail>{detail}</detail>" if detail else ""
        return _envelope(ns, f"<env:Fault><faultcode>{code}</faultcode><faultstring>{text}</faultstring>"
                             f"<faultactor>urn:quotes</faultactor>{detail_xml}</env:Fault>")
    sub = f"<env:Subcode><env:Value>{subcode}</env:Value></env:Subcode>" if subcode else ""
    detail_xml = f"<env:Detail>{detail}</env:Detail>" if detail else ""
    return _envelope(ns, f"<env:Fault><env:Code><env:Value>{'env:Sender' if client else 'env:Receiver'}</env:Value>"
                         f"{sub}</env:Code><env:Reason><env:Text xml:lang='en'>{text}</env:Text></env:Reason>"
                         f"<env:Role>urn:quotes</env:Role>{detail_xml}</env:Fault>")


def _token_ok(root: etree._Element, ns: str) -> bool:
    token = root.find(f"{{{ns}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
    if token is None or token.findtext(f"{{{WSSE}}}Username") != USER:
        return False
    password = token.find(f"{{{WSSE}}}Password")
    if password is None:
        return False
    if password.get("Type") == DIGEST:
        nonce = base64.b64decode(token.findtext(f"{{{WSSE}}}Nonce") or "")
        created = token.findtext(f"{{{WSU}}}Created") or ""
        expected = base64.b64encode(hashlib.sha1(nonce + created.encode() + PASSWORD.encode()).digest()).decode()
        return password.text == expected
    return password.text == PASSWORD


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path != "/stockquote.wsdl":
            self._send(404, b"not here", "text/plain")
            return
        text = (Path(__file__).resolve().parents[2] / "flows" / "stockquote.wsdl").read_text()
        address = f"http://127.0.0.1:{self.server.server_address[1]}/soap11"
        self._send(200, text.replace("http://127.0.0.1:8290/services/stockquote", address).encode(), "text/xml")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.record.requests.append(Recorded(self.path, headers, body))
        ns = SOAP12 if self.path == "/soap12" else SOAP11
        content_type = "application/soap+xml; charset=utf-8" if ns == SOAP12 else "text/xml; charset=utf-8"
        fault_status = 500
        if self.path == "/basic11":
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if headers.get("authorization") != expected:
                self._send(401, b"<html><body>401 Unauthorized</body></html>", "text/html")
                return
        if ns == SOAP11:
            action = headers.get("soapaction", "").strip('"')
            media_ok = headers.get("content-type", "").startswith("text/xml")
        else:
            ct = headers.get("content-type", "")
            action = ct.split('action="', 1)[1].split('"', 1)[0] if 'action="' in ct else ""
            media_ok = ct.startswith("application/soap+xml")
            fault_status = 400
        if not media_ok or action != ACTION:
            self._send(fault_status, _fault(ns, True, f"wrong action {action!r} or media type"), content_type)
            return
        try:
            root = etree.fromstring(body)
        except etree.XMLSyntaxError:
            self._send(fault_status, _fault(ns, True, "not XML"), content_type)
            return
        if self.path == "/secure11" and not _token_ok(root, ns):
            self._send(500, _fault(ns, True, "the security token could not be authenticated",
                                   subcode="wsse:FailedAuthentication").replace(
                b"<env:Fault>", f'<env:Fault xmlns:wsse="{WSSE}">'.encode()), content_type)
            return
        symbol = root.findtext(f".//{{{QUOTE_NS}}}symbol") or ""
        self._answer(ns, symbol, content_type, fault_status)

    def _answer(self, ns: str, symbol: str, content_type: str, fault_status: int) -> None:
        if symbol == "FAULT":
            detail = f'<q:unknownSymbol xmlns:q="{QUOTE_NS}"><q:symbol>FAULT</q:symbol><q:hint>try IBM</q:hint>' \
                     "</q:unknownSymbol>"
            self._send(fault_status, _fault(ns, True, "unknown symbol FAULT", detail,
                                            subcode="q:UnknownSymbol" if ns == SOAP12 else "").replace(
                b"<env:Fault>", f'<env:Fault xmlns:q="{QUOTE_NS}">'.encode()), content_type)
        elif symbol == "BOOM":
            self._send(500, _fault(ns, False, "the quote feed is down"), content_type)
        elif symbol == "HTML":
            self._send(200, b"<html><body>maintenance</body></html>", "text/html")
        elif symbol == "NOTSOAP":
            self._send(200, b"<quote><price>1</price></quote>", "text/xml")
        elif symbol == "BROKEN":
            self._send(200, _envelope(ns, "<q:getQuoteResponse")[:60], content_type)
        elif symbol == "NOBODY":
            self._send(200, f'<env:Envelope xmlns:env="{ns}"/>'.encode(), content_type)
        else:
            self._send(200, _envelope(ns, f'<q:getQuoteResponse xmlns:q="{QUOTE_NS}"><q:symbol>{symbol}</q:symbol>'
                                          "<q:name>Quoted</q:name><q:price>12.5</q:price><q:qty>7</q:qty>"
                                          "<q:tags>a</q:tags><q:tags>b</q:tags></q:getQuoteResponse>"), content_type)


@contextmanager
def soap_server() -> Iterator[SoapServer]:
    """The service on a free loopback port, in a thread, for the length of the block."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    record = SoapServer(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.record = record  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
