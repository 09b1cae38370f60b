"""The call step: an endpoint's operation; its reply becomes the message (or a variable)."""

from __future__ import annotations

from typing import Any

from engine.compiler import CompileContext
from engine.message import Message
from engine.registry import StepFn, step_kind
from engine.steps._operations import (
    ENDPOINT_PROPERTY,
    OPERATION_PROPERTY,
    OperationCall,
    apply_reply,
    operation_properties,
    parsed,
)


def call_schema() -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": ["endpoint"],
            "properties": {"endpoint": ENDPOINT_PROPERTY, "operation": OPERATION_PROPERTY,
                           **operation_properties(),
                           "into": {"type": "string",
                                    "description": "Keep the message; store the reply as ${vars.NAME} "
                                                   "({status, headers, body, ...}) instead."}}}


@step_kind(
    "call",
    summary="Call an operation of an endpoint (http: a request; each kind lists its operations under "
            "Endpoints); its reply (status, headers, body or rows) becomes the message. A non-2xx HTTP reply is "
            "an error (backend-status, 502) the flow's on_error can handle, unless expect_status takes it.",
    category="connect",
    schema=call_schema,
    examples=[{"endpoint": "orders", "method": "GET", "path": "/orders/${path.id}"},
              {"endpoint": "backend", "path": "/echo"}],
)
def compile_call(config: Any, ctx: CompileContext) -> StepFn:
    call = OperationCall(config, ctx)
    invocation = call.invocation
    into = config.get("into")
    if into is not None:
        ctx.needs_body()  # keeping the message means reading it before the call

    step = getattr(invocation, "step", None)
    if into is None and step is not None:
        # the invocation can make the reply the message itself, in its own coroutine
        # (connectors/_http_call.py): one frame less per call
        folded: StepFn = step(apply_reply)
        return folded

    async def run(msg: Message) -> None:
        reply = await invocation(msg)
        if into is not None:
            body = await reply.read()
            msg.vars[into] = {"status": reply.status, "headers": dict(reply.headers or ()),
                              "body": parsed(reply, body), **reply.meta}
            return
        apply_reply(msg, reply)

    return run
