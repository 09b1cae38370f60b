"""Serving SOAP: flows whose source is ``soap:`` answer operations of one service per path.

::

    flows:
      get-quote:
        source:
          soap: {path: /services/stockquote, wsdl: stockquote.wsdl, operation: getQuote}
        steps:
          - respond: {json: {symbol: "${xpath('string(//q:symbol)')}", price: 12.5}}

All flows on one path form a ``SoapService``.  A POST is routed to a flow by its action (the
SOAPAction header in 1.1, the Content-Type's action parameter in 1.2), else by the qualified
name of the Body's first element, else to the only flow.  The flow sees that element as its
XML payload (``xpath()`` reads it) and ``${vars.soap}`` = ``{operation, action, version}``.

What the flow answers is wrapped in an envelope of the request's version: an XML payload as
the Body's content (an envelope it wrote itself goes out as it is); a JSON payload as the
operation's output element, members in the order of the WSDL's schema (without a WSDL,
``<operationResponse>`` in the request element's namespace).  Every failure answers a Fault:
a malformed envelope, an unknown operation, a request the schema refuses (with ``validate``)
and a header marked mustUnderstand that nobody here understands are the client's (Client or
Sender); an error of the flow is the server's, unless it was a 4xx; a ``soap_fault`` step says
its own code, subcode, string, actor and detail.  HTTP status: 500 in 1.1, 400 or 500 in 1.2.
``GET PATH?wsdl`` answers the WSDL with its soap:address set to the address it was asked on.
"""

from __future__ import annotations

import base64
import datetime
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn

from lxml import etree

from connectors.soap.envelope import (
    PASSWORD_DIGEST,
    PASSWORD_TEXT,
    SOAP11,
    SOAP12,
    VERSIONS,
    WSSE_NS,
    WSU_NS,
    EnvelopeWriter,
    SoapVersion,
    action_of_content_type,
    element_bytes,
    fault_envelope,
    fault_status,
    password_digest,
    strip_declaration,
    version_of_content_type,
)
from connectors.soap.replies import RaisedSoapFault, SoapFault
from connectors.soap.wsdl import Operation, Wsdl
from engine.errors import FlowError
from engine.message import JSON, XML, Message
from engine.model import HttpSource
from engine.xmlsafe import XmlRefused, parse_document, serialize_xml

log = logging.getLogger("interlace.soap")

WSDL_SOAP11_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
WSDL_SOAP12_NS = "http://schemas.xmlsoap.org/wsdl/soap12/"
# header blocks the engine reads itself or that a gateway in front has dealt with
_UNDERSTOOD = frozenset({"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
                         "http://www.w3.org/2005/08/addressing"})
_WSDL_CACHE_HOSTS = 16
_WRITERS = {name: EnvelopeWriter(version) for name, version in VERSIONS.items()}

SOURCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path", "operation"],
    "description": "Serve a SOAP operation on the facade port: POST PATH with a SOAP 1.1 or 1.2 envelope, "
                   "GET PATH?wsdl for the WSDL. The flows on one path are one service, routed by the action "
                   "(SOAPAction, or the 1.2 action parameter) or the Body's first element. The flow's payload is "
                   "that element; its answer (XML, or JSON written as the operation's output element) goes back "
                   "in an envelope, and any failure as a SOAP Fault.",
    "properties": {
        "path": {"type": "string", "pattern": "^/", "description": "The service's path, e.g. /services/stockquote."},
        "operation": {"type": "string", "minLength": 1,
                      "description": "The operation this flow answers; with a WSDL, one of its operations."},
        "wsdl": {"type": "string", "minLength": 1,
                 "description": "The service's WSDL, a file beside the flow file or an http(s) URL read at load: "
                                "it gives each operation's action, elements and SOAP version, and is served at "
                                "PATH?wsdl. Flows on one path give the same WSDL."},
        "service": {"type": "string", "description": "The WSDL service to serve (default: its first)."},
        "port": {"type": "string", "description": "The WSDL port to serve (default: the service's first SOAP port)."},
        "action": {"type": "string",
                   "description": "The action routed to this flow (default: the WSDL operation's soapAction)."},
        "element": {"type": "string",
                    "description": "The Body's first element routed to this flow, as prefix:name with a prefix "
                                   "from namespaces (default: the WSDL operation's input element)."},
        "version": {"enum": ["1.1", "1.2"],
                    "description": "The SOAP version of faults for requests whose version cannot be told "
                                   "(default: the WSDL binding's, else 1.1). Requests of either version are "
                                   "answered in their own."},
        "validate": {"type": "boolean",
                     "description": "Check the request's element against the WSDL's XML Schema; a mismatch is "
                                    "a Client (1.2: Sender) fault naming what is wrong (default false)."},
        "ws_security": {
            "type": "object", "additionalProperties": False, "required": ["username", "password"],
            "description": "Require a WS-Security UsernameToken of this user in every request, its password as "
                           "text or as a digest (created within 5 minutes, its nonce not seen before by this "
                           "process); anything else is a Client (Sender) fault FailedAuthentication.",
            "properties": {"username": {"type": "string", "description": "The user name."},
                           "password": {"type": "string",
                                        "description": "The password, from ${secret.*} (never logged)."}},
        },
        "max_body": {"type": ["string", "integer"],
                     "description": "Largest request body accepted, bytes or e.g. 1MiB (413 beyond it)."},
    },
}


class ServedOperation:
    """One flow of a service, with what routes to it and how its answers are written."""

    def __init__(self, name: str, flow: Any, *, action: str | None, element: str | None,
                 operation: Operation | None, validate: bool, security: TokenCheck | None = None) -> None:
        self.name = name
        self.security = security
        self.flow = flow  # a CompiledFlow
        self.action = action
        self.element = element  # Clark notation {ns}local
        self.operation = operation
        self.validate = validate
        output = operation.output if operation is not None else None
        if output is not None:
            self.write_json: Callable[[Any], bytes] = lambda value: element_bytes(
                output.namespace, output.name, value, output.shape, output.qualified)
        else:
            namespace = etree.QName(element).namespace if element else None
            self.write_json = lambda value: element_bytes(namespace, f"{name}Response", value)


class SoapService:
    """The flows of one SOAP path, served as one route of the facade (it stands where a
    compiled flow stands: ``name``, ``source``, ``max_body``, ``handle(msg)``)."""

    def __init__(self, path: str, operations: list[ServedOperation], *, wsdl: Wsdl | None,
                 version: SoapVersion, max_body: int | None) -> None:
        self.path = path
        self.name = "soap:" + path
        self.source = HttpSource(["GET", "POST"], path, [])
        self.max_body = max_body
        self.wsdl = wsdl
        self.version = version
        self.operations = operations
        self.by_action = {op.action: op for op in operations if op.action}
        self.by_element = {op.element: op for op in operations if op.element}
        self._wsdl_by_base: dict[str, bytes] = {}

    @property
    def flow(self) -> Any:
        return self.operations[0].flow.flow  # what the routing table shows (its file, its name)

    # --- one request -------------------------------------------------------------------------

    async def handle(self, msg: Message) -> None:
        if msg.method == "GET":
            self._answer_wsdl(msg)
            return
        if msg.is_streaming:
            await msg.load_body()
        version = version_of_content_type(msg.content_type) or self.version
        try:
            served, content = self._route(msg, version)
        except _ClientFault as fault:
            if fault.subcode is not None:
                self._answer(msg, version, "Client", fault_envelope(version, "Client", str(fault),
                                                                    subcode=fault.subcode))
                return
            self._fault(msg, version, fault.code or "Client", str(fault))
            return
        msg.vars["soap"] = {"operation": served.name, "action": self._action(msg, version), "version": version.name}
        if content is not None:
            msg.set_payload(content, XML, msg.content_type)
        try:
            await served.flow.handle(msg)
        except FlowError as exc:
            self._error(msg, version, exc)
            return
        self._wrap(msg, version, served)

    def _action(self, msg: Message, version: SoapVersion) -> str | None:
        if version.name == "1.1":
            value = msg.headers.get("soapaction")
            return value.strip().strip('"') or None if value is not None else None
        return action_of_content_type(msg.content_type)

    def _route(self, msg: Message, version: SoapVersion) -> tuple[ServedOperation, etree._Element | None]:
        if version_of_content_type(msg.content_type) is None:
            raise _ClientFault(f"a SOAP request has Content-Type text/xml (1.1) or application/soap+xml (1.2), "
                               f"not {msg.content_type or 'none'}")
        try:
            root = parse_document(msg.body)
        except XmlRefused as exc:
            raise _ClientFault(f"the request is not well-formed XML: {exc.describe()}") from None
        root_name = etree.QName(root)
        if root_name.localname != "Envelope":
            raise _ClientFault(f"the request is not a SOAP envelope (its root is {root_name.text})")
        if root_name.namespace != version.namespace:
            other = next((v for v in VERSIONS.values() if v.namespace == root_name.namespace), None)
            detail = (f"a SOAP {other.name} envelope sent as {version.media_type}" if other is not None
                      else f"the envelope namespace {root_name.namespace} is not SOAP 1.1 or 1.2")
            raise _ClientFault(detail, code="VersionMismatch")
        self._check_headers(root, version)
        body = root.find(f"{{{version.namespace}}}Body")
        if body is None:
            raise _ClientFault("the SOAP envelope has no Body")
        content = next((child for child in body if isinstance(child.tag, str)), None)
        served = self._pick(msg, version, content)
        if served.security is not None:
            served.security.check(root, version)
        if served.validate and self.wsdl is not None and content is not None:
            problems = self.wsdl.validation_errors(content)
            if problems:
                raise _ClientFault(f"the {served.name} request does not match the WSDL's schema: {problems[0]}")
        return served, content

    def _check_headers(self, root: etree._Element, version: SoapVersion) -> None:
        header = root.find(f"{{{version.namespace}}}Header")
        if header is None:
            return
        must = f"{{{version.namespace}}}mustUnderstand"
        for block in header:
            if not isinstance(block.tag, str) or block.get(must) not in ("1", "true"):
                continue
            if etree.QName(block).namespace not in _UNDERSTOOD:
                raise _ClientFault(f"the header {etree.QName(block).text} must be understood, and is not",
                                   code="MustUnderstand")

    def _pick(self, msg: Message, version: SoapVersion, content: etree._Element | None) -> ServedOperation:
        action = self._action(msg, version)
        if action and action in self.by_action:
            return self.by_action[action]
        if content is not None and content.tag in self.by_element:
            return self.by_element[content.tag]
        if len(self.operations) == 1 and (content is None or not self.by_element):
            return self.operations[0]
        seen = etree.QName(content).text if content is not None else "an empty Body"
        known = ", ".join(op.name for op in self.operations)
        raise _ClientFault(f"no operation of this service takes {seen}"
                           + (f" with action {action!r}" if action else "") + f" (operations: {known})")

    # --- answers -----------------------------------------------------------------------------

    def _wrap(self, msg: Message, version: SoapVersion, served: ServedOperation) -> None:
        if msg.status >= 400:
            self._fault(msg, version, "Client" if msg.status < 500 else "Server",
                        f"the operation {served.name} failed with status {msg.status}")
            return
        kind = msg.kind
        if kind == JSON:
            content = served.write_json(msg.payload)
        elif kind == XML:
            payload = msg.payload
            if payload is None:
                content = b""
            else:
                name = etree.QName(payload)
                if name.localname == "Envelope" and name.namespace in (SOAP11.namespace, SOAP12.namespace):
                    msg.set_body(serialize_xml(payload), version.content_type(None))
                    return
                content = strip_declaration(serialize_xml(payload))
        elif not msg.body:
            content = b""
        else:
            self._fault(msg, version, "Server", f"the operation {served.name} answered {msg.content_type}, "
                                                "not XML or JSON")
            return
        msg.set_body(_WRITERS[version.name].write(content), version.content_type(None))

    def _error(self, msg: Message, version: SoapVersion, exc: FlowError) -> None:
        if isinstance(exc, RaisedSoapFault):
            self._answer(msg, version, exc.fault_code, fault_envelope(
                version, exc.fault_code, exc.string, subcode=exc.subcode, actor=exc.actor, detail=exc.detail_xml))
            return
        if isinstance(exc, SoapFault):  # a backend's fault, passed on as this service's
            fault = exc.fault
            code = fault.code if fault.code in ("Client", "Server", "Sender", "Receiver") else "Server"
            detail = fault.detail_xml.encode() if fault.detail_xml and fault.detail_xml.startswith("<") else None
            self._answer(msg, version, code, fault_envelope(version, code, fault.string or exc.detail,
                                                            actor=fault.actor, detail=detail))
            return
        if exc.status >= 500:
            log.warning("soap %s: %s %s%s", self.path, exc.status, exc.detail,
                        f": {exc.internal}" if exc.internal else "")
        self._fault(msg, version, "Client" if exc.status < 500 else "Server", exc.detail, problem=exc)

    def _fault(self, msg: Message, version: SoapVersion, code: str, string: str, *,
               problem: FlowError | None = None) -> None:
        detail = None
        if problem is not None:
            detail = (f'<problem xmlns="https://interlace.dev/problems/"><type>{problem.type_uri}</type>'
                      f"<status>{problem.status}</status><code>{problem.code}</code></problem>").encode()
        self._answer(msg, version, code, fault_envelope(version, code, string, detail=detail))

    def _answer(self, msg: Message, version: SoapVersion, code: str, envelope: bytes) -> None:
        msg.status = fault_status(version, code)
        msg.set_body(envelope, version.content_type(None))
        msg.done = True

    def _answer_wsdl(self, msg: Message) -> None:
        if self.wsdl is None or "wsdl" not in {k.lower() for k in msg.query}:
            msg.status = 404
            msg.set_body(b"", None)
            if self.wsdl is None:
                raise _NotServed(f"{self.path} is a SOAP service without a WSDL; POST envelopes to it")
            raise _NotServed(f"{self.path} is a SOAP service: GET {self.path}?wsdl for its WSDL")
        scheme = msg.headers.get("x-forwarded-proto", "http")
        host = msg.headers.get("host", "127.0.0.1")
        base = f"{scheme}://{host}{self.path}"
        text = self._wsdl_by_base.get(base)
        if text is None:
            text = self._wsdl_at(base)
            if len(self._wsdl_by_base) < _WSDL_CACHE_HOSTS:
                self._wsdl_by_base[base] = text
        msg.status = 200
        msg.set_body(text, "text/xml; charset=utf-8")

    def _wsdl_at(self, address: str) -> bytes:
        assert self.wsdl is not None
        root = parse_document(self.wsdl.text)
        for namespace in (WSDL_SOAP11_NS, WSDL_SOAP12_NS):
            for element in root.iter(f"{{{namespace}}}address"):
                element.set("location", address)
        return serialize_xml(root)


class _ClientFault(Exception):
    def __init__(self, message: str, code: str | None = None, subcode: tuple[str | None, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.subcode = subcode


class TokenCheck:
    """Checks the WS-Security UsernameToken of served requests (text or digest password).

    A digest's creation time must be within ``WINDOW`` of now and its nonce unseen in that
    window; the nonces are remembered by this process only, so a replica does not know the
    nonces another one saw (the creation window still bounds a replay)."""

    WINDOW = 300.0

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password
        self._nonces: dict[bytes, float] = {}

    def __repr__(self) -> str:
        return f"TokenCheck(username={self.username!r})"

    def check(self, root: etree._Element, version: SoapVersion) -> None:
        token = root.find(f"{{{version.namespace}}}Header/{{{WSSE_NS}}}Security/{{{WSSE_NS}}}UsernameToken")
        if token is None:
            self._refuse("the request carries no WS-Security UsernameToken")
        user = token.findtext(f"{{{WSSE_NS}}}Username") or ""
        password = token.find(f"{{{WSSE_NS}}}Password")
        if password is None or not hmac.compare_digest(user.encode(), self.username.encode()):
            self._refuse("the security token could not be authenticated")
        if password.get("Type", PASSWORD_TEXT) == PASSWORD_DIGEST:
            self._check_digest(token, password.text or "")
        elif not hmac.compare_digest((password.text or "").encode(), self._password.encode()):
            self._refuse("the security token could not be authenticated")

    def _check_digest(self, token: etree._Element, digest: str) -> None:
        created = token.findtext(f"{{{WSU_NS}}}Created") or ""
        try:
            nonce = base64.b64decode(token.findtext(f"{{{WSSE_NS}}}Nonce") or "", validate=True)
            when = datetime.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            self._refuse("the security token's nonce or creation time is malformed")
        now = time.time()
        if abs(now - when) > self.WINDOW:
            self._refuse("the security token was created too long ago (or in the future)")
        expected = password_digest(nonce, created, self._password)
        if not hmac.compare_digest(digest.encode(), expected.encode()):
            self._refuse("the security token could not be authenticated")
        if nonce in self._nonces:
            self._refuse("the security token's nonce was used already")
        if len(self._nonces) > 10_000:  # forget what is outside the window
            self._nonces = {n: t for n, t in self._nonces.items() if now - t <= self.WINDOW}
        self._nonces[nonce] = now

    def _refuse(self, reason: str) -> NoReturn:
        raise _ClientFault(reason, subcode=(WSSE_NS, "FailedAuthentication"))


class _NotServed(FlowError):
    status = 404
    code = "not-found"
    title = "Not found"





Report = Callable[[Any, tuple[str, ...], str], None]  # (flow, key under source.soap, message)
Resolve = Callable[[Any], Any]  # ${env.*} and ${secret.*} in settings, resolved once


def build_services(flows: list[Any], report: Report, resolve: Resolve = lambda value: value) -> list[SoapService]:
    """The SOAP services of a project's compiled flows that have a ``soap`` source, one per
    path, each WSDL read once.  Problems go to ``report`` with the key they are about."""
    from connectors.soap.wsdl import WsdlError, load_wsdl

    by_path: dict[str, list[Any]] = {}
    for compiled in flows:
        if compiled.flow.soap is not None:
            by_path.setdefault(compiled.flow.soap.path.rstrip("/") or "/", []).append(compiled)
    services = []
    for path, members in by_path.items():
        first = members[0].flow
        source = first.soap
        wsdl: Wsdl | None = None
        if source.wsdl is not None:
            try:
                wsdl = load_wsdl(source.wsdl, first.file.parent, service=source.service, port=source.port)
            except WsdlError as exc:
                report(first, ("wsdl",), str(exc))
                continue
        served: list[ServedOperation] = []
        for compiled in members:
            flow, soap = compiled.flow, compiled.flow.soap
            if soap.wsdl != source.wsdl:
                report(flow, ("wsdl",), f"the flows serving {path} give different WSDLs: {soap.wsdl!r} here, "
                                        f"{source.wsdl!r} in flow {first.name!r}; a path serves one WSDL")
                continue
            one = _served(compiled, soap, wsdl, report, resolve)
            if one is not None:
                served.append(one)
        _report_clashes(served, report)
        if served:
            version = VERSIONS.get(source.version or "") or (
                next(iter(wsdl.operations.values())).version if wsdl and wsdl.operations else SOAP11)
            max_body = max((m.flow.soap.max_body or 0 for m in members), default=0) or None
            services.append(SoapService(path, served, wsdl=wsdl, version=version, max_body=max_body))
    return services


def _served(compiled: Any, soap: Any, wsdl: Wsdl | None, report: Report, resolve: Resolve) -> ServedOperation | None:
    from connectors.soap.wsdl import WsdlError

    flow = compiled.flow
    operation: Operation | None = None
    if wsdl is not None:
        try:
            operation = wsdl.operation(soap.operation)
        except WsdlError as exc:
            report(flow, ("operation",), str(exc))
            return None
    element: str | None = None
    if soap.element is not None:
        prefix, colon, local = soap.element.rpartition(":")
        namespace = flow.namespaces.get(prefix) if colon else None
        if colon and namespace is None:
            report(flow, ("element",), f"the prefix {prefix!r} of {soap.element!r} is not declared under namespaces")
            return None
        element = f"{{{namespace}}}{local}" if namespace else local
    elif operation is not None and operation.input is not None:
        element = operation.input.clark
    action = soap.action if soap.action is not None else operation.action if operation is not None else None
    if soap.validate and (wsdl is None or wsdl.schema is None):
        report(flow, ("validate",), "validate needs a wsdl with an XML Schema in its types")
        return None
    security = None
    if soap.ws_security is not None:
        try:
            settings = resolve(soap.ws_security)
        except ValueError as exc:
            report(flow, ("ws_security",), str(exc))
            return None
        security = TokenCheck(str(settings["username"]), str(settings["password"]))
    return ServedOperation(soap.operation, compiled, action=action, element=element, operation=operation,
                           validate=bool(soap.validate), security=security)


def _report_clashes(served: list[ServedOperation], report: Report) -> None:
    seen: dict[str, ServedOperation] = {}
    for one in served:
        if one.name in seen:
            report(one.flow.flow, ("operation",), f"operation {one.name!r} is served already by flow "
                                                  f"{seen[one.name].flow.name!r}")
        seen[one.name] = one
__all__ = ["SOURCE_SCHEMA", "ServedOperation", "SoapService", "build_services"]
