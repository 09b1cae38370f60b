"""The one way the engine parses XML from outside: no entities, no DTD, no network.

Any document type declaration is refused (SOAP forbids them, and they carry the entity
attacks: billion laughs, quadratic blow-up, XXE to files or the network), before the parser
sees the body.
"""

from __future__ import annotations

import re

from lxml import etree

from engine.errors import MalformedBody

PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                         huge_tree=False, collect_ids=False)
_FIRST_ELEMENT = re.compile(rb"<[A-Za-z_:]")


def parse_xml(data: bytes) -> etree._Element:
    """Parse an XML body; anything malformed or with a DOCTYPE is a 400 with the reason."""
    doctype = data.find(b"<!DOCTYPE")
    if doctype >= 0:
        first = _FIRST_ELEMENT.search(data)
        if first is None or doctype < first.start():
            raise MalformedBody("XML with a DOCTYPE is refused (entities and DTDs are not allowed)")
    try:
        root = etree.fromstring(data, PARSER)
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (0, 0)
        reason = str(exc.msg).split(", line ")[0]
        raise MalformedBody(f"malformed XML at line {line}, column {column}: {reason}") from None
    except ValueError as exc:
        raise MalformedBody(f"malformed XML: {exc}") from None
    if root is None:
        raise MalformedBody("malformed XML: no root element")
    return root


def serialize_xml(root: etree._Element) -> bytes:
    """UTF-8 bytes with an XML declaration."""
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)
