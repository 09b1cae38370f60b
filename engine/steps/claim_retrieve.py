"""The claim_retrieve step: the value a claim_check kept comes back (engine/steps/claim_check.py).

``claim`` gives the id (default ``${payload.claim}``, what a whole-payload claim_check leaves).
The value becomes the payload (with the content type it had), or goes to ``into`` (a JSONPath of
the JSON payload).  ``remove: true`` takes it out of the store (a second retrieval then answers
404).  A claim that cannot be honoured is the caller's problem+json, never a 500: no id 422
``claim-missing``, an unknown or malformed id 404 ``unknown-claim``, one past its time to live
410 ``claim-expired``; a store that cannot be reached 503 with Retry-After.
"""

from __future__ import annotations

from typing import Any

from engine.compiler import CompileContext
from engine.message import Message
from engine.registry import StepFn, step_kind
from engine.steps._claims import STORE_FIELD, claims_store, key_of, missing, unavailable, unpack
from engine.steps.basic import compile_jsonpath, write_into


@step_kind(
    "claim_retrieve",
    summary="Take back what a claim_check kept: the value becomes the payload (or goes into a location of it); "
            "an unknown claim is 404, an expired one 410.",
    category="message",
    schema={
        "type": "object", "additionalProperties": False,
        "properties": {
            "claim": {"type": "string",
                      "description": "The claim id, e.g. ${payload.document} (default ${payload.claim})."},
            "into": {"type": "string", "pattern": r"^\$",
                     "description": "A JSONPath of the JSON payload where the value goes (e.g. $.document, where "
                                    "claim_check's part left the id); default: it becomes the payload."},
            "store": STORE_FIELD,
            "remove": {"type": "boolean",
                       "description": "Take it out of the store (default false: it stays until its time to live)."},
        },
    },
    examples=[{}, {"claim": "${payload.document}", "into": "$.document", "store": "claims", "remove": True}],
)
def compile_claim_retrieve(config: Any, ctx: CompileContext) -> StepFn:
    claim = ctx.template(config.get("claim", "${payload.claim}"), "claim")
    into = compile_jsonpath(config["into"], ctx, "into") if "into" in config else None
    store = claims_store(config, ctx)
    remove = bool(config.get("remove", False))
    step = ctx.step_id

    async def run(msg: Message) -> None:
        key, text = key_of(claim.render(msg))
        try:
            stored = await store.get(key)
            if stored is not None and remove:
                await store.delete(key)
        except Exception as exc:
            raise unavailable(step, exc) from None
        if stored is None:
            raise missing(text)
        content_type, body = unpack(stored)
        if into is None:
            msg.set_body(body, content_type)
            return
        value = Message(body=body, content_type=content_type).payload
        write_into(msg, into, value, "claim_retrieve into")

    return run
