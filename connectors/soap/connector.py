"""SOAP endpoints: SOAP 1.1 and 1.2 services called by operation, on the http kind's fast path.

In a flow file::

    endpoints:
      quotes:
        soap:
          url: http://quotes.internal:8080/services/stockquote
          wsdl: stockquote.wsdl                 # a file beside the flow file, or an http(s) URL
          ws_security: {username: app, password: "${secret.QUOTES_PASSWORD}", digest: true}
          addressing: true
          timeout: {connect: 1s, read: 5s}
          retry: {attempts: 2, on_status: [503]}
    steps:
      - call: {endpoint: quotes, operation: getQuote, body: {symbol: "${path.symbol}"}}

A soap endpoint is an http endpoint (the same settings: url or urls, timeout, pool, tls,
headers; the shared retry, breaker and failover) that writes envelopes and reads them.  Its
operations are its WSDL's: an unknown one, or a template without a member the WSDL requires,
is a load error at its line and column.  Without a WSDL any operation name is accepted and a
step says its ``action``.  The answer becomes JSON (typed by the WSDL's schema) or, with
``result: xml``, the response element.  A Fault raises ``soap-fault`` (502, ``${error.fault}``
holds code, subcode, string, actor, node, detail: connectors/soap/replies.py); an answer that
is no envelope raises ``soap-malformed-reply`` (502).  Faults are never retried and never
count against the breaker: the service is up, it said no.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from lxml import etree

from connectors.base import EndpointContext, Invocation, Invoke, Operation, Reply, Request, register_connector
from connectors.http import HttpConnector, HttpRequest
from connectors.soap.client import CALL_PROPERTIES, SETTINGS_PROPERTIES, CompiledCall, SoapSettings, non_soap_status
from connectors.soap.envelope import EnvelopeWriter, element_bytes, fault_envelope, fault_status, strip_declaration
from connectors.soap.replies import MalformedSoapReply, SoapFault
from connectors.soap.wsdl import MessageElement
from engine import xmlsafe
from engine.message import JSON

if TYPE_CHECKING:
    from engine.compiler import CompileContext

CALL_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": CALL_PROPERTIES}
ANY_OPERATION = Operation(
    "Call an operation of the service (with a WSDL, one of its operations): the Body from body (the operation "
    "element's members as JSON), xml (a template of the element) or the message's payload; the answer becomes "
    "JSON, or the response element with result: xml.",
    schema=CALL_SCHEMA,
    examples=[{"endpoint": "quotes", "operation": "getQuote", "body": {"symbol": "${path.symbol}"}}],
)


class SoapRequest(HttpRequest):
    """A SOAP request: a POST of a whole envelope; its operation and action for mocks and traces."""

    __slots__ = ("action", "soap_operation")

    def __init__(self, operation: str, action: str | None, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__("POST", "", headers, body, checked=True)  # the endpoint's URL itself: no path to check
        self.operation = operation
        self.soap_operation = operation
        self.action = action

    def view(self) -> dict[str, Any]:
        return {"operation": self.soap_operation, "action": self.action, "method": "POST", "path": self.path}

    async def content(self) -> tuple[bytes, str | None]:
        body = self.body if isinstance(self.body, bytes) else b""
        return body, next((v for k, v in self.headers or () if k == "content-type"), None)


class _AnyName(Mapping[str, Operation]):
    """The operations of a soap endpoint without a WSDL: every name is one."""

    def __getitem__(self, name: str) -> Operation:
        return ANY_OPERATION

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@register_connector("soap")
class SoapConnector(HttpConnector):
    """A SOAP 1.1 or 1.2 service (see the module docstring)."""

    SUMMARY: ClassVar[str] = ("A SOAP 1.1 or 1.2 service, its operations from its WSDL: envelopes from templates or "
                              "JSON, faults as typed errors, WS-Addressing, WS-Security UsernameToken or HTTP Basic; "
                              "the http kind's connection pool, timeouts, retry and breaker.")
    SCHEMA: ClassVar[dict[str, Any]] = {
        **HttpConnector.SCHEMA,
        "description": SUMMARY,
        "properties": {**HttpConnector.SCHEMA["properties"], **SETTINGS_PROPERTIES},
    }
    OPERATIONS: ClassVar[dict[str, Operation]] = {"operation": ANY_OPERATION}
    DEFAULT_OPERATION: ClassVar[str | None] = None
    ENDPOINT_CLASS: ClassVar[Any] = None  # the shared Endpoint, not the http kind's subclass
    MOCK_MATCH: ClassVar[dict[str, Any]] = {
        "action": {"type": "string", "description": "(soap) The SOAP action sent (SOAPAction, or 1.2's action)."},
        "method": {"type": "string"},
        "path": {"type": "string"},
        "headers": {"type": "object"},
    }
    MOCK_ANSWER: ClassVar[dict[str, Any]] = {
        "status": {"type": "integer", "minimum": 100, "maximum": 599,
                   "description": "Status (default 200; a fault's: 500, or 400 for a SOAP 1.2 Sender fault)."},
        "headers": {"type": "object", "description": "Headers of the answer."},
        "fault": {
            "type": "object", "additionalProperties": False,
            "description": "(soap) Answer a Fault envelope in the endpoint's SOAP version, e.g. {code: Client, "
                           "subcode: UnknownSymbol, string: unknown symbol}; the flow sees soap-fault with "
                           "${error.fault.*}.",
            "properties": {
                "code": {"type": "string", "description": "Client/Sender, Server/Receiver, ... (default Server)."},
                "subcode": {"type": "string", "description": "A subcode (1.1: appended as Client.Subcode)."},
                "subcode_ns": {"type": "string", "description": "The subcode's namespace (1.2)."},
                "string": {"type": "string", "description": "faultstring / Reason."},
                "actor": {"type": "string", "description": "faultactor / Role."},
                "detail": {"type": "string", "description": "The detail's content, as XML."},
            },
        },
    }

    def __init__(self, name: str, config: dict[str, Any], context: EndpointContext | None = None) -> None:
        http = {k: v for k, v in config.items() if k in HttpConnector.SCHEMA["properties"]}
        super().__init__(name, http, context)
        self.config = config
        self.settings = SoapSettings.read(config, self.context.folder, self.endpoints[0].display)

    def needs_server(self) -> bool:
        return True

    def operations(self) -> Mapping[str, Operation]:
        """This endpoint's operations: its WSDL's, each with the call keys' schema."""
        wsdl = self.settings.wsdl
        if wsdl is None:
            return _AnyName()
        return dict.fromkeys(wsdl.operations, ANY_OPERATION)

    def health(self) -> dict[str, Any]:
        wsdl = self.settings.wsdl
        return {"kind": "soap", "version": self.settings.version.name, "urls": list(self.targets),
                "wsdl": wsdl.location if wsdl is not None else None,
                "operations": sorted(wsdl.operations) if wsdl is not None else None}

    def mock_reply(self, request: Request, answer: Mapping[str, Any], body: bytes | None,
                   content_type: str | None) -> Reply:
        """A flow-test mock's answer as the service's envelope: ``json`` is the operation's
        response element (members in the WSDL's order), ``xml`` that element (or a whole
        envelope, sent as it is), ``fault`` a Fault; the call then reads it as a real one."""
        assert isinstance(request, SoapRequest)
        version = self.settings.version
        status = answer.get("status")
        if "fault" in answer:
            fault = answer["fault"]
            code = str(fault.get("code", "Server"))
            subcode = (fault.get("subcode_ns"), str(fault["subcode"])) if fault.get("subcode") else None
            detail = str(fault["detail"]).encode() if fault.get("detail") else None
            data = fault_envelope(version, code, str(fault.get("string", "mocked fault")), subcode=subcode,
                                  actor=fault.get("actor"), detail=detail)
            status = status or fault_status(version, code)
        elif "json" in answer or not (body or "text" in answer or "file" in answer):
            element = self._response_element(request.soap_operation)
            data = EnvelopeWriter(version).write(element_bytes(element.namespace, element.name, answer.get("json"),
                                                               element.shape, element.qualified))
        elif "xml" in answer and etree.QName(xmlsafe.parse_document(body or b"")).localname != "Envelope":
            data = EnvelopeWriter(version).write(strip_declaration(body or b""))
        else:
            data = body or b""
        headers = [(str(k).lower(), str(v)) for k, v in (answer.get("headers") or {}).items()]
        media = answer.get("content_type") or version.content_type(None)
        if not any(k == "content-type" for k, _ in headers):
            headers.append(("content-type", str(media)))
        return Reply(int(status or 200), headers, data)

    def _response_element(self, operation: str) -> MessageElement:
        wsdl = self.settings.wsdl
        output = wsdl.operation(operation).output if wsdl is not None and operation in wsdl.operations else None
        return output or MessageElement(None, f"{operation}Response", {}, True)

    def prepare(self, operation: str, config: dict[str, Any], ctx: CompileContext, invoke: Invoke) -> Invocation:
        call = CompiledCall(self.name, self.settings, operation, config, ctx)
        name = self.name

        async def run(msg: Any) -> Reply:
            headers, body = call.render(msg)
            reply = await invoke(SoapRequest(operation, call.action, headers, body))
            data = await reply.read()
            status = reply.status or 0
            refusal = non_soap_status(name, status, data, reply.header("content-type"))
            try:
                if refusal is not None:
                    raise refusal
                payload, kind = call.answer(data)
            except (SoapFault, MalformedSoapReply) as exc:
                exc.extra.setdefault("endpoint", name)
                exc.extra.setdefault("operation", operation)
                raise
            return Reply(200, None, None, payload=payload,
                         content_type="application/json" if kind == JSON else "application/xml",
                         meta={"soap_action": call.action})

        return run
