"""The claim_check step (the claim check EIP, Camel's claimCheck): the payload, or one part of
it, goes into a store under a new claim id with a time to live, and the message carries the
claim instead; ``claim_retrieve`` takes it back (engine/steps/claim_retrieve.py).

Whole payload: the message becomes ``{"claim": "<id>"}`` (JSON).  With ``part`` (a JSONPath of
the JSON payload, e.g. ``$.document``), that value goes into the store and the id takes its
place.  The id is also in ``${vars.<var>}`` (default ``${vars.claim}``).  The store is the
process's memory by default, or a redis or sql endpoint (engine/steps/_claims.py); a store that
cannot be reached answers 503 with Retry-After, never a claim that was not kept.
"""

from __future__ import annotations

from typing import Any

from engine import jsonfast
from engine.compiler import CompileContext, StepConfigError
from engine.errors import PayloadShapeError, PayloadTooLarge
from engine.message import JSON, Message
from engine.registry import StepFn, step_kind
from engine.steps._claims import STORE_FIELD, claims_store, new_claim, record, unavailable
from engine.steps._fork import duration_field, seconds
from engine.steps.basic import compile_jsonpath, json_payload, write_into
from engine.units import parse_size

DEFAULT_VAR = "claim"


@step_kind(
    "claim_check",
    summary="Put the payload (or a part of it) into a store under a new claim id with a time to live, and "
            "carry the claim instead; claim_retrieve takes it back.",
    category="message",
    schema={
        "type": "object", "additionalProperties": False, "required": ["ttl"],
        "properties": {
            "ttl": duration_field("How long the store keeps it; a claim retrieved later answers 410 "
                                  "claim-expired."),
            "part": {"type": "string", "pattern": r"^\$",
                     "description": "A JSONPath of the JSON payload (e.g. $.document): only that value is kept, "
                                    "and the claim id takes its place. Default: the whole payload, which becomes "
                                    "{\"claim\": id}."},
            "store": STORE_FIELD,
            "var": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                    "description": f"The variable that receives the claim id (default {DEFAULT_VAR})."},
            "max_size": {"type": ["string", "integer"],
                         "description": "A larger value is refused with 413 (default 10MiB). A size: 64KiB, 1MiB."},
        },
    },
    examples=[{"ttl": "10m"}, {"part": "$.document", "ttl": "1h", "store": "claims"}],
)
def compile_claim_check(config: Any, ctx: CompileContext) -> StepFn:
    ttl = seconds(config["ttl"], "ttl")
    part = compile_jsonpath(config["part"], ctx, "part") if "part" in config else None
    store = claims_store(config, ctx)
    var = str(config.get("var", DEFAULT_VAR))
    try:
        max_size = parse_size(config.get("max_size", "10MiB"))
    except ValueError as exc:
        raise StepConfigError(str(exc), "max_size") from exc
    ctx.needs_body()
    step = ctx.step_id

    async def run(msg: Message) -> None:
        claim = new_claim(ttl)
        if part is None:
            kept = record(msg.content_type, msg.body)
        else:
            document = json_payload(msg, "claim_check part")
            found = part.find(document) if document is not None else []
            if len(found) != 1:
                where = str(part).strip("()")
                raise PayloadShapeError(f"claim_check part {where} must find one value in the payload, found "
                                        f"{len(found)}", status=422 if msg.payload_is_request else 500)
            kept = record("application/json", jsonfast.dumps(found[0].value))
        if len(kept) > max_size:
            raise PayloadTooLarge(f"the value to claim is larger than the claim_check's max_size of {max_size} bytes")
        try:
            await store.put("claim:" + claim, kept, ttl)
        except Exception as exc:
            raise unavailable(step, exc) from None
        msg.vars[var] = claim
        if part is None:
            msg.set_payload({"claim": claim}, JSON)
        else:
            write_into(msg, part, claim, "claim_check part")

    return run
