"""The transform step: XSLT, JMESPath reshaping, JSON to XML and XML to JSON."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jmespath import exceptions as jp_exceptions

from engine.compiler import CompileContext, StepConfigError
from engine.convert import json_to_xml, xml_to_json
from engine.errors import MalformedBody, UnsupportedMediaType
from engine.expressions import compile_query, query_failed, to_text
from engine.message import JSON, XML, Message
from engine.registry import StepFn, step_kind
from engine.steps._shapers import Shaper
from engine.xslt import XsltCompileError, compile_xslt

MODES = ("xslt", "jmespath", "json_to_xml", "xml_to_json")


@step_kind(
    "transform",
    summary="Reshape the payload: XSLT over XML, JMESPath over JSON, or convert JSON <-> XML.",
    category="transform",
    schema={
        "type": "object", "additionalProperties": False, "minProperties": 1,
        "properties": {
            "xslt": {"type": "string", "description": "Stylesheet file, relative to the flow file; compiled at load."},
            "params": {"type": "object", "description": "XSLT string parameters: name: value template."},
            "jmespath": {"type": "string",
                         "description": "JMESPath over the JSON payload; its result is the new payload."},
            "json_to_xml": {
                "type": "object", "additionalProperties": False,
                "description": "Convert the JSON payload to XML.",
                "properties": {
                    "root": {"type": "string", "description": "Root element name (default root); prefix:name uses "
                                                              "a namespace the file declares."},
                    "item": {"type": "string", "description": "Element name of list items (default item)."},
                    "namespace": {"type": "string",
                                  "description": "Namespace URI of the elements (default none); a prefix:name key "
                                                 "uses the namespace the file declares for that prefix."},
                    "prefix": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_.-]*$",
                               "description": "Prefix declared for namespace (default: the default namespace)."}},
            },
            "xml_to_json": {
                "type": "object", "additionalProperties": False,
                "description": "Convert the XML payload to JSON (attributes as @name, mixed text as #text).",
                "properties": {
                    "arrays": {"type": "array", "items": {"type": "string"},
                               "description": "Element names that are always lists, even when single."},
                    "strip_namespaces": {"type": "boolean", "description": "Drop namespace prefixes from names."},
                    "infer_types": {"type": "boolean",
                                    "description": "Turn numeric and true/false texts into numbers and booleans."},
                },
            },
            "content_type": {"type": "string", "description": "Content-Type of the result (default by kind)."},
        },
    },
    examples=[{"xslt": "orders.xsl"},
              {"jmespath": "{trades: orders[*].{ticker: symbol, qty: volume}}"},
              {"xml_to_json": {"arrays": ["order"], "strip_namespaces": True}},
              {"json_to_xml": {"root": "getQuote", "namespace": "http://example.com/stock", "prefix": "m"}}],
)
def compile_transform(config: Any, ctx: CompileContext) -> StepFn:
    modes = [m for m in MODES if m in config]
    if len(modes) != 1:
        given = f", not {' and '.join(modes)}" if modes else ""
        raise StepConfigError(f"give exactly one of {', '.join(MODES)}{given}")
    mode = modes[0]
    if "params" in config and mode != "xslt":
        raise StepConfigError("params go with xslt only", "params")
    ctx.needs_body()
    content_type = config.get("content_type")
    if mode == "xslt":
        return _xslt(config, ctx, content_type)
    if mode == "jmespath":
        return _jmespath(config["jmespath"], ctx, content_type)
    if mode == "json_to_xml":
        options = config["json_to_xml"] or {}
        root, item = str(options.get("root", "root")), str(options.get("item", "item"))
        namespace = str(options["namespace"]) if options.get("namespace") else None
        prefix = str(options["prefix"]) if options.get("prefix") else None
        if prefix and not namespace:
            raise StepConfigError("prefix goes with namespace (the URI it stands for)", ("json_to_xml", "prefix"))
        namespaces = dict(ctx.namespaces)

        def to_xml(msg: Message) -> Any:
            document = _require(msg, JSON, "json_to_xml")
            return json_to_xml(document, root=root, item=item, namespace=namespace, prefix=prefix,
                               namespaces=namespaces)
        return _shaper(to_xml, XML, content_type)
    options = config["xml_to_json"] or {}
    arrays = frozenset(options.get("arrays", []))
    strip = bool(options.get("strip_namespaces", False))
    infer = bool(options.get("infer_types", False))

    def to_json(msg: Message) -> Any:
        element = _require(msg, XML, "xml_to_json")
        return xml_to_json(element, arrays=arrays, strip_namespaces=strip, infer_types=infer)
    return _shaper(to_json, JSON, content_type)


def _shaper(value: Callable[[Message], Any], kind: str, content_type: str | None) -> Shaper:
    """A transform only sets the payload: a foreach may run it on plain items."""
    def apply(msg: Message) -> None:
        msg.set_payload(value(msg), kind, content_type)
    return Shaper(apply, value=value)


def _require(msg: Message, kind: str, what: str) -> Any:
    payload = msg.payload
    if msg.kind != kind:
        got = msg.content_type or "no content type"
        raise UnsupportedMediaType(f"{what} needs a {kind.upper()} payload, got {got}")
    if payload is None and not msg.body:  # the right content type, and no body at all (not JSON null)
        raise MalformedBody(f"{what} needs a {kind.upper()} payload, the request has an empty body")
    return payload


def _xslt(config: Any, ctx: CompileContext, content_type: str | None) -> StepFn:
    path = ctx.file_path(config["xslt"], "xslt")
    try:
        stylesheet = compile_xslt(path, ctx.folder)
    except XsltCompileError as exc:
        raise StepConfigError(f"{path.name}:{exc.line}:{exc.column}: the stylesheet does not compile: {exc}",
                              "xslt") from exc
    params = [(str(k), ctx.template(v, ("params", k))) for k, v in (config.get("params") or {}).items()]

    def transformed(msg: Message) -> Any:
        element = _require(msg, XML, "xslt")
        values = {name: to_text(value.render(msg)) for name, value in params} if params else None
        return stylesheet.apply(element, values)

    return _shaper(transformed, XML, content_type)


def _jmespath(source: str, ctx: CompileContext, content_type: str | None) -> StepFn:
    try:
        query = compile_query(source)
    except jp_exceptions.JMESPathError as exc:
        raise StepConfigError(f"invalid JMESPath: {exc}", "jmespath") from exc

    def reshaped(msg: Message) -> Any:
        document = _require(msg, JSON, "jmespath")
        try:
            return query(document)
        except jp_exceptions.JMESPathError as exc:
            raise query_failed(source, exc, msg) from exc

    return _shaper(reshaped, JSON, content_type)
