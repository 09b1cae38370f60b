"""The validate step (WSO2's validate mediator, Camel's validator component): the payload is
checked against a JSON Schema or an XSD, both read and compiled when the flow loads.

A payload that fails answers 422 problem+json with the failing places (``errors``: ``path``
and ``message``, at most 20); a flow can catch it as ``${error.code == 'validation-failed'}``.
JSON Schemas (draft 2020-12) are compiled into the engine's own checks, so a valid payload
costs a few closures; jsonschema explains only the payloads that fail.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lxml import etree

from engine.compiler import CompileContext, StepConfigError
from engine.errors import RequestInvalid
from engine.message import JSON, XML, Message
from engine.paths import OutsideFolder, inside_url
from engine.registry import StepFn, step_kind
from engine.schemacheck import SchemaValidator, unresolved_ref
from engine.xmlsafe import XmlRefused, parse_document

MAX_REPORTED = 20


class _IncludesInside(etree.Resolver):
    """xs:include, xs:import and xs:redefine may name files of the flow folder only; libxml2
    reports a refused one as a mere "failed to parse", so the refusal is kept to be told."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.refused: OutsideFolder | None = None

    def resolve(self, system_url: str | None, public_id: str | None, context: object) -> Any:
        try:
            path = inside_url(self.folder, system_url or "")
        except OutsideFolder as exc:
            self.refused = self.refused or exc
            raise
        return self.resolve_filename(str(path), context)


class ValidationFailed(RequestInvalid):
    code = "validation-failed"
    title = "Payload does not validate"


@step_kind(
    "validate",
    summary="Check the payload against a JSON Schema or an XSD (compiled at load); 422 with the failing paths.",
    category="transform",
    schema={
        "type": "object", "additionalProperties": False, "minProperties": 1,
        "properties": {
            "schema": {"description": "A JSON Schema: a file in the flow folder (e.g. order.schema.json) or the "
                                      "schema itself inline."},
            "xsd": {"type": "string", "description": "An XML Schema file in the flow folder (its imports and "
                                                     "includes resolved beside it, never over the network)."},
            "message": {"type": "string", "description": "The problem's detail (default names the first failure)."},
        },
    },
    examples=[{"schema": "order.schema.json"}, {"xsd": "quote.xsd"},
              {"schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}}],
)
def compile_validate(config: Any, ctx: CompileContext) -> StepFn:
    if ("schema" in config) == ("xsd" in config):
        raise StepConfigError("give schema (JSON Schema) or xsd, one of them")
    ctx.needs_body()
    message = config.get("message")
    if "xsd" in config:
        return _xsd_step(_load_xsd(config["xsd"], ctx), message)
    return _json_step(_load_json_schema(config["schema"], ctx), message)


def _load_json_schema(value: Any, ctx: CompileContext) -> SchemaValidator:
    if isinstance(value, str):
        path = ctx.file_path(value, "schema")
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise StepConfigError(f"{value}: not a JSON document ({exc})", "schema") from exc
    if not isinstance(value, (dict, bool)):
        raise StepConfigError("a JSON Schema is an object (or a file holding one)", "schema")
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        raise StepConfigError(f"not a valid JSON Schema: {exc.message}", "schema") from exc
    problem = unresolved_ref(value)
    if problem is not None:
        raise StepConfigError(f"not a usable JSON Schema: {problem}", "schema")
    return SchemaValidator(value)


def _load_xsd(value: Any, ctx: CompileContext) -> etree.XMLSchema:
    path = ctx.file_path(value, "xsd")
    includes = _IncludesInside(Path(ctx.folder).resolve())
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    parser.resolvers.add(includes)
    try:
        document = parse_document(path.read_bytes(), parser, base_url=str(path))
        return etree.XMLSchema(document)
    except XmlRefused as exc:
        raise StepConfigError(f"{value}: {exc.describe()}", "xsd") from exc
    except (etree.XMLSchemaParseError, OutsideFolder) as exc:
        if includes.refused is not None:
            raise StepConfigError(f"{value}: xs:include or xs:import: {includes.refused}", "xsd") from None
        raise StepConfigError(f"{value}: not a valid XML Schema: {exc}", "xsd") from exc


def _json_step(validator: SchemaValidator, message: str | None) -> StepFn:
    async def run(msg: Message) -> None:
        payload = msg.payload
        if msg.kind != JSON:
            raise ValidationFailed(f"a JSON payload is expected here, the message is {msg.content_type or 'empty'}")
        if validator.is_valid(payload):
            return
        errors = [{"path": _json_path(e.absolute_path), "message": e.message}
                  for e in sorted(validator.iter_errors(payload), key=lambda e: list(map(str, e.path)))]
        first = errors[0]
        raise ValidationFailed(message or f"the payload does not match the schema: {first['path']}: "
                                          f"{first['message']}", extra={"errors": errors[:MAX_REPORTED]})

    return run


def _xsd_step(schema: etree.XMLSchema, message: str | None) -> StepFn:
    async def run(msg: Message) -> None:
        payload = msg.payload
        if msg.kind != XML or payload is None:
            raise ValidationFailed(f"an XML payload is expected here, the message is {msg.content_type or 'empty'}")
        if schema.validate(payload):
            return
        errors = [{"path": _readable_path(payload, entry.path), "line": entry.line, "message": entry.message}
                  for entry in schema.error_log]
        first = errors[0]
        raise ValidationFailed(message or f"the payload does not match the XML Schema: {first['path']}: "
                                          f"{first['message']}", extra={"errors": errors[:MAX_REPORTED]})

    return run


def _readable_path(document: etree._Element, path: str | None) -> str:
    """libxml2 names a namespaced element /*/*[2]; say /quote/price instead."""
    if not path:
        return "/"
    try:
        found = document.getroottree().xpath(path)
    except etree.XPathError:
        return path
    if not isinstance(found, list) or not found or not isinstance(found[0], etree._Element):
        return path
    element: etree._Element | None = found[0]
    names: list[str] = []
    while element is not None:
        names.append(etree.QName(element).localname)
        element = element.getparent()
    return "/" + "/".join(reversed(names))


def _json_path(parts: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
