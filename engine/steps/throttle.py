"""The throttle step (WSO2's throttle mediator, Camel's throttle EIP): at most ``limit`` messages
per ``per`` for each key (a client id, a tenant, a header), as a token bucket (bursts up to the
limit, refilled evenly) or a sliding window (never more than the limit in any window).

Past the limit the caller gets 429 problem+json with ``Retry-After`` (whole seconds, rounded
up) and ``${error.retry_after}`` for a handler.  The counters live in this process by default;
with ``store`` (a redis endpoint) every replica counts against one limit.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.compiler import CompileContext
from engine.message import Message
from engine.registry import StepFn, step_kind
from engine.steps._fork import duration_field, seconds
from engine.steps._limits import (
    KEY_FIELD,
    MESSAGE_FIELD,
    ON_STORE_ERROR_FIELD,
    StoreTrouble,
    limit_key,
    refusal,
    whole_seconds,
)
from engine.steps._stores import STORE_FIELD, store_for

log = logging.getLogger("interlace.throttle")

ALGORITHMS = ("token_bucket", "sliding_window")


@step_kind(
    "throttle",
    summary="Let at most limit messages per period through for each key; past it answer 429 with Retry-After.",
    category="policy",
    schema={
        "type": "object", "additionalProperties": False, "required": ["limit", "per"],
        "properties": {
            "key": KEY_FIELD,
            "limit": {"type": "integer", "minimum": 1, "description": "Messages allowed per period."},
            "per": duration_field("The period."),
            "algorithm": {"enum": list(ALGORITHMS),
                          "description": "token_bucket (default): bursts up to limit, refilled evenly; "
                                         "sliding_window: never more than limit in any period."},
            "store": STORE_FIELD,
            "on_store_error": ON_STORE_ERROR_FIELD,
            "message": MESSAGE_FIELD,
        },
    },
    examples=[{"key": "${headers.\"x-client-id\" || 'anonymous'}", "limit": 10, "per": "1s"}],
)
def compile_throttle(config: Any, ctx: CompileContext) -> StepFn:
    key = limit_key(config, ctx)
    limit = int(config["limit"])
    period = seconds(config["per"], "per")
    algorithm = config.get("algorithm", "token_bucket")
    store = store_for(config, ctx, records_only=False)
    trouble = StoreTrouble(config, log, "throttle", "rate")
    detail = config.get("message") or f"more than {limit} requests per {config['per']}; try again later"
    namespace = f"throttle:{ctx.step_id}:"

    async def run(msg: Message) -> None:
        try:
            decision = await store.take(namespace + key(msg), limit, period, algorithm)
        except Exception as exc:
            trouble.met(exc)
            return
        if not decision.allowed:
            raise refusal(detail, whole_seconds(decision.retry_after), limit)

    return run
