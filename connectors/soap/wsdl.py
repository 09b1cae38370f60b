"""A WSDL read once, at load, with zeep's WSDL model: its operations and their messages.

``load_wsdl`` reads a file (relative to the flow folder) or a URL, picks one port (the first
SOAP port, or the service and port named), and keeps for each operation what calls and
served flows need at request time: its SOAP version and action, the qualified names of its
input and output elements, their members in schema order (``Shape``: which are required,
which repeat, how texts read as JSON), and an lxml ``XMLSchema`` of the WSDL's types for
validating bodies.  zeep (and the requests stack it brings) is imported only here, and only
when a flow folder has a WSDL: it costs about a second of start-up.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lxml import etree

from connectors.soap.envelope import SOAP11, SOAP12, Member, Shape, SoapVersion
from engine.paths import OutsideFolder, inside, inside_url
from engine.xmlsafe import PARSER, XmlRefused, parse_document

XSD_NS = "http://www.w3.org/2001/XMLSchema"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
_MAX_DEPTH = 12  # recursive types: deeper members read as untyped text


class WsdlError(ValueError):
    """A WSDL that cannot be read or used; the message says which part and why."""


@dataclass(frozen=True)
class MessageElement:
    """The element a message puts in soap:Body, with its members."""

    namespace: str | None
    name: str
    shape: Shape
    qualified: bool  # whether its children are in its namespace

    @property
    def clark(self) -> str:
        return f"{{{self.namespace}}}{self.name}" if self.namespace else self.name

    def required(self) -> list[str]:
        return [name for name, member in self.shape.items() if member.required]


@dataclass(frozen=True)
class Operation:
    name: str
    action: str | None
    version: SoapVersion
    style: str  # document | rpc
    input: MessageElement | None
    output: MessageElement | None


@dataclass
class Wsdl:
    location: str
    text: bytes  # the WSDL document as read, served at ?wsdl
    operations: dict[str, Operation]
    address: str | None  # the port's soap:address
    schema: etree.XMLSchema | None = field(default=None, repr=False)

    def operation(self, name: str) -> Operation:
        """The operation called ``name``, or WsdlError naming those it has."""
        found = self.operations.get(name)
        if found is None:
            hint = difflib.get_close_matches(name, list(self.operations), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise WsdlError(f"the WSDL {self.location} has no operation {name!r}{suggestion}; it has: "
                            f"{', '.join(sorted(self.operations)) or 'none'}")
        return found

    def by_element(self) -> dict[str, Operation]:
        """Operations by the qualified name of their input element (how a request is routed
        when its SOAPAction says nothing)."""
        return {op.input.clark: op for op in self.operations.values() if op.input is not None}

    def validation_errors(self, element: etree._Element) -> list[str]:
        """What is wrong with ``element`` by the WSDL's schema (empty when valid or no schema)."""
        if self.schema is None:
            return []
        if self.schema.validate(element):
            return []
        return [f"line {e.line}: {e.message}" for e in self.schema.error_log][:20]


def load_wsdl(location: str, base: Path, *, service: str | None = None, port: str | None = None,
              timeout: float = 10.0) -> Wsdl:
    """Read and model a WSDL: ``location`` is a path (relative to ``base``) or an http(s) URL."""
    is_url = urlsplit(location).scheme in ("http", "https")
    if not is_url:
        try:
            path = inside(base, location)  # a WSDL file comes from the flow folder (engine.paths)
        except OutsideFolder as exc:
            raise WsdlError(str(exc)) from None
        if not path.is_file():
            raise WsdlError(f"no WSDL file {location!r} (looked for {path})")
        where = str(path)
        text = path.read_bytes()
    else:
        where = location
        text = _fetch(location, timeout)
    try:
        tree = parse_document(text, base_url=where)
    except XmlRefused as exc:
        raise WsdlError(f"the WSDL {location} is not well-formed XML: {exc.describe()}") from None
    document = _zeep_document(where, base, timeout)
    binding, address = _pick_port(document, location, service, port)
    operations = {name: _operation(name, op, binding) for name, op in binding._operations.items()}
    return Wsdl(location, text, operations, address, _schema(tree, location, where))


def _fetch(url: str, timeout: float) -> bytes:
    import httpx

    try:
        reply = httpx.get(url, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise WsdlError(f"cannot read the WSDL {url}: {exc}") from None
    if reply.status_code != 200:
        raise WsdlError(f"cannot read the WSDL {url}: it answered {reply.status_code}")
    return reply.content


def _zeep_document(where: str, base: Path, timeout: float) -> Any:
    import zeep.exceptions
    import zeep.transports
    import zeep.wsdl
    from zeep.settings import Settings

    transports: Any = zeep.transports  # its Transport is untyped, and the Document stub wants the class

    class FolderTransport(transports.Transport):  # type: ignore[misc]
        """zeep's loader for what the WSDL imports (wsdl:import, xsd:import and xsd:include):
        a local file only from the flow folder, as for every file a flow names (engine.paths);
        what an http(s) WSDL imports by URL is fetched as before."""

        def load(self, url: str) -> bytes:
            if urlsplit(url).scheme in ("", "file"):
                return inside_url(base, url).read_bytes()  # OutsideFolder: a ValueError, reported below
            data: bytes = super().load(url)
            return data

    # no DTD, no entities: the same rules as every other XML the engine reads
    settings = Settings(strict=True, forbid_dtd=True, forbid_entities=True, xml_huge_tree=False)
    try:
        return zeep.wsdl.Document(where, FolderTransport(timeout=timeout, operation_timeout=timeout),
                                  settings=settings)
    except (zeep.exceptions.Error, etree.XMLSyntaxError, OSError, ValueError) as exc:
        raise WsdlError(f"cannot use the WSDL {where}: {exc}") from None


def _pick_port(document: Any, location: str, service: str | None, port: str | None) -> tuple[Any, str | None]:
    services = list(document.services.values())
    if service is not None:
        services = [s for s in services if s.name == service]
        if not services:
            names = ", ".join(s.name for s in document.services.values()) or "none"
            raise WsdlError(f"the WSDL {location} has no service {service!r}; it has: {names}")
    for candidate in services:
        for one in candidate.ports.values():
            if port is not None and one.name != port:
                continue
            if _version(one.binding) is not None:
                return one.binding, one.binding_options.get("address")
    if port is not None:
        raise WsdlError(f"the WSDL {location} has no SOAP port {port!r}")
    # a WSDL without services: its first SOAP binding, the address given by the endpoint
    for binding in document.bindings.values():
        if _version(binding) is not None:
            return binding, None
    raise WsdlError(f"the WSDL {location} has no SOAP 1.1 or 1.2 binding")


def _version(binding: Any) -> SoapVersion | None:
    from zeep.wsdl.bindings.soap import Soap11Binding, Soap12Binding

    if isinstance(binding, Soap12Binding):
        return SOAP12
    if isinstance(binding, Soap11Binding):
        return SOAP11
    return None


def _operation(name: str, op: Any, binding: Any) -> Operation:
    version = _version(binding)
    assert version is not None
    return Operation(name, op.soapaction or None, version, str(op.style or "document"),
                     _message_element(op.input), _message_element(op.output))


def _message_element(message: Any) -> MessageElement | None:
    body = getattr(message, "body", None) if message is not None else None
    if body is None:
        return None
    qname = etree.QName(body.qname.text if hasattr(body.qname, "text") else str(body.qname))
    children = list(getattr(body.type, "elements", []) or [])
    qualified = not children or "}" in str(children[0][1].qname)
    return MessageElement(qname.namespace, qname.localname, shape_of(body.type), qualified)


def shape_of(xsd_type: Any, depth: int = 0) -> Shape:
    """The members of a zeep complex type, in the order its schema declares them."""
    shape: Shape = {}
    if depth > _MAX_DEPTH:
        return shape
    for name, element in getattr(xsd_type, "elements", None) or []:
        child_type = element.type
        many = element.max_occurs == "unbounded" or (isinstance(element.max_occurs, int) and element.max_occurs > 1)
        required = isinstance(element.min_occurs, int) and element.min_occurs >= 1 and not element.nillable
        if getattr(child_type, "elements", None):
            shape[name] = Member(None, many, shape_of(child_type, depth + 1), required)
        else:
            shape[name] = Member(_converter(child_type), many, None, required)
    return shape


def _converter(xsd_type: Any) -> Any:
    from zeep.xsd.types import builtins

    if isinstance(xsd_type, builtins.Boolean):
        return _boolean
    if isinstance(xsd_type, builtins.Integer):
        return _integer
    if isinstance(xsd_type, (builtins.Decimal, builtins.Float, builtins.Double)):
        return _number
    return None


def _boolean(text: str) -> Any:
    value = text.strip()
    return True if value in ("true", "1") else False if value in ("false", "0") else text


def _integer(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def _number(text: str) -> Any:
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


# ----------------------------------------------------------------------------- the schema


class _InlineSchemas(etree.Resolver):
    """Serves the WSDL's inline schemas to each other by the names given them here."""

    def __init__(self, texts: dict[str, bytes]) -> None:
        super().__init__()
        self.texts = texts

    def resolve(self, system_url: str | None, public_id: str | None, context: Any) -> Any:
        name = (system_url or "").rsplit("/", 1)[-1]
        if name in self.texts:
            return self.resolve_string(self.texts[name], context)
        return None


def _schema(tree: etree._Element, location: str, where: str) -> etree.XMLSchema | None:
    """One XMLSchema over every inline schema of wsdl:types (None when it has none)."""
    schemas = tree.findall(f"{{{WSDL_NS}}}types/{{{XSD_NS}}}schema")
    if not schemas:
        return None
    names = {s.get("targetNamespace") or "": f"interlace-inline-{i}.xsd" for i, s in enumerate(schemas)}
    texts: dict[str, bytes] = {}
    for schema in schemas:
        copy = etree.fromstring(etree.tostring(schema))  # keeps the namespaces in scope (xmlns:tns...)
        for imported in copy.findall(f"{{{XSD_NS}}}import"):
            target = names.get(imported.get("namespace") or "")
            if target is not None and imported.get("schemaLocation") is None:
                imported.set("schemaLocation", target)
        texts[names[schema.get("targetNamespace") or ""]] = etree.tostring(copy)
    wrapper = etree.Element(f"{{{XSD_NS}}}schema", nsmap={"xsd": XSD_NS})
    for namespace, name in names.items():
        etree.SubElement(wrapper, f"{{{XSD_NS}}}import", namespace=namespace, schemaLocation=name)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    parser.resolvers.add(_InlineSchemas(texts))
    try:
        document = etree.fromstring(etree.tostring(wrapper), parser, base_url=where)
        return etree.XMLSchema(document)
    except (etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
        raise WsdlError(f"the types of the WSDL {location} are not a usable XML Schema: {exc}") from None


__all__ = ["PARSER", "MessageElement", "Operation", "Wsdl", "WsdlError", "load_wsdl", "shape_of"]
