"""The one way the engine parses XML from outside: no entities, no DTD, no network.

Decisions, each on purpose:

* **Any DOCTYPE is refused**, with or without entity declarations. SOAP 1.1 and 1.2 forbid a
  DOCTYPE in a message, and the DOCTYPE is where every entity attack lives (billion laughs,
  quadratic blow-up, XXE to ``file://`` or ``http://``, parameter entities, an external DTD).
  Refusing it outright is easier to trust than telling harmless DTDs from hostile ones.
* **Two guards, both independent of the body's size.** A regular expression anchored at the
  start reads only the prolog (XML declaration, comments, processing instructions) and refuses
  a DOCTYPE there before libxml2 sees it. After parsing, the document's DTD slot is checked,
  which catches what the byte scan cannot read (a UTF-16 or UTF-32 body). The parser itself
  never substitutes entities, never loads a DTD and never opens a network connection, so even
  a DOCTYPE that reached it has expanded and fetched nothing when it is refused.
* **libxml2's own limits stay on** (no ``huge_tree``): elements nested deeper than 256 levels
  and text nodes over 10 MB are malformed.
* **Nothing the user may need is removed**: comments, processing instructions and whitespace
  stay; CDATA sections become ordinary text (same XPath and XSLT results).

``serialize_xml`` writes UTF-8 with an XML declaration (``<?xml version='1.0' encoding='UTF-8'?>``):
the body then says its own encoding to a backend that ignores the Content-Type charset, which
legacy SOAP stacks do. Only the root element is written (top-level comments and processing
instructions beside it are not).
"""

from __future__ import annotations

import re

from lxml import etree

from engine.errors import MalformedBody

# resolve_entities=False: entity references stay unexpanded nodes (and a DOCTYPE is refused anyway)
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                         huge_tree=False, collect_ids=False)

# The prolog only: optional UTF-8 byte order mark, then whitespace, processing instructions and
# comments, then a DOCTYPE. Possessive quantifiers keep it linear on hostile input.
_DOCTYPE_IN_PROLOG = re.compile(rb"(?:\xef\xbb\xbf)?(?:[ \t\r\n]++|<\?.*?\?>|<!--.*?-->)*+<!DOCTYPE", re.DOTALL)

DOCTYPE_REFUSED = "XML with a DOCTYPE is refused (DTDs and entity declarations are not allowed)"

# libxml2 messages that name its internals rather than the problem
_REWORDED = {
    "Excessive depth in document": "elements nested deeper than 256 levels",
}


class XmlRefused(ValueError):
    """XML that is malformed or refused, with the position libxml2 reported (0 when unknown).

    Not a FlowError: callers that parse files (stylesheets) report it their own way;
    ``parse_xml`` turns it into a 400 for request bodies.
    """

    def __init__(self, reason: str, line: int = 0, column: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.column = column

    def describe(self) -> str:
        if self.line:
            return f"malformed XML at line {self.line}, column {self.column}: {self.reason}"
        return self.reason


def parse_document(data: bytes, parser: etree.XMLParser = PARSER, base_url: str | None = None) -> etree._Element:
    """Parse untrusted XML bytes with the guards above; raise XmlRefused with line and column."""
    if _DOCTYPE_IN_PROLOG.match(data):
        raise XmlRefused(DOCTYPE_REFUSED)
    try:
        root = etree.fromstring(data, parser, base_url=base_url)
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (0, 0)
        raise XmlRefused(_reason(exc), line, column) from None
    except ValueError as exc:  # a str with an encoding declaration, and the like
        raise XmlRefused(f"malformed XML: {exc}") from None
    if root.getroottree().docinfo.internalDTD is not None:
        raise XmlRefused(DOCTYPE_REFUSED)
    return root


def parse_xml(data: bytes) -> etree._Element:
    """Parse a request or response body; malformed XML or any DOCTYPE is MalformedBody (400).

    The message says what is wrong and, where libxml2 knows it, the line and column (also
    given as the ``line`` and ``column`` members of the problem document).
    """
    try:
        return parse_document(data)
    except XmlRefused as exc:
        extra = {"line": exc.line, "column": exc.column} if exc.line else None
        raise MalformedBody(exc.describe(), extra=extra) from None


def serialize_xml(root: etree._Element) -> bytes:
    """UTF-8 bytes with an XML declaration (see the module notes)."""
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _reason(exc: etree.XMLSyntaxError) -> str:
    # lxml appends the position to the message; it is reported separately
    message = re.sub(r", line \d+, column \d+$", "", str(exc.msg or exc)).strip()
    for prefix, plain in _REWORDED.items():
        if message.startswith(prefix):
            return plain
    return message
