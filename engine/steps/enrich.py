"""The enrich step: call an endpoint's operation and merge (part of) its answer into the message."""

from __future__ import annotations

from typing import Any

from connectors.base import NO_PAYLOAD
from engine.compiler import CompileContext, StepConfigError
from engine.errors import ExpressionError
from engine.message import XML, Message, kind_of
from engine.registry import StepFn, step_kind
from engine.steps._operations import (
    ENDPOINT_PROPERTY,
    OPERATION_PROPERTY,
    OperationCall,
    operation_properties,
    parsed,
    payload_kind,
)
from engine.steps._placement import ACTION_FIELD, place_json, placed_at
from engine.steps.basic import compile_jsonpath, json_payload, write_into


def enrich_schema() -> dict[str, Any]:
    return {
        "type": "object", "additionalProperties": False, "required": ["call"],
        "properties": {
            "call": {"type": "object", "additionalProperties": False, "required": ["endpoint"],
                     "properties": {"endpoint": ENDPOINT_PROPERTY, "operation": OPERATION_PROPERTY,
                                    **operation_properties()},
                     "description": "The request, as in the call step."},
            "select": {"type": "string",
                       "description": "JMESPath over the reply's JSON (or xpath('...') over its XML) picking "
                                      "what to merge; default the whole reply."},
            "into": {"type": "string", "pattern": r"^\$",
                     "description": "JSONPath in the current payload where the value goes, e.g. $.customer."},
            "action": ACTION_FIELD,
            "var": {"type": "string", "description": "Put the value in this variable instead."},
        },
    }


@step_kind(
    "enrich",
    summary="Call an endpoint's operation and merge (part of) its answer into the JSON payload or a variable. A "
            "non-2xx HTTP reply is an error (backend-status, 502), never merged, unless call.expect_status "
            "takes it.",
    category="connect",
    schema=enrich_schema,
    examples=[{"call": {"endpoint": "crm", "method": "GET", "path": "/customers/${payload.customerId}"},
               "select": "payload.{name: name, tier: tier}", "into": "$.customer"},
              {"call": {"endpoint": "pricing", "method": "GET", "path": "/discounts/${payload.customerId}"},
               "select": "payload.{code: code, percent: percent}", "into": "$.adjustments", "action": "child"}],
)
def compile_enrich(config: Any, ctx: CompileContext) -> StepFn:
    if ("into" in config) == ("var" in config):
        raise StepConfigError("enrich needs one destination: into (a JSONPath) or var")
    call = OperationCall(config["call"], ctx, ("call",))
    select = ctx.expression(config["select"], "select") if "select" in config else None
    into = compile_jsonpath(config["into"], ctx, "into") if "into" in config else None
    var = config.get("var")
    action = str(config.get("action", "replace"))
    if "action" in config and into is None:
        raise StepConfigError("action places the value in the payload: it goes with into", "action")
    if into is not None:
        ctx.needs_body()

    async def run(msg: Message) -> None:
        if into is not None:
            json_payload(msg, "enrich into a JSONPath")  # fail before calling, not after
        reply = await call(msg)
        content_type = reply.content_type or reply.header("content-type")
        body = await reply.read()
        if select is not None:
            answer = Message(body=body, content_type=content_type, correlation_id=msg.correlation_id)
            if reply.payload is not NO_PAYLOAD:
                answer.set_payload(reply.payload, payload_kind(reply.payload), content_type)
            answer.vars = msg.vars
            answer.status = reply.status if reply.status is not None else msg.status
            value = select.evaluate(answer)
        else:
            value = parsed(reply, body)
            if reply.payload is NO_PAYLOAD and kind_of(content_type, body) == XML:
                raise ExpressionError("enrich got XML: add select: xpath('...') to pick the value")
        if var is not None:
            msg.vars[var] = value
        else:
            assert into is not None
            if action == "replace":
                write_into(msg, into, value, "enrich into")
            else:
                document = json_payload(msg, "enrich into a JSONPath")
                place_json(msg, document, into, value, action, "enrich into")
                msg.set_payload_edited(document, placed_at(into, action, value) if msg.payload_is_request else ((),))

    return run
