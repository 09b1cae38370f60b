"""Calling SOAP operations: a soap endpoint's settings, and one step's call compiled at load.

``SoapSettings`` reads the endpoint's SOAP settings (version, WSDL, WS-Addressing, WS-Security,
validation) once.  ``CompiledCall`` is one step's operation: where its Body comes from (an XML
template, a JSON template of the operation element's members, or the message's payload),
which members the WSDL requires (checked at load when a template spells them out), the action,
and how the answer becomes the message (JSON through the WSDL's types, or the XML element).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lxml import etree

from connectors.soap.envelope import (
    SOAP11,
    VERSIONS,
    Addressing,
    EnvelopeWriter,
    MembersWriter,
    SoapVersion,
    UsernameToken,
    element_bytes,
    strip_declaration,
)
from connectors.soap.replies import MalformedSoapReply, body_content, to_json
from connectors.soap.wsdl import MessageElement, Operation, Wsdl, WsdlError, load_wsdl
from engine import xmlsafe
from engine.errors import RequestInvalid
from engine.message import JSON, XML, Message

if TYPE_CHECKING:
    from pathlib import Path

    from engine.compiler import CompileContext
    from engine.expressions import Template

SETTINGS_PROPERTIES: dict[str, Any] = {
    "wsdl": {"type": "string", "minLength": 1,
             "description": "The service's WSDL, a file beside the flow file or an http(s) URL read at load. "
                            "Its operations become this endpoint's: an unknown operation or a missing required "
                            "member is a load error; actions, version and types come from it."},
    "service": {"type": "string", "description": "The WSDL service to call (default: its first)."},
    "port": {"type": "string", "description": "The WSDL port to call (default: the service's first SOAP port)."},
    "version": {"enum": ["1.1", "1.2"],
                "description": "SOAP version (default: the WSDL binding's, else 1.1). 1.1 sends text/xml and a "
                               "SOAPAction header; 1.2 application/soap+xml with the action as its parameter."},
    "addressing": {"type": "boolean",
                   "description": "Add WS-Addressing 1.0 headers to every request: Action, a fresh MessageID, "
                                  "To (the endpoint's first URL) and an anonymous ReplyTo (default false)."},
    "basic": {
        "type": "object", "additionalProperties": False, "required": ["username", "password"],
        "description": "HTTP Basic authentication, e.g. {username: ${secret.QUOTES_USER}, password: "
                       "${secret.QUOTES_PASSWORD}}.",
        "properties": {"username": {"type": "string", "description": "The user name."},
                       "password": {"type": "string", "description": "The password (from a secret)."}},
    },
    "ws_security": {
        "type": "object", "additionalProperties": False, "required": ["username", "password"],
        "description": "A WS-Security UsernameToken in every request's header, its password as text or as a "
                       "digest with a fresh nonce and creation time.",
        "properties": {
            "username": {"type": "string", "description": "The user name."},
            "password": {"type": "string", "description": "The password (from a secret; never logged)."},
            "digest": {"type": "boolean",
                       "description": "Send Base64(SHA-1(nonce + created + password)) instead of the password "
                                      "itself (default false)."},
            "timestamp": {"type": "boolean",
                          "description": "Add a wsu:Timestamp (created, expires in 5 minutes; default true)."},
        },
    },
    "validate": {"type": "boolean",
                 "description": "Check each request's operation element against the WSDL's XML Schema before "
                                "sending; a mismatch is request-invalid (422) naming the problem (default false)."},
}

CALL_PROPERTIES: dict[str, Any] = {
    "body": {"type": "object",
             "description": "The operation element's members as a JSON template, written as XML in the order "
                            "the WSDL declares them, e.g. {symbol: '${path.symbol}'}. Without body or xml the "
                            "message's payload is sent (JSON the same way; XML as the Body's content)."},
    "xml": {"type": "string",
            "description": "An XML template of the Body's content (the operation element); ${...} in texts "
                           "and attributes."},
    "header": {"type": "string",
               "description": "An XML template of extra SOAP header blocks (wrap several in one element)."},
    "action": {"type": "string",
               "description": "The action to send (default: the WSDL operation's soapAction, else none)."},
    "result": {"enum": ["json", "xml"],
               "description": "What the answer becomes: json (the response element's members, typed by the "
                              "WSDL's schema; default) or xml (the response element itself, for xpath())."},
}


@dataclass
class SoapSettings:
    """A soap endpoint's own settings, read once."""

    version: SoapVersion
    wsdl: Wsdl | None
    validate: bool
    addressing: bool
    security: UsernameToken | None
    authorization: str | None = field(repr=False)  # an HTTP Basic header value: a secret

    @classmethod
    def read(cls, config: Mapping[str, Any], folder: Path, first_url: str) -> SoapSettings:
        wsdl = None
        if config.get("wsdl"):
            try:
                wsdl = load_wsdl(str(config["wsdl"]), folder, service=config.get("service"), port=config.get("port"))
            except WsdlError as exc:
                raise ValueError(str(exc)) from None
        version = VERSIONS.get(str(config.get("version", ""))) or (
            next(iter(wsdl.operations.values())).version if wsdl is not None and wsdl.operations else SOAP11)
        if config.get("validate") and (wsdl is None or wsdl.schema is None):
            raise ValueError("validate needs a wsdl with an XML Schema in its types")
        security = None
        if config.get("ws_security"):
            token = config["ws_security"]
            security = UsernameToken(str(token["username"]), str(token["password"]), bool(token.get("digest")),
                                     bool(token.get("timestamp", True)))
        authorization = None
        if config.get("basic"):
            pair = f"{config['basic']['username']}:{config['basic']['password']}".encode()
            authorization = "Basic " + base64.b64encode(pair).decode()
        settings = cls(version, wsdl, bool(config.get("validate")), bool(config.get("addressing")), security,
                       authorization)
        settings._to = first_url
        return settings

    _to: str = ""

    def writer(self) -> EnvelopeWriter:
        return EnvelopeWriter(self.version, addressing=Addressing(self._to) if self.addressing else None,
                              security=self.security)


class CompiledCall:
    """One step's call of a SOAP operation, compiled at load; ``render(msg)`` gives the HTTP
    headers and body, ``answer(body)`` reads the reply into the message's new payload."""

    def __init__(self, endpoint: str, settings: SoapSettings, operation: str, config: Mapping[str, Any],
                 ctx: CompileContext) -> None:
        from engine.compiler import StepConfigError
        from engine.steps.basic import XmlTemplate

        self.endpoint = endpoint
        self.name = operation
        self.settings = settings
        self.operation: Operation | None = None
        if settings.wsdl is not None:
            try:
                self.operation = settings.wsdl.operation(operation)
            except WsdlError as exc:
                raise StepConfigError(str(exc), "operation") from None
        self.input: MessageElement | None = self.operation.input if self.operation else None
        self.output: MessageElement | None = self.operation.output if self.operation else None
        self.action: str | None = config.get("action") or (self.operation.action if self.operation else None)
        self.as_json = config.get("result", "json") == "json"
        self.writer = settings.writer()
        self.http_headers = settings.version.headers(self.action)
        if settings.authorization:
            self.http_headers.append(("authorization", settings.authorization))
        if "body" in config and "xml" in config:
            raise StepConfigError("give body (the members as JSON) or xml (the operation element), not both", "xml")
        self.body = ctx.template(config["body"], "body") if "body" in config else None
        self.xml = XmlTemplate(str(config["xml"]), ctx, "xml") if "xml" in config else None
        self.header = XmlTemplate(str(config["header"]), ctx, "header") if "header" in config else None
        if self.body is None and self.xml is None:
            ctx.needs_body()
        self._check_members(config)
        if self.input is None and settings.wsdl is None:
            # without a WSDL a JSON body is written as <operation> in no namespace
            self.input = MessageElement(None, operation, {}, True)
        # body: {member: ...} names its members at load: their order and tags are prepared once
        self.members: tuple[MembersWriter, list[Template]] | None = None
        body = config.get("body")
        if isinstance(body, Mapping) and self.input is not None and all(isinstance(k, str) for k in body):
            element = self.input
            writer = MembersWriter(element.namespace, element.name, body, element.shape, element.qualified)
            self.members = writer, [ctx.template(body[name], ("body", name)) for name in writer.order]
        # the response element's tag, and its members' types, for reading answers
        self.output_tag = self.output.clark if self.output is not None else None

    def _check_members(self, config: Mapping[str, Any]) -> None:
        """A template that spells out the request must give every member the WSDL requires."""
        from engine.compiler import StepConfigError

        if self.input is None:
            return
        required = self.input.required()
        if self.body is not None and isinstance(config["body"], Mapping):
            given = set(map(str, config["body"]))
            key: Any = "body"
        elif self.xml is not None:
            root = self.xml.root
            if root.tag != self.input.clark:
                raise StepConfigError(f"operation {self.name!r} takes {etree.QName(self.input.clark).text} in the "
                                      f"Body, and the xml template is {etree.QName(root).text}", "xml")
            given = {etree.QName(child).localname for child in root if isinstance(child.tag, str)}
            key = "xml"
        else:
            return
        missing = [name for name in required if name not in given]
        if missing:
            raise StepConfigError(f"operation {self.name!r} requires {', '.join(missing)} (the WSDL's "
                                  f"{self.input.name} has minOccurs >= 1); add {'it' if len(missing) == 1 else 'them'}"
                                  f" to {key}", key)

    # --- per request -------------------------------------------------------------------------

    def render(self, msg: Message) -> tuple[list[tuple[str, str]], bytes]:
        content = self._content(msg)
        if self.settings.validate and self.settings.wsdl is not None and content:
            problems = self.settings.wsdl.validation_errors(xmlsafe.parse_document(content))
            if problems:
                raise RequestInvalid(f"the {self.name} request does not match the WSDL's schema: {problems[0]}",
                                     extra={"errors": problems})
        headers = list(self.http_headers)
        if msg.correlation_id:
            headers.append(("x-request-id", msg.correlation_id))
        extra = strip_declaration(xmlsafe.serialize_xml(self.header.render(msg))).decode() \
            if self.header is not None else ""
        return headers, self.writer.write(content, self.action, extra)

    def _content(self, msg: Message) -> bytes:
        if self.members is not None:
            writer, values = self.members
            return writer.write([value.render(msg) for value in values])
        if self.xml is not None:
            return strip_declaration(xmlsafe.serialize_xml(self.xml.render(msg)))
        value = self.body.render(msg) if self.body is not None else msg.payload
        if isinstance(value, etree._Element):
            return strip_declaration(xmlsafe.serialize_xml(value))
        element = self.input
        if element is None:
            raise RequestInvalid(f"operation {self.name!r} needs an XML payload or a body: the message has none")
        return element_bytes(element.namespace, element.name, value if value is not None else {}, element.shape,
                             element.qualified)

    def answer(self, body: bytes) -> tuple[Any, str]:
        """The reply's Body content as the new payload and its kind (raises SoapFault or
        MalformedSoapReply)."""
        content = body_content(body, self.endpoint, self.name)
        if not self.as_json:
            return content, XML
        if content is None:
            return None, JSON
        shape = self.output.shape if self.output is not None and content.tag == self.output_tag else None
        return to_json(content, shape), JSON


def non_soap_status(endpoint: str, status: int, body: bytes, content_type: str | None) -> MalformedSoapReply | None:
    """An HTTP error status whose body is no SOAP envelope (a proxy's 503 page): what to raise."""
    if status < 400:
        return None
    text = body.lstrip()[:1]
    if text == b"<" and content_type and "xml" in content_type:
        return None  # a fault, most likely: read it
    return MalformedSoapReply(f"endpoint {endpoint!r} answered {status} without a SOAP envelope",
                              extra={"backend_status": status})


__all__ = ["CALL_PROPERTIES", "SETTINGS_PROPERTIES", "CompiledCall", "SoapSettings", "non_soap_status"]
