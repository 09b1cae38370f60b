"""The ``store`` step: put the message in a message store, then answer 202 with its id.

The answer is sent only once the store has committed the message (engine/store/store.py
group-commits concurrent requests): a 202 means the message survives a crash.  A processor, a
flow whose source is ``store: {queue: ...}``, forwards it later, as often as its policy says.
"""

from __future__ import annotations

from typing import Any

from engine import jsonfast, tracing
from engine.compiler import CompileContext
from engine.errors import FlowError
from engine.expressions import to_text
from engine.message import Message
from engine.registry import StepFn, step_kind
from engine.store import StoreError, current_store

# Never written to the store: hop-by-hop, or credentials of the caller's that the processor has no use for.
NOT_STORED = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length", "host",
    "authorization", "proxy-authorization", "cookie", "expect",
})


class StoreUnavailable(FlowError):
    status = 503
    code = "store-unavailable"
    title = "Message store unavailable"


@step_kind(
    "store",
    summary="Keep the message (body, headers, vars) in a message store for a processor to forward; answer "
            "202 with its id once it is committed.",
    category="messaging",
    schema={
        "type": "object", "additionalProperties": False, "required": ["queue"],
        "properties": {
            "queue": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$",
                      "description": "The store's queue; a flow with source store: {queue: ...} processes it."},
            "order_key": {"type": "string", "description": "Messages with the same key are forwarded in the order "
                                                           "stored (the processor sets ordered: true); ${...}."},
            "idempotency_key": {"type": "string",
                                "description": "A caller's key (e.g. ${headers.\"idempotency-key\"}): a repeated key "
                                               "stores nothing and answers with the first message's id."},
            "respond": {"type": "boolean",
                        "description": "Answer 202 {\"id\": ...} (default true); false goes on to the next step "
                                       "with ${vars.message_id} set."},
        },
    },
    examples=[{"queue": "shipments"},
              {"queue": "orders", "order_key": "${payload.customerId}",
               "idempotency_key": '${headers."idempotency-key"}'}],
)
def compile_store(config: Any, ctx: CompileContext) -> StepFn:
    queue = str(config["queue"])
    order_key = ctx.template(config["order_key"], "order_key") if "order_key" in config else None
    idempotency_key = ctx.template(config["idempotency_key"], "idempotency_key") \
        if "idempotency_key" in config else None
    respond = bool(config.get("respond", True))
    ctx.needs_body()
    ctx.require("store")

    async def run(msg: Message) -> None:
        key = _text(order_key.render(msg)) if order_key is not None else None
        idem = _text(idempotency_key.render(msg)) if idempotency_key is not None else None
        headers = {k: v for k, v in msg.headers.items() if k not in NOT_STORED}
        if tracing.ENABLED:  # the processor's run continues this request's trace (engine/sources/tracing.py)
            tracing.inject(headers)
        try:
            message_id, repeated = await current_store().enqueue(
                queue, msg.body, content_type=msg.content_type, headers=headers, vars=msg.vars,
                order_key=key, idempotency_key=idem)
        except StoreError as exc:
            raise StoreUnavailable("the message could not be stored; nothing was accepted, send it again",
                                   internal=str(exc)) from exc
        msg.vars["message_id"] = message_id
        if not respond:
            return
        msg.status = 202
        msg.replace_headers({})
        if repeated:
            msg.set_header("idempotent-replay", "true")
        msg.set_body(jsonfast.dumps({"id": message_id}), "application/json")
        msg.done = True

    return run


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = to_text(value)
    return text or None
