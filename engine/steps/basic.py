"""Steps that read and write the message: log, set, remove, payload."""

from __future__ import annotations

import copy
import functools
import logging
import re
from collections.abc import Callable
from typing import Any

from jsonpath_ng import JSONPath
from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext.parser import ExtendedJsonPathParser
from jsonpath_ng.jsonpath import Child, Fields, Index, Root
from lxml import etree

from engine.compiler import CompileContext, StepConfigError
from engine.errors import (
    ExpressionError,
    PayloadShapeError,
    RequestDataInvalid,
    UnencodableValue,
    UnsupportedMediaType,
)
from engine.expression_blame import value_is_request
from engine.expressions import Template, to_text
from engine.message import JSON, TEXT, XML, Message
from engine.registry import StepFn, status_field, step_kind
from engine.steps._placement import ACTION_FIELD, leading_fields, nodes_of, place_json, place_xml, placed_at
from engine.steps._shapers import HEADERS, PAYLOAD, STATUS, VARS, Shaper

log = logging.getLogger("interlace.flow")

TEMPLATE = {"description": "A value; ${...} inside is evaluated per message."}
JSONPATH = {"type": "string", "pattern": r"^\$", "description": "A JSONPath into the JSON payload, e.g. $.order.id."}

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@step_kind(
    "log",
    summary="Write a log line (with the correlation id) from a template.",
    category="observe",
    schema={
        "oneOf": [
            {"type": "string", "description": "The message template."},
            {"type": "object", "additionalProperties": False, "required": ["message"],
             "properties": {
                 "message": {"type": "string", "description": "The message template."},
                 "level": {"enum": list(LEVELS), "description": "Log level (default info)."},
             }},
        ],
    },
    examples=["order ${path.id} received", {"message": "backend said ${status}", "level": "warning"}],
)
def compile_log(config: Any, ctx: CompileContext) -> StepFn:
    text, level_name = (config, "info") if isinstance(config, str) else (config["message"], config.get("level", "info"))
    message = ctx.template(text, () if isinstance(config, str) else "message")
    level = LEVELS[level_name]
    flow = ctx.owner

    async def run(msg: Message) -> None:
        if log.isEnabledFor(level):
            log.log(level, "%s", to_text(message.render(msg)),
                    extra={"correlation_id": msg.correlation_id, "flow": flow})

    return run


_JSONPATH_PARSER: ExtendedJsonPathParser | None = None
# $, then .name and [index] steps: the paths most flows write into, built without the parser
_SIMPLE_JSONPATH = re.compile(r"\$((?:\.[A-Za-z_][A-Za-z0-9_]*|\[(?:0|[1-9][0-9]*)\])*)\Z")
_SIMPLE_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]+)\]")


def simple_jsonpath(text: str) -> JSONPath | None:
    """The tree jsonpath-ng's extended parser makes of ``$.a.b[0]``-shaped paths, or None.

    Names the extended lexer reads otherwise (``where``, ``wherenot``, a leading ``true`` or
    ``false``) are left to the parser; tests/unit/test_jsonpath.py compares both trees."""
    match = _SIMPLE_JSONPATH.match(text)
    if match is None:
        return None
    path: JSONPath = Root()
    for name, index in _SIMPLE_STEP.findall(match[1]):
        if name:
            if name in ("where", "wherenot") or name.startswith(("true", "false")):
                return None
            path = Child(path, Fields(name))
        else:
            path = Child(path, Index(int(index)))
    return path


@functools.lru_cache(maxsize=1024)
def parse_jsonpath(text: str) -> JSONPath:
    """jsonpath-ng's ``parse`` builds its LALR tables on every call (about 65 ms): build them once,
    and parse each distinct path once (a parsed path is never changed).  Simple paths
    (``$.customer_info``, ``$.items[0].id``) are built directly, so a project whose paths are all
    simple never builds the tables (60-80 ms of start-up)."""
    global _JSONPATH_PARSER
    simple = simple_jsonpath(text)
    if simple is not None:
        return simple
    if _JSONPATH_PARSER is None:
        _JSONPATH_PARSER = ExtendedJsonPathParser()
    return _JSONPATH_PARSER.parse(text)


def compile_jsonpath(text: str, ctx: CompileContext, key: Any) -> JSONPath:
    try:
        return parse_jsonpath(text)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
        raise StepConfigError(f"invalid JSONPath {text!r}: {exc}", key) from exc


def json_payload(msg: Message, what: str) -> Any:
    """The JSON payload (None for an empty body).  Another media type is the caller's mistake
    while the body is still the request's as it came (415), otherwise the flow's (500)."""
    payload = msg.payload
    if msg.kind != JSON and payload is not None:
        if msg.payload_is_request:
            raise UnsupportedMediaType(f"{what} needs a JSON body; the request's is "
                                       f"{msg.content_type or 'of no declared type'}")
        raise ExpressionError(f"{what} needs a JSON payload, the message is {msg.content_type or 'unknown'}")
    return payload


_JSON_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
                    float: "a number"}


def write_into(msg: Message, path: JSONPath, value: Any, what: str) -> None:
    """Write ``value`` at a JSONPath of the JSON payload, creating what is missing; an empty
    body is an empty object.  A payload of another shape (``[1]``, ``5``, ``"x"`` where
    ``$.id`` needs an object) is refused with 422 while the places on the way are what the caller
    sent (``payload_is_request_at``), with 500 when a step built the payload or wrote there.
    The rest of the caller's body stays the caller's (``set_payload_edited``)."""
    document = json_payload(msg, what)
    if document is None:
        document = {}
    try:
        updated = path.update_or_create(document, value)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
        shape = _JSON_TYPE_NAMES.get(type(document), "a value")
        detail = f"{what} {str(path).strip('()')} needs a JSON payload it can write into, not {shape}"
        if msg.payload_is_request_at(leading_fields(path)[0]):
            raise PayloadShapeError(f"{detail}: send a JSON object", internal=repr(exc)) from None
        raise PayloadShapeError(detail, status=500, internal=repr(exc)) from None
    msg.set_payload_edited(updated, (leading_fields(path)[0],) if msg.payload_is_request else ((),))


def write_at(msg: Message, path: JSONPath, value: Any) -> None:
    """Write ``value`` at a JSONPath of the JSON payload, creating what is missing."""
    write_into(msg, path, value, "writing at")


SET_TARGETS = ("var", "header", "path", "vars", "headers", "status")


@step_kind(
    "set",
    summary="Set a variable, a header, a location in the JSON or XML payload (replacing it, or added as a child "
            "or a sibling), or the status.",
    category="message",
    schema={
        "type": "object", "additionalProperties": False, "minProperties": 1,
        "properties": {
            "var": {"type": "string", "description": "Variable to set (read back as ${vars.NAME})."},
            "header": {"type": "string", "description": "Header to set on the current message."},
            "path": JSONPATH,
            "xpath": {"type": "string",
                      "description": "An XPath into the XML payload (the flow's namespaces in scope), e.g. "
                                     "/order/items: the value (markup or text) goes there, as action says."},
            "action": ACTION_FIELD,
            "value": TEMPLATE,
            "vars": {"type": "object", "description": "Several variables at once: name: value."},
            "headers": {"type": "object", "description": "Several headers at once: name: value."},
            "status": status_field("The status the answer will carry."),
        },
    },
    examples=[{"var": "customer", "value": "${payload.customerId}"},
              {"header": "X-Source", "value": "interlace"},
              {"path": "$.order.status", "value": "accepted"},
              {"path": "$.order.lines", "action": "child", "value": {"sku": "${vars.sku}", "qty": 1}},
              {"xpath": "/order/lines", "action": "child", "value": "<line sku=\"${vars.sku}\">1</line>"}],
)
def compile_set(config: Any, ctx: CompileContext) -> StepFn:
    targets = [k for k in ("var", "header", "path", "xpath") if k in config]
    if len(targets) > 1:
        raise StepConfigError(f"set one of var, header, path or xpath per step, not {' and '.join(targets)}")
    if targets and "value" not in config:
        raise StepConfigError(f"{targets[0]} needs a value", targets[0])
    if "value" in config and not targets:
        raise StepConfigError("value needs a target: var, header, path or xpath", "value")
    action = str(config.get("action", "replace"))
    if "action" in config and not {"path", "xpath"} & set(targets):
        raise StepConfigError("action places a value in the payload: it goes with path or xpath", "action")
    actions: list[Callable[[Message], None]] = []
    if "var" in config:
        actions.append(_set_var(str(config["var"]), ctx.template(config["value"], "value")))
    if "header" in config:
        actions.append(_set_header(str(config["header"]), ctx.template(config["value"], "value")))
    if "path" in config:
        path = compile_jsonpath(str(config["path"]), ctx, "path")
        value = ctx.template(config["value"], "value")
        ctx.needs_body()
        actions.append(_placed_json(path, value, action) if action != "replace"
                       else lambda msg: write_at(msg, path, value.render(msg)))
    if "xpath" in config:
        actions.append(_placed_xml(config, ctx, action))
    for name, value in (config.get("vars") or {}).items():
        actions.append(_set_var(str(name), ctx.template(value, ("vars", name))))
    for name, value in (config.get("headers") or {}).items():
        actions.append(_set_header(str(name), ctx.template(value, ("headers", name))))
    if "status" in config:
        status = ctx.template(config["status"], "status")

        def set_status(msg: Message) -> None:
            msg.status = _status(status.render(msg), status, msg)
        actions.append(set_status)

    writes = frozenset(part for part, keys in ((VARS, ("var", "vars")), (HEADERS, ("header", "headers")),
                                               (PAYLOAD, ("path", "xpath")), (STATUS, ("status",)))
                       if any(k in config for k in keys))
    if len(actions) == 1:
        return Shaper(actions[0], writes)  # a foreach may run it on plain items

    def apply(msg: Message) -> None:
        for action in actions:
            action(msg)

    return Shaper(apply, writes)


def _placed_json(path: JSONPath, value: Template, action: str) -> Callable[[Message], None]:
    def place(msg: Message) -> None:
        document = json_payload(msg, f"set {action} at")
        placed = value.render(msg)
        place_json(msg, document, path, placed, action, "set at")
        msg.set_payload_edited(document, placed_at(path, action, placed) if msg.payload_is_request else ((),))
    return place


def _placed_xml(config: Any, ctx: CompileContext, action: str) -> Callable[[Message], None]:
    """``set: {xpath, value, action}``: the XPath and the value's markup parsed at load."""
    try:
        xpath = etree.XPath(str(config["xpath"]), namespaces=ctx.namespaces, smart_strings=False)
    except etree.XPathError as exc:
        raise StepConfigError(f"invalid XPath {config['xpath']!r}: {exc}", "xpath") from exc
    ctx.needs_body()
    value = config["value"]
    if isinstance(value, str) and value.lstrip().startswith("<"):
        declared = "".join(f' xmlns:{prefix}="{uri}"' for prefix, uri in ctx.namespaces.items())
        fragment = XmlTemplate(f"<interlace-fragment{declared}>{value}</interlace-fragment>", ctx, "value")
        if (fragment.root.text or "").strip() or any((child.tail or "").strip() for child in fragment.root):
            raise StepConfigError("the value mixes markup and text: give elements, or text alone", "value")
        return lambda msg: place_xml(msg, xpath, list(fragment.render(msg)), action, "set at")
    template = ctx.template(value, "value")
    return lambda msg: place_xml(msg, xpath, nodes_of(template.render(msg)), action, "set at")


def _status(value: Any, template: Template | None = None, msg: Message | None = None) -> int:
    """The status ``template`` gave on ``msg``: a value that is none is the caller's mistake (422
    request-data-invalid) when the template read it from what the caller sent, as it came
    (``${payload.status}`` on the request's body), else the flow's (500), as resequence's number."""
    try:
        status = int(value)
    except (TypeError, ValueError):
        status = None
    if status is not None and 100 <= status <= 599:
        return status
    detail = f"status must be a number from 100 to 599, got {str(value)[:40]!r}"
    if template is not None and msg is not None \
            and value_is_request(tuple(e.blame for e in template.expressions), msg):
        raise RequestDataInvalid(f"the request does not fit this flow: {detail}")
    raise ExpressionError(detail)


def _set_var(name: str, value: Template) -> Callable[[Message], None]:
    def action(msg: Message) -> None:
        msg.vars[name] = value.render(msg)
    return action


def _set_header(name: str, value: Template) -> Callable[[Message], None]:
    def action(msg: Message) -> None:
        msg.set_header(name, to_text(value.render(msg)))
    return action


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


@step_kind(
    "remove",
    summary="Remove variables, headers, or locations of the JSON payload.",
    category="message",
    schema={
        "type": "object", "additionalProperties": False, "minProperties": 1,
        "properties": {
            "var": {"type": ["string", "array"], "items": {"type": "string"}, "description": "Variable(s)."},
            "header": {"type": ["string", "array"], "items": {"type": "string"}, "description": "Header(s)."},
            "path": {"type": ["string", "array"], "items": JSONPATH, "description": "JSONPath(s) to delete."},
        },
    },
    examples=[{"header": ["Authorization", "Cookie"]}, {"path": "$.internal"}],
)
def compile_remove(config: Any, ctx: CompileContext) -> StepFn:
    var_names = _names(config["var"]) if "var" in config else []
    header_names = _names(config["header"]) if "header" in config else []
    paths = [compile_jsonpath(p, ctx, "path") for p in _names(config["path"])] if "path" in config else []
    if paths:
        ctx.needs_body()

    def apply(msg: Message) -> None:
        for name in var_names:
            msg.vars.pop(name, None)
        for name in header_names:
            msg.remove_header(name)
        if paths:
            document = json_payload(msg, "removing at a JSONPath")
            if document is None:
                return
            for path in paths:
                try:
                    document = path.filter(lambda _: True, document)
                except (TypeError, AttributeError, KeyError, IndexError) as exc:
                    raise PayloadShapeError(f"removing {path} needs a JSON object or array, not "
                                            f"{_JSON_TYPE_NAMES.get(type(document), 'a value')}",
                                            status=422 if msg.payload_is_request_at(leading_fields(path)[0])
                                            else 500, internal=repr(exc)) from None
            # what was removed is the flow's doing (its absence read later is no caller's mistake)
            msg.set_payload_edited(document, tuple(leading_fields(p)[0] for p in paths) if msg.payload_is_request
                                   else ((),))

    writes = frozenset(part for part, names in ((VARS, var_names), (HEADERS, header_names), (PAYLOAD, paths))
                       if names)
    return Shaper(apply, writes)  # a foreach may run it on plain items


# --- payload ----------------------------------------------------------------------------------

BODY_SCHEMA: dict[str, Any] = {
    "json": {"description": "A JSON body: any YAML structure; strings may hold ${...}."},
    "xml": {"type": "string", "description": "An XML body; ${...} allowed in text and attribute values."},
    "text": {"type": "string", "description": "A text body template."},
    "content_type": {"type": "string", "description": "Content-Type of the new body (default by kind)."},
}


class XmlTemplate:
    """An XML document parsed once; its ``${...}`` texts and attributes filled per message."""

    def __init__(self, text: str, ctx: CompileContext, key: Any) -> None:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_blank_text=False)
        try:
            self.root = etree.fromstring(text.encode(), parser)
        except etree.XMLSyntaxError as exc:
            reason = str(exc)
            if text.startswith("<interlace-fragment"):  # set: {xpath}'s markup, parsed inside this wrapper
                reason = re.sub(r", line \d+, column \d+.*", "", reason).replace("interlace-fragment", "value")
            raise StepConfigError(f"the XML template is not well-formed: {reason}", key) from exc
        self.holes: list[tuple[list[int], str, Template]] = []
        for element in self.root.iter():
            route = _route_to(self.root, element)
            for where in ("text", "tail"):
                value = getattr(element, where)
                if value and "${" in value:
                    self.holes.append((route, where, ctx.template(value, key)))
            for name, value in element.attrib.items():
                if "${" in value:
                    self.holes.append((route, "@" + str(name), ctx.template(value, key)))

    def render(self, msg: Message) -> etree._Element:
        root = copy.deepcopy(self.root)
        for route, where, template in self.holes:
            element = root
            for index in route:
                element = element[index]
            value = template.render(msg)
            try:
                if where.startswith("@"):
                    element.set(where[1:], to_text(value))
                elif isinstance(value, etree._Element) and where == "text":
                    element.text = None
                    element.append(copy.deepcopy(value))
                else:
                    setattr(element, where, to_text(value))
            except ValueError:  # lxml: "All strings must be XML compatible"
                raise UnencodableValue(_xml_refusal(to_text(value))) from None
        return root


def _xml_refusal(text: str) -> str:
    bad = next((ch for ch in text if (ord(ch) < 0x20 and ch not in "\t\n\r") or 0xFFFE <= ord(ch) <= 0xFFFF
                or 0xD800 <= ord(ch) <= 0xDFFF), None)
    which = f"U+{ord(bad):04X}" if bad is not None else "a character"
    return (f"a value for the XML template holds {which}, which XML 1.0 cannot carry (not even escaped); "
            "send the value without control characters")


def _route_to(root: etree._Element, element: etree._Element) -> list[int]:
    route: list[int] = []
    while element is not root:
        parent = element.getparent()
        assert parent is not None
        route.append(parent.index(element))
        element = parent
    return list(reversed(route))


def compile_body(config: Any, ctx: CompileContext) -> Callable[[Message], None] | None:
    """The json/xml/text body of a payload or respond step, as a setter; None if none given."""
    found = compile_body_value(config, ctx)
    if found is None:
        return None
    value, kind, _ = found
    content_type = config.get("content_type")
    return lambda msg: msg.set_payload(value(msg), kind, content_type)


ForItems = Callable[[str], tuple[Callable[..., list[Any]], bool] | None]


def compile_body_value(config: Any, ctx: CompileContext
                       ) -> tuple[Callable[[Message], Any], str, ForItems | None] | None:
    """The json/xml/text body as (the new payload from a message, its kind, for a JSON body its
    template's for_items); None if none given."""
    kinds = [k for k in ("json", "xml", "text") if k in config]
    if len(kinds) > 1:
        raise StepConfigError(f"give one body: json, xml or text, not {' and '.join(kinds)}")
    if not kinds:
        return None
    if "json" in config:
        template = ctx.template(config["json"], "json")
        return template.renderer, JSON, template.for_items
    if "xml" in config:
        return XmlTemplate(str(config["xml"]), ctx, "xml").render, XML, None
    text = ctx.template(str(config["text"]), "text").renderer
    return (lambda msg: to_text(text(msg))), TEXT, None


@step_kind(
    "payload",
    summary="Replace the body with a JSON, XML or text document built from a template.",
    category="message",
    schema={"type": "object", "additionalProperties": False, "minProperties": 1, "properties": BODY_SCHEMA},
    examples=[{"json": {"id": "${path.id}", "total": "${payload.amount}"}},
              {"xml": "<getOrder><id>${path.id}</id></getOrder>"}],
)
def compile_payload(config: Any, ctx: CompileContext) -> StepFn:
    found = compile_body_value(config, ctx)
    if found is None:
        raise StepConfigError("payload needs a body: json, xml or text")
    value, kind, each = found  # each: a JSON body, which a foreach may render for all its items at once
    content_type = config.get("content_type")

    def apply(msg: Message) -> None:
        msg.set_payload(value(msg), kind, content_type)
    return Shaper(apply, value=value, each=each)  # it only sets the payload: a foreach may run it on plain items
