"""`interlace openapi`: the OpenAPI 3.1 document of a flow folder's HTTP routes, for the gateway.

Generated from the same flows that serve, so the gateway's API and the facade never drift
apart: every route with its path and query parameters, the request and response schemas a
flow declares, and the RFC 9457 problem answers every route can give.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from deploy.openapi_policies import policies_of
from deploy.openapi_soap import soap_paths
from engine.errors import PATH_PARAMETER_PATTERN
from engine.loader import LoadErrors, load_project
from engine.model import Project

_CONVERTED = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?}")

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "correlation_id": {"type": "string", "description": "Quote it when reporting a problem."},
    },
}

# What any route may answer besides its own responses: what the engine itself answers
# (engine/errors.py, engine/front.py), whatever the flow does.
STANDARD_PROBLEMS = {
    "400": "A malformed JSON or XML body, a missing one where the route declares it, or a value that cannot go "
           "into a backend's URL or a header.",
    "413": "A body larger than the route's limit.",
    "502": "A backend could not be reached or answered an error.",
    "503": "A backend's circuit breaker is open.",
    "504": "A backend did not answer in time.",
}
# Answered only where the route declares what it accepts.
MEDIA_TYPE_PROBLEM = ("415", "A media type other than the one the route accepts.")
SCHEMA_PROBLEM = ("422", "A body that does not match the declared request schema.")


# what the front refuses in a path parameter (400 bad-path-parameter): C0 controls and DEL
NO_CONTROLS = PATH_PARAMETER_PATTERN


def _parameter_schema(path: str, name: str) -> dict[str, Any]:
    match = re.search(r"{" + re.escape(name) + r":([a-z]+)}", path)
    kind = match.group(1) if match else "str"
    return {"int": {"type": "integer"}, "float": {"type": "number"},
            "uuid": {"type": "string", "format": "uuid"}}.get(kind, {"type": "string", "pattern": NO_CONTROLS})


def openapi_document(project: Project, *, title: str | None = None, version: str = "1.0.0") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    security_schemes: dict[str, Any] = {}
    for flow in sorted(project.flows, key=lambda f: f.source.path if f.source else ""):
        source = flow.source
        if source is None:
            continue
        route = _CONVERTED.sub(r"{\1}", source.path)
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": _parameter_schema(source.path, name)}
            for name in source.path_params
        ]
        for name, spec in (source.query or {}).items():
            parameter: dict[str, Any] = {"name": name, "in": "query", "required": bool(spec.get("required")),
                                         "schema": spec.get("schema") or {"type": "string"}}
            if spec.get("description"):
                parameter["description"] = spec["description"]
            parameters.append(parameter)
        for method in source.methods:
            with_body = bool(source.request) and method not in ("GET", "HEAD", "DELETE")
            extra: list[tuple[str, str]] = []
            if with_body and source.request and source.request.get("content_type"):
                extra.append(MEDIA_TYPE_PROBLEM)
            if with_body and source.request and source.request.get("schema"):
                extra.append(SCHEMA_PROBLEM)
            operation: dict[str, Any] = {
                "operationId": flow.name if len(source.methods) == 1 else f"{flow.name}-{method.lower()}",
                "summary": flow.description or flow.name,
                "tags": [flow.file.stem],
                "responses": _responses(source.responses, extra),
            }
            schemes, requirement, answers = policies_of(project, flow)
            security_schemes.update(schemes)
            if requirement:
                operation["security"] = requirement
            for status, answer in answers.items():
                operation["responses"].setdefault(status, answer)
            if parameters:
                operation["parameters"] = parameters
            if with_body and source.request:
                content_type = source.request.get("content_type", "application/json")
                body: dict[str, Any] = {"content": {content_type: {"schema": _body_schema(source.request)}},
                                        # a route that declares what it takes needs it: 415 or 422 without
                                        "required": True}
                if source.request.get("description"):
                    body["description"] = source.request["description"]
                operation["requestBody"] = body
            paths.setdefault(route, {})[method.lower()] = operation
    paths.update(soap_paths(project))  # SOAP services: POST envelopes, GET ?wsdl (deploy/openapi_soap.py)
    return {
        "openapi": "3.1.0",
        "info": {"title": title or f"{project.root.resolve().name} facade", "version": version,
                 "description": "Generated by `interlace openapi` from the flows that serve these routes."},
        "paths": paths,
        "components": {
            "schemas": {"Problem": PROBLEM_SCHEMA},
            **({"securitySchemes": security_schemes} if security_schemes else {}),
            "responses": {"Problem": {"description": "An error, as an RFC 9457 problem document.",
                                      "content": {"application/problem+json": {
                                          "schema": {"$ref": "#/components/schemas/Problem"}}}}},
        },
    }


# OpenAPI describes a body with JSON Schema; an XML document's elements, namespaces and order
# are beyond it (its `xml` keyword only names how JSON values would be written as XML).  What
# the engine checks of an XML body is that it is one well-formed document, so that is all the
# export says, and says so: a tool generating "invalid" bodies from this schema makes only
# well-formed documents, which the route rightly accepts.
XML_BODY = "xml-document"
XML_BODY_NOTE = ("One well-formed XML document. OpenAPI cannot describe an XML body's elements, namespaces "
                 "or order: the engine checks only that it is well-formed (else 400), and the flow reads what it "
                 "needs; a body that breaks this schema's JSON terms but is well-formed XML is accepted.")


def _body_schema(request: dict[str, Any]) -> dict[str, Any]:
    """The declared schema; an XML body without one is one well-formed document with any content
    (what the engine checks: one root element, in a generator's terms any value but a list)."""
    schema = request.get("schema")
    if schema:
        return dict(schema)
    if "xml" in str(request.get("content_type", "")):
        return {"description": XML_BODY_NOTE, "not": {"type": "array"}, "xml": {"name": "request"},
                "x-interlace-body": XML_BODY}
    return {}


def _responses(declared: dict[str, dict[str, Any]] | None, extra: list[tuple[str, str]] | None = None,
               ) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, spec in sorted((declared or {}).items()):
        response: dict[str, Any] = {"description": spec.get("description") or f"Status {status}."}
        if spec.get("content_type") or spec.get("schema"):
            response["content"] = {spec.get("content_type", "application/json"): {"schema": spec.get("schema") or {}}}
        responses[str(status)] = response
    if not any(s.startswith("2") for s in responses):
        # the flow declares no success answer: any 2xx it gives, in any media type, is its own
        responses["2XX"] = {"description": "The flow's answer (the flow declares no status or media type)."}
    for status, text in [*STANDARD_PROBLEMS.items(), *(extra or [])]:
        responses.setdefault(status, {"description": text, "content": {"application/problem+json": {
            "schema": {"$ref": "#/components/schemas/Problem"}}}})
    responses["default"] = {"$ref": "#/components/responses/Problem"}
    return responses


def _dump(document: dict[str, Any], path: str | None) -> str:
    if path and path.endswith((".yaml", ".yml")):
        import io

        from ruamel.yaml import YAML

        yaml = YAML()
        yaml.default_flow_style = False
        out = io.StringIO()
        yaml.dump(document, out)
        return out.getvalue()
    return json.dumps(document, indent=2) + "\n"


def _openapi(args: argparse.Namespace) -> int:
    try:
        project = load_project(Path(args.dir))
    except LoadErrors as exc:
        print(exc, file=sys.stderr)
        return 1
    text = _dump(openapi_document(project, title=args.title, version=args.api_version), args.output)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}: {len(project.flows)} flows", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def add_command(subparsers: Any) -> None:
    parser = subparsers.add_parser("openapi", help="print the OpenAPI 3.1 document of the flows' HTTP and SOAP routes",
                                   description="Print (or write with -o) the OpenAPI 3.1 document of every HTTP "
                                               "flow of DIR, for the API gateway to import; .yaml/.yml writes YAML.")
    parser.add_argument("dir", metavar="DIR")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here (JSON, or YAML by extension)")
    parser.add_argument("--title", help="the API's title (default: from the folder name)")
    parser.add_argument("--api-version", default="1.0.0", help="info.version of the document")
    parser.set_defaults(func=_openapi)
