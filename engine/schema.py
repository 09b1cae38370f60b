"""The JSON Schema of flow files, generated from the step and connector registries.

``project_schema()`` is what ``interlace schema`` prints and editors use.  The loader validates
a file's outline with ``outline_schema()`` (step lists only checked to be lists of mappings) and
then each step against its own kind's schema, so that an error names the exact step and key
instead of a wall of "not valid under any of the given schemas".
"""

from __future__ import annotations

from typing import Any

from connectors.base import connector_kinds
from connectors.resilience import settings_schema
from connectors.soap.service import SOURCE_SCHEMA as SOAP_SOURCE_SCHEMA
from engine.dataservice import RESOURCE_SCHEMA
from engine.registry import StepKind, step_kinds
from engine.settings import SETTINGS_SCHEMA
from engine.sources.base import source_kinds
from engine.sources.connector_source import connector_sources
from engine.sources.policy import on_error_schema

SCHEMA_ID = "https://interlace.dev/schema/flows.json"
HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
STEP_META_KEYS: dict[str, Any] = {
    "id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$",
           "description": "A stable name for the step, shown in traces, test reports and the designer."},
    "description": {"type": "string", "description": "What the step is for, in words."},
}

NAME_PATTERN = "^[A-Za-z][A-Za-z0-9_.-]*$"
NAMESPACES = {
    "type": "object",
    "description": "XML namespace prefixes for XPath, e.g. {soap: http://schemas.xmlsoap.org/soap/envelope/}.",
    # XPath has no default namespace: every prefix is an XML name bound to a non-empty URI
    "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_.-]*$"},
    "additionalProperties": {"type": "string", "minLength": 1},
}
SIZE = {"type": ["string", "integer"], "description": "A size: bytes, or e.g. 64KiB, 10MiB."}
JSON_SCHEMA_VALUE = {"type": "object", "description": "A JSON Schema (draft 2020-12) of the content."}


def _http_source() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "description": "Serve the flow on an HTTP route of the facade port.",
        "properties": {
            "method": {"enum": HTTP_METHODS, "description": "The HTTP method (default POST)."},
            "methods": {"type": "array", "items": {"enum": HTTP_METHODS}, "minItems": 1, "uniqueItems": True,
                        "description": "Several methods for the same route."},
            "path": {"type": "string", "pattern": "^/",
                     "description": "Path template; {name} captures a segment, {name:path} the rest."},
            "max_body": {**SIZE, "description": "Largest request body accepted (413 beyond it)."},
            "request": {
                "type": "object", "additionalProperties": False,
                "description": "What the flow accepts, for validation docs and the OpenAPI export.",
                "properties": {"content_type": {"type": "string"}, "schema": JSON_SCHEMA_VALUE,
                               "description": {"type": "string"}},
            },
            "responses": {
                "type": "object", "description": "Answers by status code, for the OpenAPI export.",
                "propertyNames": {"pattern": "^[1-5][0-9][0-9]$"},
                "additionalProperties": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"description": {"type": "string"}, "content_type": {"type": "string"},
                                   "schema": JSON_SCHEMA_VALUE},
                },
            },
            "query": {
                "type": "object", "description": "Query parameters the flow reads, for the OpenAPI export.",
                "additionalProperties": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"required": {"type": "boolean"}, "description": {"type": "string"},
                                   "schema": JSON_SCHEMA_VALUE},
                },
            },
        },
    }


def _flow(steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["source", "steps"],
        "properties": {
            "description": {"type": "string", "description": "What the flow does, shown in docs and OpenAPI."},
            "source": {
                "type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
                "description": "Where messages come from.",
                "properties": {"http": _http_source(), "soap": SOAP_SOURCE_SCHEMA,
                               **{name: {**kind.schema, "description": kind.summary}
                                  for name, kind in source_kinds().items()},
                               **{name: {**operation.schema, "description": operation.summary}
                                  for name, (_, operation) in connector_sources().items()}},
            },
            "namespaces": NAMESPACES,
            "steps": {**steps, "description": "The steps, run in order."},
            "on_error": on_error_schema(steps),
            "policies": {"type": "boolean",
                         "description": "false: the project's settings.policies do not run before this flow "
                                        "(a health route, a public page)."},
        },
    }


def _endpoint() -> dict[str, Any]:
    kinds = connector_kinds()
    return {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": False,
        "description": "A named endpoint: one key naming its connector kind.",
        "properties": {name: settings_schema(cls) for name, cls in sorted(kinds.items())},
    }


def _step_variant(kind: StepKind) -> dict[str, Any]:
    return {
        "type": "object",
        "title": kind.name,
        "description": kind.summary,
        "required": [kind.name],
        "additionalProperties": False,
        "properties": {kind.name: kind.schema, **STEP_META_KEYS},
    }


PARAM_TYPES = ("string", "integer", "number", "boolean", "object", "array", "any")


def _template(steps: dict[str, Any]) -> dict[str, Any]:
    """A sequence with declared parameters (WSO2's call template, Camel's route template)."""
    return {
        "type": "object", "additionalProperties": False, "required": ["steps"],
        "properties": {
            "description": {"type": "string"},
            "params": {
                "type": "object", "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "description": "The parameters, read inside as ${params.NAME}; checked at load where called.",
                "additionalProperties": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"type": {"enum": list(PARAM_TYPES),
                                            "description": "The value's type (default any)."},
                                   "default": {"description": "The value when a call gives none; without a "
                                                              "default the parameter is required."},
                                   "description": {"type": "string"}}}},
            "steps": steps,
        },
    }


def _document(flow: dict[str, Any], steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "An Interlace flow file: flows, endpoints, sequences, namespaces and project settings.",
        "properties": {
            "namespaces": NAMESPACES,
            "settings": SETTINGS_SCHEMA,
            "endpoints": {"type": "object", "propertyNames": {"pattern": NAME_PATTERN},
                          "additionalProperties": _endpoint(),
                          "description": "Named endpoints, referenced by name from call and enrich steps."},
            "sequences": {"type": "object", "propertyNames": {"pattern": NAME_PATTERN},
                          "additionalProperties": {"anyOf": [steps, _template(steps)]},
                          "description": "Named, reusable step lists, called with the sequence step; with "
                                         "params, a template called with arguments."},
            "flows": {"type": "object", "propertyNames": {"pattern": NAME_PATTERN},
                      "additionalProperties": flow, "description": "Flows by name."},
            "resources": {"type": "object", "propertyNames": {"pattern": NAME_PATTERN},
                          "additionalProperties": RESOURCE_SCHEMA,
                          "description": "Data services: tables served as REST resources (list, get, create, "
                                         "replace, update, delete), each route a generated flow."},
        },
    }


def project_schema() -> dict[str, Any]:
    """The whole format, every step kind spelled out: for editors and the designer."""
    kinds = step_kinds()
    steps_def = {"type": "array", "items": {"$ref": "#/$defs/step"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Interlace flows",
        **_document({"$ref": "#/$defs/flow"}, {"$ref": "#/$defs/steps"}),
        "$defs": {
            "steps": steps_def,
            "step": {"anyOf": [_step_variant(k) for k in kinds.values()]},
            "flow": _flow({"$ref": "#/$defs/steps"}),
            # each connector kind's operations, exactly (the call step's schema accepts their union)
            "operations": {f"{name}.{op}": {"description": operation.summary, **operation.schema}
                           for name, cls in connector_kinds().items()
                           for op, operation in getattr(cls, "OPERATIONS", {}).items()},
        },
    }


SHALLOW_STEPS: dict[str, Any] = {"type": "array", "items": {"type": "object"}}


def outline_schema() -> dict[str, Any]:
    """A file's outline; step lists are checked step by step by the compiler."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **_document(_flow(SHALLOW_STEPS), SHALLOW_STEPS)}


def step_config_schema(kind: StepKind) -> dict[str, Any]:
    """One step kind's config schema, with nested step lists checked only as lists."""
    defs = {**kind.schema.get("$defs", {}), "steps": SHALLOW_STEPS}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **kind.schema, "$defs": defs}
