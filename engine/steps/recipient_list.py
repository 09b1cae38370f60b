"""The recipient_list step (Camel's recipient list and dynamic router, WSO2's dynamic endpoints):
the endpoint is chosen per message by an expression, from a set declared in the flow.

``to`` gives one endpoint name (the reply becomes the message, as with call) or a list of names
(each is called at once, once however often the list names it, and the replies are gathered by
endpoint name).  A name outside
``endpoints`` is refused with 422 (``unknown-recipient``): a request can pick among the
declared systems, never reach an address of its own.  Every endpoint's call is compiled when the
flows load, with the same operation keys.
"""

from __future__ import annotations

import asyncio
from typing import Any

from engine.compiler import CompileContext, StepConfigError
from engine.errors import RequestInvalid
from engine.expressions import to_text
from engine.message import JSON, Message
from engine.registry import StepFn, step_kind
from engine.steps._operations import OperationCall, apply_reply, parsed


class UnknownRecipient(RequestInvalid):
    code = "unknown-recipient"
    title = "No such recipient"


@step_kind(
    "recipient_list",
    summary="Call the endpoint (or endpoints) an expression picks, from a declared set; several are called at once.",
    category="connect",
    schema={
        "type": "object", "additionalProperties": False, "required": ["to", "endpoints"],
        "properties": {
            "to": {"type": "string",
                   "description": "An expression giving an endpoint name, or a list of names (each called "
                                  "once, however often the list names it), e.g. "
                                  "${payload.region == 'eu' && 'orders-eu' || 'orders-us'}."},
            "endpoints": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string"},
                          "description": "The endpoints it may pick (declared under endpoints:)."},
            "call": {"type": "object",
                     "description": "The operation's keys, as in a call step (method, path, ...), the same for "
                                    "every endpoint."},
        },
    },
    examples=[{"to": "${headers.\"x-region\" == 'eu' && 'orders-eu' || 'orders-us'}",
               "endpoints": ["orders-eu", "orders-us"], "call": {"method": "GET", "path": "/orders/${path.id}"}}],
)
def compile_recipient_list(config: Any, ctx: CompileContext) -> StepFn:
    pick = ctx.template(config["to"], "to")
    operation = dict(config.get("call") or {})
    if "endpoint" in operation:
        raise StepConfigError("the endpoint comes from to: leave endpoint out of call", ("call", "endpoint"))
    calls: dict[str, OperationCall] = {}
    for index, name in enumerate(config["endpoints"]):
        try:
            calls[str(name)] = OperationCall({**operation, "endpoint": name}, ctx, ("call",))
        except StepConfigError as exc:
            if exc.key == ("call", "endpoint"):
                raise StepConfigError(str(exc), ("endpoints", index)) from exc
            raise
    allowed = ", ".join(calls)

    def chosen(name: Any) -> OperationCall:
        call = calls.get(to_text(name)) if name is not None else None
        if call is None:
            raise UnknownRecipient(f"{to_text(name)[:80]!r} is not one of this route's recipients ({allowed})")
        return call

    async def run(msg: Message) -> None:
        picked = pick.render(msg)
        if not isinstance(picked, list):
            apply_reply(msg, await chosen(picked)(msg))
            return
        # each recipient once, however often the list names it: a caller choosing the list
        # must not turn one request into a call per entry (["orders-eu"] * 10000)
        targets = list({to_text(name): chosen(name) for name in picked}.items())
        replies = await asyncio.gather(*(call(msg) for _, call in targets), return_exceptions=True)
        gathered: dict[str, Any] = {}
        for (name, _), reply in zip(targets, replies, strict=True):
            if isinstance(reply, BaseException):
                raise reply  # the first failing recipient fails the step, as a call would
            gathered[name] = parsed(reply, await reply.read())
        msg.set_payload(gathered, JSON)

    return run
