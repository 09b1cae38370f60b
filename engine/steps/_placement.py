"""Where a value goes in a payload, and how (WSO2's enrich actions): ``replace`` what is there,
add it as a ``child`` of what is there, or as its ``sibling``, next to it.

JSON (a JSONPath):
- replace: the value takes the place (missing objects on the way are created), as ``set: {path}``
  always did;
- child: appended to the array found there, or its keys added to the object found there;
- sibling: inserted after the element found in its array, or its keys added beside the member
  found in its object.

XML (an XPath over the payload, the flow's ``namespaces`` in scope):
- replace: the element is replaced by the value's elements, or its content by the value's text;
- child: the value's elements (or text) become the element's last children;
- sibling: they are inserted right after the element.

A value for XML is markup written in the flow (one or more elements, parsed once at load as a
fragment with the flow's namespace prefixes declared; its ``${...}`` fill texts and attributes as
in the payload step's XML, so a request's value never becomes markup), or a template giving text
or elements.  Every match gets its own copy of the value.
"""

from __future__ import annotations

import copy
from typing import Any

from jsonpath_ng import JSONPath
from jsonpath_ng.jsonpath import Child, DatumInContext, Fields, Index, Root
from lxml import etree

from engine.errors import ExpressionError, PayloadShapeError, UnsupportedMediaType
from engine.message import XML, Message

ACTIONS = ("replace", "child", "sibling")
ACTION_FIELD: dict[str, Any] = {
    "enum": list(ACTIONS),
    "description": "How the value is placed (WSO2's enrich actions): replace what is there (default), add it as a "
                   "child (appended to an array, keys added to an object, or the element's last child), or as a "
                   "sibling (after the array element or the XML element, or keys beside the object member).",
}

_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}


def leading_fields(path: JSONPath) -> tuple[tuple[str, ...], bool]:
    """The field names a JSONPath starts with from its root, and whether they are all of it:
    ``$.a.b`` gives (("a", "b"), True); ``$.a.b[0].c`` (("a", "b"), False); ``$..x`` and ``$``
    ((), False) and ((), True).  Where a step wrote, or which place of the payload a refusal is
    about, as ``Message.payload_is_request_at`` takes it."""
    steps: list[JSONPath] = []
    node = path
    while isinstance(node, Child):
        steps.append(node.right)
        node = node.left
    if not isinstance(node, Root):
        return (), False
    fields: list[str] = []
    for step in reversed(steps):
        if isinstance(step, Child) or not (isinstance(step, Fields) and len(step.fields) == 1
                                           and step.fields[0] != "*"):
            return tuple(fields), False
        fields.append(step.fields[0])
    return tuple(fields), True


def placed_at(path: JSONPath, action: str, value: Any) -> tuple[tuple[str, ...], ...]:
    """Where placing ``value`` at ``path`` as ``action`` writes, for ``Message.set_payload_edited``:
    replace writes at the path; a child goes into what is there (the keys of an object value,
    when the path names one place); a sibling beside it, in its parent (the keys of an object
    value, or the array it sits in)."""
    fields, whole = leading_fields(path)
    if action == "replace" or not whole:
        return (fields,)
    keys = tuple(value) if type(value) is dict else None
    if action == "child":
        return tuple((*fields, key) for key in keys) if keys is not None else (fields,)
    if not fields:
        return ((),)  # the root has no siblings: refused before anything is written
    return tuple((*fields[:-1], key) for key in keys) if keys is not None else (fields[:-1],)


def _refused(msg: Message, detail: str, at: tuple[str, ...] = ()) -> PayloadShapeError:
    """A payload that cannot take the value: the caller's mistake while what lies at ``at`` is
    still what the caller sent (``payload_is_request_at``: a payload a step built, or a place of it
    a step wrote, is the flow's, whatever the headers)."""
    if msg.payload_is_request_at(at):
        return PayloadShapeError(detail)
    return PayloadShapeError(detail, status=500)


def _kind(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), "a value")


# --- JSON ----------------------------------------------------------------------------------


def place_json(msg: Message, document: Any, path: JSONPath, value: Any, action: str, what: str) -> Any:
    """``document`` with ``value`` added at ``path`` as a child or a sibling (changed in place)."""
    where = str(path).strip("()")
    at = leading_fields(path)[0]
    found = path.find(document)
    if not found:
        raise _refused(msg, f"{what} {where}: nothing there to add a {action} to", at)
    copies = len(found) > 1
    if action == "child":
        for datum in found:
            _add_child(msg, datum.value, copy.deepcopy(value) if copies else value, where, what, at)
        return document
    # siblings: later positions of one array first, so that earlier indexes stay right
    for datum in sorted(found, key=_position, reverse=True):
        _add_sibling(msg, datum, copy.deepcopy(value) if copies else value, where, what, at)
    return document


def _position(datum: DatumInContext) -> int:
    return _index(datum) or 0


def _index(datum: DatumInContext) -> int | None:
    """Where a match sits in its array (one index: a match of ``[*]`` or ``[0]``), or None."""
    path = datum.path
    if isinstance(path, Index) and len(path.indices) == 1:
        return int(path.indices[0])
    return None


def _add_child(msg: Message, target: Any, value: Any, where: str, what: str, at: tuple[str, ...]) -> None:
    if type(target) is list:
        target.append(value)
    elif type(target) is dict and type(value) is dict:
        target.update(value)
    elif type(target) is dict:
        raise _refused(msg, f"{what} {where} is an object: a child of it must be an object (its keys are added), "
                            f"not {_kind(value)}", at)
    else:
        raise _refused(msg, f"{what} {where} is {_kind(target)}: a child goes into an array or an object", at)


def _add_sibling(msg: Message, datum: DatumInContext, value: Any, where: str, what: str,
                 at: tuple[str, ...]) -> None:
    parent = datum.context
    if parent is None:
        raise _refused(msg, f"{what} {where} is the whole payload: it has no siblings", at)
    container = parent.value
    index = _index(datum)
    if type(container) is list and index is not None:
        container.insert(index + 1, value)
    elif type(container) is dict and isinstance(datum.path, Fields) and type(value) is dict:
        container.update(value)
    elif type(container) is dict:
        raise _refused(msg, f"{what} {where} is an object's member: a sibling of it must be an object (its keys "
                            f"are added beside it), not {_kind(value)}", at)
    else:
        raise _refused(msg, f"{what} {where}: a sibling goes into an array or an object", at)


# --- XML -----------------------------------------------------------------------------------


Nodes = list[etree._Element] | str


def nodes_of(value: Any) -> Nodes:
    """A rendered value that is not markup written in the flow: elements (e.g. ``${vars.saved}``
    holding an element, copied) or text; never parsed, so a request's text stays text."""
    if isinstance(value, etree._Element):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, etree._Element) for v in value):
        return list(value)
    if isinstance(value, dict | list):
        raise ExpressionError(f"an XML payload takes elements or text, not {_kind(value)}")
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def place_xml(msg: Message, xpath: etree.XPath, nodes: Nodes, action: str, what: str) -> None:
    root = msg.payload
    if msg.kind != XML or not isinstance(root, etree._Element):
        if msg.payload_is_request and root is not None:
            raise UnsupportedMediaType(f"{what} {xpath.path} needs an XML body; the request's is "
                                       f"{msg.content_type or 'of no declared type'}")
        raise ExpressionError(f"{what} {xpath.path} needs an XML payload, the message is "
                              f"{msg.content_type or 'empty'}")
    found = xpath(root)
    targets = [node for node in found if isinstance(node, etree._Element)] if isinstance(found, list) else []
    if not targets:
        raise _refused(msg, f"{what} {xpath.path}: no element there" if not isinstance(found, list) or not found
                       else f"{what} {xpath.path} selects text or attributes; it must select elements")
    for target in targets:
        placed = nodes if isinstance(nodes, str) else [copy.deepcopy(node) for node in nodes]
        if action == "child":
            _append(target, placed)
        elif target is root and action == "replace":
            if isinstance(placed, str):
                _set_text(target, placed)
            elif len(placed) != 1:
                raise _refused(msg, f"{what} {xpath.path} is the document's root: it is replaced by one element, "
                                    f"not {len(placed)}")
            else:
                root = placed[0]
        elif target is root:
            raise _refused(msg, f"{what} {xpath.path} is the document's root: it has no siblings")
        elif action == "replace":
            if isinstance(placed, str):
                _set_text(target, placed)
            else:
                _replace(target, placed)
        else:
            _insert_after(target, placed)
    msg.set_payload(root, XML, msg.content_type)


def _set_text(element: etree._Element, text: str) -> None:
    for child in list(element):
        element.remove(child)
    element.text = text


def _append(element: etree._Element, placed: Nodes) -> None:
    if isinstance(placed, str):
        last = element[-1] if len(element) else None
        if last is None:
            element.text = (element.text or "") + placed
        else:
            last.tail = (last.tail or "") + placed
        return
    for node in placed:
        element.append(node)


def _insert_after(element: etree._Element, placed: Nodes) -> None:
    if isinstance(placed, str):
        element.tail = (element.tail or "") + placed
        return
    for node in reversed(placed):
        node.tail = None
        element.addnext(node)


def _replace(element: etree._Element, placed: list[etree._Element]) -> None:
    parent = element.getparent()
    assert parent is not None  # the root is handled by the caller
    tail = element.tail
    at = parent.index(element)
    parent.remove(element)  # lxml moves the tail with the element: keep it after what replaces it
    for offset, node in enumerate(placed):
        parent.insert(at + offset, node)
    if placed:
        placed[-1].tail = tail
    elif at:
        parent[at - 1].tail = (parent[at - 1].tail or "") + (tail or "")
    else:
        parent.text = (parent.text or "") + (tail or "")
