"""JSON <-> XML conversion for the transform step, with one documented convention.

XML to JSON: ``{"root": content}``.  An element with neither attributes nor children is its
text (``null`` when empty); attributes become ``"@name"`` keys and text beside attributes or
children ``"#text"``; repeated child elements become lists, and names listed in ``arrays``
are lists even when single.  Names keep their prefix (``"soap:Body"``) unless
``strip_namespaces``.  Texts stay strings unless ``infer_types`` turns numbers and
``true``/``false`` into JSON numbers and booleans.

JSON to XML: a mapping's keys become child elements (``"@x"`` an attribute, ``"#text"`` the
text), a list under a key repeats that element, a list elsewhere becomes ``<item>``s; a key
that is not a valid XML name has its invalid characters replaced by ``_`` (and a leading
digit prefixed with ``_``); null is an empty element; booleans are ``true``/``false``.
``namespace`` (and ``prefix``) put the elements in a namespace; a ``soap:Body`` key whose
prefix the flow file declares goes into that namespace.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from lxml import etree

_NAME_START = re.compile(r"^[A-Za-z_]")
_NAME_INVALID = re.compile(r"[^A-Za-z0-9_.\-]")


def xml_name(key: str) -> str:
    """A valid XML element name for a JSON key."""
    name = _NAME_INVALID.sub("_", key) or "_"
    if not _NAME_START.match(name) or name.lower().startswith("xml"):
        name = "_" + name
    return name


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


class _Names:
    """Element and attribute names of a JSON to XML conversion: a ``prefix:name`` key whose
    prefix the flow file declares goes into that namespace; other element names into
    ``namespace`` (none by default); plain attributes stay in no namespace, as XML has them."""

    __slots__ = ("default", "known", "tags")

    def __init__(self, namespace: str | None, known: dict[str, str]) -> None:
        self.default = namespace
        self.known = known
        self.tags: dict[str, str] = {}

    def element(self, key: str) -> str:
        tag = self.tags.get(key)
        if tag is None:
            prefix, _, local = key.partition(":")
            if local and prefix in self.known:
                tag = f"{{{self.known[prefix]}}}{xml_name(local)}"
            elif self.default:
                tag = f"{{{self.default}}}{xml_name(key)}"
            else:
                tag = xml_name(key)
            self.tags[key] = tag
        return tag

    def attribute(self, key: str) -> str:
        prefix, _, local = key.partition(":")
        if local and prefix in self.known:
            return f"{{{self.known[prefix]}}}{xml_name(local)}"
        return xml_name(key)


def _fill(element: etree._Element, value: Any, item: str, names: _Names) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            key = str(key)
            if key.startswith("@"):
                element.set(names.attribute(key[1:]), _text(child) or "")
            elif key == "#text":
                element.text = _text(child)
            elif isinstance(child, list):
                tag = names.element(key)
                for entry in child:
                    _fill(etree.SubElement(element, tag), entry, item, names)
            else:
                _fill(etree.SubElement(element, names.element(key)), child, item, names)
    elif isinstance(value, list):
        for entry in value:
            _fill(etree.SubElement(element, item), entry, item, names)
    else:
        element.text = _text(value)


def json_to_xml(value: Any, root: str = "root", item: str = "item", *, namespace: str | None = None,
                prefix: str | None = None, namespaces: dict[str, str] | None = None) -> etree._Element:
    """``namespace`` puts the elements (root, keys, items) in that namespace, declared with
    ``prefix`` (else as the default namespace); a ``p:name`` key or root goes into the namespace
    ``namespaces`` (the flow file's) declares for ``p``."""
    known = dict(namespaces or {})
    names = _Names(namespace, known)
    # a prefix the file declares for ``namespace`` itself would win over the default namespace
    nsmap: dict[str | None, str] = {p: uri for p, uri in known.items() if uri != namespace or prefix == p}
    if namespace:
        nsmap[prefix or None] = namespace
    element = etree.Element(names.element(root), nsmap=nsmap)
    _fill(element, value, names.element(item), names)
    etree.cleanup_namespaces(element)  # declare only what the document uses
    return element


def _typed(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if number == number and number not in (float("inf"), float("-inf")) else text


class _Converter:
    def __init__(self, arrays: Collection[str], strip_namespaces: bool, infer_types: bool) -> None:
        self.arrays = arrays
        self.strip = strip_namespaces
        self.infer = infer_types

    def name(self, element: etree._Element) -> str:
        qname = etree.QName(element)
        if self.strip or not element.prefix:
            return str(qname.localname)
        return f"{element.prefix}:{qname.localname}"

    def attribute_name(self, key: str) -> str:
        if key.startswith("{"):
            return "@" + etree.QName(key).localname
        return "@" + key

    def text(self, text: str | None) -> Any:
        if text is None:
            return None
        return _typed(text) if self.infer else text

    def content(self, element: etree._Element) -> Any:
        children = [c for c in element if isinstance(c.tag, str)]  # skip comments and PIs
        # mixed content: the element's own text and the text between its children
        text = "".join([element.text or "", *(c.tail or "" for c in element)]).strip() or None
        if not children and not element.attrib:
            return self.text(element.text if element.text else None)
        result: dict[str, Any] = {self.attribute_name(str(k)): self.text(v) for k, v in element.attrib.items()}
        for child in children:
            key = self.name(child)
            value = self.content(child)
            if key in result:
                existing = result[key]
                if isinstance(existing, list) and (key in self.arrays or getattr(existing, "_repeated", False)):
                    existing.append(value)
                else:
                    result[key] = _Repeated([existing, value])
            else:
                result[key] = _Repeated([value]) if key in self.arrays else value
        if text is not None:
            result["#text"] = self.text(text)
        return {k: list(v) if isinstance(v, _Repeated) else v for k, v in result.items()}


class _Repeated(list[Any]):
    """A list made by the converter (as opposed to a JSON value that is itself a list)."""

    _repeated = True


def xml_to_json(element: etree._Element, arrays: Collection[str] = (), strip_namespaces: bool = False,
                infer_types: bool = False) -> Any:
    converter = _Converter(frozenset(arrays), strip_namespaces, infer_types)
    return {converter.name(element): converter.content(element)}
