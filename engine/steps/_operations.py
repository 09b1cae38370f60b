"""What the call and enrich steps share: naming an endpoint and one of its kind's operations.

``OperationCall(config, ctx)`` resolves the endpoint at load, picks the operation (the step's
``operation`` key, or the kind's default), validates the operation's own keys against that
operation's schema (errors name the exact key), and has the connector compile them; at request
time ``await call(msg)`` only renders and sends.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from lxml import etree

from connectors.base import NO_PAYLOAD, Invocation, Operation, Reply, connector_kinds
from engine.compiler import CompileContext, StepConfigError
from engine.errors import BackendError
from engine.message import JSON, XML, Message
from engine.schemacheck import SchemaValidator

# Keys of a call that are the step's, not the operation's.
STEP_KEYS = frozenset({"endpoint", "operation", "into"})

ENDPOINT_PROPERTY = {"type": "string", "description": "The endpoint's name (declared under endpoints:)."}
OPERATION_PROPERTY = {"type": "string",
                      "description": "The operation of the endpoint's kind (e.g. query or execute for sql); "
                                     "default: the kind's default operation (http: request)."}


def operation_properties() -> dict[str, Any]:
    """Every operation key of every connector kind, for the editor schema of call and enrich.

    A key two operations define differently accepts either form here; the compiler checks the
    exact operation's schema once it knows the endpoint's kind."""
    found: dict[str, list[dict[str, Any]]] = {}
    for cls in connector_kinds().values():
        for operation in getattr(cls, "OPERATIONS", {}).values():
            for key, schema in operation.schema.get("properties", {}).items():
                if key in STEP_KEYS:
                    continue
                variants = found.setdefault(key, [])
                if schema not in variants:
                    variants.append(schema)
    properties: dict[str, Any] = {}
    for key, variants in sorted(found.items()):
        if len(variants) == 1:
            properties[key] = variants[0]
        else:
            descriptions = [str(v.get("description", "")) for v in variants if v.get("description")]
            properties[key] = {"anyOf": variants, "description": " / ".join(dict.fromkeys(descriptions))}
    return properties


_VALIDATORS: dict[int, tuple[Operation, SchemaValidator]] = {}


def _validator(operation: Operation) -> SchemaValidator:
    """The validator of an operation's step keys, built once per operation."""
    known = _VALIDATORS.get(id(operation))
    if known is None or known[0] is not operation:
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **operation.schema}
        known = _VALIDATORS[id(operation)] = (operation, SchemaValidator(schema))
    return known[1]


class _Unusable:
    """The invocation of a step whose endpoint failed to load: never runs (nothing serves)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, msg: Message) -> Reply:
        raise BackendError(f"endpoint {self.name!r} did not load")


class OperationCall:
    """One step's call of an endpoint's operation, compiled at load."""

    def __init__(self, config: Any, ctx: CompileContext, base: tuple[Any, ...] = ()) -> None:
        from engine.loader import describe

        self.endpoint_name = str(config["endpoint"])
        endpoint = ctx.endpoint(self.endpoint_name, (*base, "endpoint"))
        self.endpoint: Any = endpoint  # the declared endpoint (its connector's targets: base URLs)
        self.invocation: Invocation = _Unusable(self.endpoint_name)
        self.operation = ""
        if not hasattr(endpoint, "prepare"):
            return  # declared, but broken: its own error is reported already
        cls = type(endpoint.connector)
        kind = endpoint.kind or cls.__name__
        operations: Mapping[str, Operation] = endpoint.connector.operations()
        given = config.get("operation")
        name = endpoint.operation_name(str(given) if given is not None else None)
        names = ", ".join(sorted(operations)) or "none"
        if name is None:
            raise StepConfigError(f"endpoint {self.endpoint_name!r} ({kind}) needs an operation: one of {names}",
                                  base or "endpoint")
        if name not in operations:
            hint = difflib.get_close_matches(name, list(operations), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise StepConfigError(f"endpoint {self.endpoint_name!r} ({kind}) has no operation {name!r}{suggestion}; "
                                  f"operations: {names}", (*base, "operation"))
        self.operation = name
        own = {k: v for k, v in config.items() if k not in STEP_KEYS}
        if endpoint.kind in connector_kinds():
            for error in _validator(operations[name]).iter_errors(own):
                path, message, _ = describe(error)
                raise StepConfigError(f"{message} (operation {name!r} of {kind})", (*base, *path))
        try:
            self.invocation = endpoint.prepare(name, own, ctx)
        except StepConfigError as exc:
            raise StepConfigError(str(exc), (*base, *exc.key), exc.offset) from exc

    async def __call__(self, msg: Message) -> Reply:
        return await self.invocation(msg)


def apply_reply(msg: Message, reply: Reply) -> None:
    """Make the reply the message: its status and headers where it has them, its payload, body
    or stream (what call does, and recipient_list with one recipient)."""
    if reply.status is not None:
        msg.status = reply.status
    if reply.headers is not None:
        msg.replace_headers(dict(reply.headers))
    content_type = reply.content_type or reply.header("content-type")
    if reply.payload is not NO_PAYLOAD:
        msg.set_payload(reply.payload, payload_kind(reply.payload), content_type)
    elif reply.body is not None:
        msg.set_body(reply.body, content_type)
    elif reply.stream is not None:
        msg.set_stream(reply.stream, content_type)


def payload_kind(value: Any) -> str:
    return XML if isinstance(value, etree._Element) else JSON


def parsed(reply: Reply, body: bytes) -> Any:
    """The reply's value: its payload when the connector produced one, else the parsed body."""
    if reply.payload is not NO_PAYLOAD:
        return reply.payload
    content_type = reply.content_type or reply.header("content-type")
    return Message(body=body, content_type=content_type).payload
