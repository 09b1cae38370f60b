"""SOAP envelopes written as bytes: the two versions, WS-Addressing and WS-Security headers.

An envelope is assembled from pieces prepared at load (``EnvelopeWriter``): the opening tags,
the fixed header blocks, the closing tags.  Per request only the body content and the
headers that must change per message (a WS-Addressing MessageID, a UsernameToken's nonce and
timestamp) are written; nothing is parsed.  The body content comes from the caller as bytes
(an XML template rendered and serialised) or from a JSON value through ``json_to_xml``.

Versions::

    SOAP 1.1  envelope http://schemas.xmlsoap.org/soap/envelope/   Content-Type text/xml
              the action travels in the SOAPAction header (quoted)
    SOAP 1.2  envelope http://www.w3.org/2003/05/soap-envelope      Content-Type application/soap+xml
              the action travels as the media type's action parameter
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
WSA_NS = "http://www.w3.org/2005/08/addressing"
WSA_ANONYMOUS = WSA_NS + "/anonymous"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_TOKEN_PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
PASSWORD_TEXT = _TOKEN_PROFILE + "#PasswordText"
PASSWORD_DIGEST = _TOKEN_PROFILE + "#PasswordDigest"
BASE64_BINARY = ("http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0"
                 "#Base64Binary")


@dataclass(frozen=True, slots=True)
class SoapVersion:
    """What differs between SOAP 1.1 and 1.2 on the wire."""

    name: str  # "1.1" or "1.2"
    namespace: str
    media_type: str
    # the fault codes of the other version's sender/receiver, as this version names them
    sender: str
    receiver: str

    def content_type(self, action: str | None) -> str:
        """The request's Content-Type; SOAP 1.2 carries the action in it."""
        if self.name == "1.2" and action:
            return f'{self.media_type}; charset=utf-8; action="{action}"'
        return f"{self.media_type}; charset=utf-8"

    def headers(self, action: str | None) -> list[tuple[str, str]]:
        """The HTTP headers of a request: Content-Type, and SOAPAction for 1.1 (always sent, quoted)."""
        headers = [("content-type", self.content_type(action))]
        if self.name == "1.1":
            headers.append(("soapaction", f'"{action or ""}"'))
        return headers


SOAP11 = SoapVersion("1.1", SOAP11_NS, "text/xml", "Client", "Server")
SOAP12 = SoapVersion("1.2", SOAP12_NS, "application/soap+xml", "Sender", "Receiver")
VERSIONS = {"1.1": SOAP11, "1.2": SOAP12}
BY_NAMESPACE = {SOAP11_NS: SOAP11, SOAP12_NS: SOAP12}


def version_of_content_type(content_type: str | None) -> SoapVersion | None:
    """SOAP 1.2 by application/soap+xml, 1.1 by text/xml; None for anything else."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/soap+xml":
        return SOAP12
    if media == "text/xml":
        return SOAP11
    return None


def action_of_content_type(content_type: str | None) -> str | None:
    """The ``action`` parameter of a SOAP 1.2 Content-Type, unquoted."""
    if not content_type or "action" not in content_type:
        return None
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "action":
            return value.strip().strip('"')
    return None


# ----------------------------------------------------------------------------- JSON -> XML


def text_of(value: Any) -> str:
    """A JSON scalar as XML Schema writes it: true/false, numbers without a float's noise."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class Member:
    """One child element as a WSDL's schema declares it: how its text reads as JSON, whether
    it repeats, and its own children (None for a leaf).  A ``Shape`` is their ordered dict."""

    convert: Callable[[str], Any] | None = None  # None: the text as a string
    many: bool = False
    children: Shape | None = None
    required: bool = False


Shape = dict[str, Member]


def json_to_xml(value: Any, out: list[str], shape: Shape | None = None) -> None:
    """Write a JSON object's members as child elements in the default namespace.

    ``shape`` (from the WSDL's schema) puts the members in the sequence the schema declares;
    members it does not name follow in their own order.  A list repeats its element; null
    writes nothing (the element is omitted).
    """
    if not isinstance(value, Mapping):
        out.append(escape(text_of(value)))
        return
    names: Iterable[str] = value.keys()
    if shape:
        names = [*(n for n in shape if n in value), *(n for n in value if n not in shape)]
    for name in names:
        item = value[name]
        member = shape.get(name) if shape else None
        for one in item if isinstance(item, list) else (item,):
            if one is None:
                continue
            out.append(f"<{name}>")
            json_to_xml(one, out, member.children if member is not None else None)
            out.append(f"</{name}>")


def element_tags(namespace: str | None, local: str, qualified: bool = True) -> tuple[str, str]:
    """The start and end tags ``element_bytes`` writes around an element's members."""
    if namespace and qualified:
        return f"<{local} xmlns={quoteattr(namespace)}>", f"</{local}>"
    if namespace:
        return f"<ns0:{local} xmlns:ns0={quoteattr(namespace)}>", f"</ns0:{local}>"
    return f"<{local}>", f"</{local}>"


_SCALARS = (str, int, float, bool)


class MembersWriter:
    """An operation element whose members are known at load (a step's ``body: {symbol: ...}``),
    written as ``element_bytes`` would write it, the member order and tags prepared once:
    per message only the values are rendered and escaped."""

    __slots__ = ("_close", "_members", "_open")

    def __init__(self, namespace: str | None, local: str, names: Iterable[str], shape: Shape | None = None,
                 qualified: bool = True) -> None:
        self._open, self._close = element_tags(namespace, local, qualified)
        given = list(names)
        order = [*(n for n in shape if n in given), *(n for n in given if n not in shape)] if shape else given
        self._members = [(name, f"<{name}>", f"</{name}>", shape.get(name) if shape else None) for name in order]

    @property
    def order(self) -> list[str]:
        return [name for name, *_ in self._members]

    def write(self, values: Sequence[Any]) -> bytes:
        """The element with ``values`` in ``order``'s order (None omits a member)."""
        out = [self._open]
        for (name, start, end, member), value in zip(self._members, values, strict=True):
            if value is None:
                continue
            if isinstance(value, _SCALARS):
                out.append(start)
                out.append(escape(text_of(value)))
                out.append(end)
            else:  # an object or a list: the general writer, for this member
                json_to_xml({name: value}, out, {name: member} if member is not None else None)
        out.append(self._close)
        return "".join(out).encode()


def element_bytes(namespace: str | None, local: str, content: Any, shape: Shape | None = None,
                  qualified: bool = True) -> bytes:
    """``<local xmlns="namespace">...</local>`` holding ``content`` (a JSON object or scalar).

    ``qualified`` false (a schema whose elementFormDefault is unqualified) keeps the children
    out of the namespace: the wrapper is then written with a prefix.
    """
    start, close = element_tags(namespace, local, qualified)
    out = [start]
    json_to_xml(content, out, shape)
    out.append(close)
    return "".join(out).encode()


# ----------------------------------------------------------------------------- header blocks


@dataclass(frozen=True, slots=True)
class Addressing:
    """WS-Addressing 1.0 headers: Action and To always, a fresh MessageID, ReplyTo anonymous."""

    to: str
    must_understand: bool = False

    def render(self, version: SoapVersion, action: str | None) -> str:
        must = ' soap:mustUnderstand="1"' if self.must_understand and version.name == "1.1" else \
            ' soap:mustUnderstand="true"' if self.must_understand else ""
        return (f'<wsa:Action xmlns:wsa="{WSA_NS}"{must}>{escape(action or "")}</wsa:Action>'
                f'<wsa:MessageID xmlns:wsa="{WSA_NS}">urn:uuid:{uuid.uuid4()}</wsa:MessageID>'
                f'<wsa:To xmlns:wsa="{WSA_NS}"{must}>{escape(self.to)}</wsa:To>'
                f'<wsa:ReplyTo xmlns:wsa="{WSA_NS}"><wsa:Address>{WSA_ANONYMOUS}</wsa:Address></wsa:ReplyTo>')


@dataclass(frozen=True, slots=True)
class UsernameToken:
    """A WS-Security UsernameToken: the password as text, or as its digest
    ``Base64(SHA-1(nonce + created + password))`` with a fresh nonce and creation time."""

    username: str
    password: str
    digest: bool = False
    timestamp: bool = True  # also a wsu:Timestamp, which many services demand

    def __repr__(self) -> str:  # never show the password
        return f"UsernameToken(username={self.username!r}, digest={self.digest})"

    def render(self, version: SoapVersion, now: datetime.datetime | None = None, nonce: bytes | None = None) -> str:
        now = now or datetime.datetime.now(datetime.UTC)
        created = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        must = "1" if version.name == "1.1" else "true"
        parts = [f'<wsse:Security xmlns:wsse="{WSSE_NS}" xmlns:wsu="{WSU_NS}" soap:mustUnderstand="{must}">']
        if self.timestamp:
            expires = (now + datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
            parts.append(f"<wsu:Timestamp><wsu:Created>{created}</wsu:Created>"
                         f"<wsu:Expires>{expires}</wsu:Expires></wsu:Timestamp>")
        parts.append(f"<wsse:UsernameToken><wsse:Username>{escape(self.username)}</wsse:Username>")
        if self.digest:
            nonce = nonce if nonce is not None else os.urandom(16)
            digest = password_digest(nonce, created, self.password)
            parts.append(f'<wsse:Password Type="{PASSWORD_DIGEST}">{digest}</wsse:Password>'
                         f'<wsse:Nonce EncodingType="{BASE64_BINARY}">{base64.b64encode(nonce).decode()}</wsse:Nonce>'
                         f"<wsu:Created>{created}</wsu:Created>")
        else:
            parts.append(f'<wsse:Password Type="{PASSWORD_TEXT}">{escape(self.password)}</wsse:Password>')
        parts.append("</wsse:UsernameToken></wsse:Security>")
        return "".join(parts)


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """The UsernameToken profile's PasswordDigest."""
    return base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()


# ----------------------------------------------------------------------------- the writer


class EnvelopeWriter:
    """Writes the envelopes of one endpoint, its fixed parts prepared once.

    >>> writer = EnvelopeWriter(SOAP11)
    >>> writer.write(b"<m:ping xmlns:m='urn:x'/>")[:60]
    b'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:s'
    """

    __slots__ = ("_close", "_dynamic", "_open", "_static_header", "version")

    def __init__(self, version: SoapVersion, *, header_xml: str = "", addressing: Addressing | None = None,
                 security: UsernameToken | None = None) -> None:
        self.version = version
        # a password-text token without a timestamp never changes: written once
        self._dynamic: list[Any] = []
        static = header_xml
        if security is not None and not security.digest and not security.timestamp:
            static += security.render(version)
        elif security is not None:
            self._dynamic.append(security)
        if addressing is not None:
            self._dynamic.append(addressing)
        self._static_header = static
        self._open = (f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{version.namespace}">'
                      .encode())
        self._close = b"</soap:Body></soap:Envelope>"

    def write(self, body: bytes, action: str | None = None, extra_header: str = "") -> bytes:
        """The whole envelope around ``body`` (the serialised content of soap:Body, without an
        XML declaration); ``extra_header``: more header blocks, serialised."""
        header = self._static_header + extra_header
        if self._dynamic:
            header += "".join(part.render(self.version, action) if isinstance(part, Addressing)
                              else part.render(self.version) for part in self._dynamic)
        head = f"<soap:Header>{header}</soap:Header><soap:Body>".encode() if header else b"<soap:Body>"
        return b"".join((self._open, head, strip_declaration(body), self._close))


def strip_declaration(xml: bytes) -> bytes:
    """Drop a leading XML declaration (it may only start a document, not sit in a Body)."""
    if xml.startswith(b"<?xml"):
        end = xml.find(b"?>")
        if end != -1:
            return xml[end + 2:].lstrip()
    return xml


# ----------------------------------------------------------------------------- faults we send

# The standard codes by either version's name; a fault is written in the request's version.
_STANDARD_CODES = {"client": "sender", "sender": "sender", "server": "receiver", "receiver": "receiver",
                   "versionmismatch": "VersionMismatch", "mustunderstand": "MustUnderstand"}


def fault_code(version: SoapVersion, code: str) -> str:
    """A standard fault code's local name in ``version`` (Client <-> Sender, Server <-> Receiver)."""
    meaning = _STANDARD_CODES.get(code.lower(), code)
    if meaning == "sender":
        return version.sender
    if meaning == "receiver":
        return version.receiver
    return meaning


def fault_status(version: SoapVersion, code: str) -> int:
    """HTTP status of a fault: always 500 in SOAP 1.1; 400 for a Sender fault in 1.2."""
    return 400 if version.name == "1.2" and fault_code(version, code) == "Sender" else 500


def fault_envelope(version: SoapVersion, code: str, string: str, *, subcode: tuple[str | None, str] | None = None,
                   actor: str | None = None, detail: bytes | None = None) -> bytes:
    """A whole envelope holding one Fault.  ``subcode`` is (namespace, local name): a 1.2
    Subcode, or in 1.1 appended to faultcode with a dot (soap:Client.UnknownSymbol).
    ``detail`` is serialised XML put inside detail (1.1) or Detail (1.2)."""
    local = fault_code(version, code)
    inner = strip_declaration(detail).decode() if detail else ""
    if version.name == "1.1":
        faultcode = f"soap:{local}" + (f".{subcode[1]}" if subcode else "")
        parts = [f"<soap:Fault><faultcode>{escape(faultcode)}</faultcode><faultstring>{escape(string)}</faultstring>"]
        if actor:
            parts.append(f"<faultactor>{escape(actor)}</faultactor>")
        if inner:
            parts.append(f"<detail>{inner}</detail>")
    else:
        parts = [f"<soap:Fault><soap:Code><soap:Value>soap:{local}</soap:Value>"]
        if subcode:
            namespace, name = subcode
            declared = f" xmlns:sub={quoteattr(namespace)}" if namespace else ""
            parts.append(f"<soap:Subcode><soap:Value{declared}>{'sub:' if namespace else ''}{escape(name)}"
                         "</soap:Value></soap:Subcode>")
        parts.append(f'</soap:Code><soap:Reason><soap:Text xml:lang="en">{escape(string)}</soap:Text></soap:Reason>')
        if actor:
            parts.append(f"<soap:Role>{escape(actor)}</soap:Role>")
        if inner:
            parts.append(f"<soap:Detail>{inner}</soap:Detail>")
    parts.append("</soap:Fault>")
    return EnvelopeWriter(version).write("".join(parts).encode())
