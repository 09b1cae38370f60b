"""Reading a SOAP answer: the Body's content, or its Fault as a typed flow error.

A fault becomes ``SoapFault`` (502 unless a flow's handler maps it), whose ``${error.fault}``
holds, for either version::

    version   "1.1" | "1.2"
    code      the fault code's local name: Client/Server/... (1.1), Sender/Receiver/... (1.2)
    code_ns   the code's namespace URI (the envelope's for the standard codes)
    subcode   1.2: the first Subcode's local name (null without one); subcode_ns its namespace
    string    faultstring (1.1) or the first Reason/Text (1.2)
    actor     faultactor (1.1) or Role (1.2); node: Node (1.2)
    detail    the detail's content as JSON (element names to values); detail_xml: as XML text

so that ``${error.fault.code == 'Client'}`` or ``${error.fault.detail.reason}`` can choose the
problem+json status.  An answer that is not a SOAP envelope is ``MalformedSoapReply`` (502).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lxml import etree

from connectors.soap.envelope import BY_NAMESPACE, SOAP11_NS, SOAP12_NS, Shape
from engine.errors import BackendFault, FlowError
from engine.xmlsafe import XmlRefused, parse_document

_XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
_TRUE = ("true", "1")
_ELEMENTS = etree.Element  # iterchildren(tag=etree.Element): elements only, filtered by lxml itself
# Envelope tag -> (Body tag, Fault tag) of each version
_ENVELOPES = {f"{{{ns}}}Envelope": (f"{{{ns}}}Body", f"{{{ns}}}Fault") for ns in BY_NAMESPACE}


class MalformedSoapReply(BackendFault):
    """The backend's answer is not a SOAP envelope (not XML, no Envelope, no Body)."""

    status = 502
    code = "soap-malformed-reply"
    title = "Malformed SOAP answer"


@dataclass(frozen=True)
class Fault:
    version: str
    code: str
    code_ns: str | None
    string: str
    subcode: str | None = None
    subcode_ns: str | None = None
    actor: str | None = None
    node: str | None = None
    detail: Any = None
    detail_xml: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SoapFault(BackendFault):
    """The service answered with a SOAP Fault; ``${error.fault}`` carries it (module docstring)."""

    status = 502
    code = "soap-fault"
    title = "SOAP fault"

    def __init__(self, fault: Fault, endpoint: str, operation: str | None = None) -> None:
        where = f"operation {operation!r} of endpoint {endpoint!r}" if operation else f"endpoint {endpoint!r}"
        # the fault's own words may hold a backend's internals (stack traces, host names): they go
        # to ${error.fault} and the logs, never into a problem+json body by default
        super().__init__(f"{where} answered a SOAP fault ({fault.code})",
                         internal=f"{fault.code}: {fault.string}")
        self.fault = fault

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "fault": self.fault.as_dict()}


def body_content(body: bytes, endpoint: str, operation: str | None = None,
                 shape: Shape | None = None) -> etree._Element | None:
    """The first element inside soap:Body (None when the Body is empty), or raise SoapFault
    or MalformedSoapReply.  ``shape`` types a fault's detail (else all texts are strings)."""
    where = f"endpoint {endpoint!r}" + (f" (operation {operation!r})" if operation else "")
    if not body.strip():
        raise MalformedSoapReply(f"{where} answered an empty body, not a SOAP envelope")
    try:
        root = parse_document(body)
    except XmlRefused as exc:
        raise MalformedSoapReply(f"{where} answered something that is not XML: {exc.describe()}") from None
    tags = _ENVELOPES.get(root.tag)  # type: ignore[arg-type]  # a str for an element (the root is one)
    if tags is None:
        raise MalformedSoapReply(f"{where} answered XML that is not a SOAP envelope (its root is "
                                 f"{etree.QName(root).text})")
    body_tag, fault_tag = tags
    soap_body = next(root.iterchildren(body_tag), None)  # after an optional Header
    if soap_body is None:
        raise MalformedSoapReply(f"{where} answered a SOAP envelope without a Body")
    for content in soap_body.iterchildren(_ELEMENTS):  # the first element (comments and texts aside)
        if content.tag == fault_tag:
            raise SoapFault(read_fault(content, shape), endpoint, operation)
        return content
    return None


def read_fault(element: etree._Element, shape: Shape | None = None) -> Fault:
    """A Fault element of either version as a ``Fault``."""
    namespace = etree.QName(element).namespace
    if namespace == SOAP12_NS:
        return _fault12(element, shape)
    code_ns, code = _qname_text(element, element.findtext("faultcode"))
    detail = element.find("detail")
    return Fault("1.1", code, code_ns, (element.findtext("faultstring") or "").strip(),
                 actor=_stripped(element.findtext("faultactor")),
                 detail=_detail(detail, shape), detail_xml=_inner_xml(detail))


def _fault12(element: etree._Element, shape: Shape | None) -> Fault:
    ns = f"{{{SOAP12_NS}}}"
    value = element.find(f"{ns}Code/{ns}Value")
    code_ns, code = _qname_text(value if value is not None else element, value.text if value is not None else None)
    subcode_ns: str | None = None
    subcode: str | None = None
    sub = element.find(f"{ns}Code/{ns}Subcode/{ns}Value")
    if sub is not None:
        subcode_ns, subcode = _qname_text(sub, sub.text)
    reason = element.find(f"{ns}Reason")
    text = reason.findtext(f"{ns}Text") if reason is not None else None
    detail = element.find(f"{ns}Detail")
    return Fault("1.2", code, code_ns, (text or "").strip(), subcode=subcode, subcode_ns=subcode_ns,
                 actor=_stripped(element.findtext(f"{ns}Role")), node=_stripped(element.findtext(f"{ns}Node")),
                 detail=_detail(detail, shape), detail_xml=_inner_xml(detail))


def _qname_text(context: etree._Element, text: str | None) -> tuple[str | None, str]:
    """A QName written in an element's text (``soap:Client``), resolved by the in-scope prefixes."""
    value = (text or "").strip()
    prefix, colon, local = value.rpartition(":")
    if not colon:
        return context.nsmap.get(None), value
    return context.nsmap.get(prefix), local


def _stripped(text: str | None) -> str | None:
    return text.strip() if text is not None else None


def _detail(detail: etree._Element | None, shape: Shape | None) -> Any:
    if detail is None:
        return None
    children = [c for c in detail if isinstance(c.tag, str)]
    if not children:
        return (detail.text or "").strip() or None
    return to_json(detail, shape)


def _inner_xml(element: etree._Element | None) -> str | None:
    if element is None:
        return None
    return "".join(etree.tostring(child, encoding="unicode", with_tail=False) for child in element
                   if isinstance(child.tag, str)) or (element.text or "").strip() or None


def to_json(element: etree._Element, shape: Shape | None = None) -> Any:
    """An element's content as JSON: its child elements by local name (repeated ones, and those
    the shape says repeat, as lists), a leaf's text typed by the shape (else a string), an
    ``xsi:nil`` element null.  Attributes are left out."""
    if element.get(_XSI_NIL) in _TRUE:
        return None
    out: dict[str, Any] = {}
    repeated: set[str] | None = None  # names seen twice: their value is a list built here
    for child in element.iterchildren(_ELEMENTS):  # one pass, elements only (no comments, PIs)
        tag: str = child.tag  # type: ignore[assignment]  # an element's tag is a str
        name = tag[tag.rfind("}") + 1:]  # the local name, without making a QName
        member = shape.get(name) if shape else None
        value: Any
        if member is not None and member.children is None:
            if child.get(_XSI_NIL) in _TRUE:
                value = None
            else:
                value = child.text or ""
                if member.convert is not None:
                    value = member.convert(value)
        else:
            value = to_json(child, member.children if member is not None else None)
        if member is not None and member.many:
            out.setdefault(name, []).append(value)
        elif name not in out:
            out[name] = value
        elif repeated is not None and name in repeated:
            out[name].append(value)
        else:
            out[name] = [out[name], value]
            if repeated is None:
                repeated = set()
            repeated.add(name)
    if not out:  # every element child adds a member: none, a leaf
        return element.text or ""
    return out


class RaisedSoapFault(FlowError):
    """Raised by a flow's ``soap_fault`` step.  A flow serving SOAP answers it as a Fault with
    these fields; anywhere else it is a problem+json (400 for a client fault, else 500)."""

    code = "soap-fault-raised"
    title = "SOAP fault"

    def __init__(self, fault_code: str, string: str, *, subcode: tuple[str | None, str] | None = None,
                 actor: str | None = None, detail: bytes | None = None) -> None:
        client = fault_code.lower() in ("client", "sender")
        super().__init__(string, status=400 if client else 500)
        self.fault_code = fault_code
        self.string = string
        self.subcode = subcode
        self.actor = actor
        self.detail_xml = detail


__all__ = ["SOAP11_NS", "Fault", "MalformedSoapReply", "RaisedSoapFault", "SoapFault", "body_content",
           "read_fault", "to_json"]
