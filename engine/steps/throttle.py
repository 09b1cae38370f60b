"""The throttle step (WSO2's throttle mediator, Camel's throttle EIP): at most ``limit`` messages
per ``per`` for each key (a client id, a tenant, a header), as a token bucket (bursts up to the
limit, refilled evenly) or a sliding window (never more than the limit in any window).

Past the limit the caller gets 429 problem+json with ``Retry-After`` (whole seconds, rounded
up) and ``${error.retry_after}`` for a handler.  The counters live in this process by default;
with ``store`` (a redis endpoint) every replica counts against one limit.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from engine.compiler import CompileContext
from engine.errors import ServiceUnavailable, TooManyRequests
from engine.expressions import to_text
from engine.message import Message
from engine.registry import StepFn, step_kind
from engine.steps._fork import duration_field, seconds
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
            "key": {"type": "string",
                    "description": "Whose limit a message counts against, e.g. ${headers.\"x-client-id\"} "
                                   "(default: one limit for everyone)."},
            "limit": {"type": "integer", "minimum": 1, "description": "Messages allowed per period."},
            "per": duration_field("The period."),
            "algorithm": {"enum": list(ALGORITHMS),
                          "description": "token_bucket (default): bursts up to limit, refilled evenly; "
                                         "sliding_window: never more than limit in any period."},
            "store": STORE_FIELD,
            "on_store_error": {"enum": ["allow", "deny"],
                               "description": "When the shared store cannot be reached: allow (default, the "
                                              "limit is not enforced meanwhile, logged) or deny (503)."},
            "message": {"type": "string", "description": "The problem's detail (default names the limit)."},
        },
    },
    examples=[{"key": "${headers.\"x-client-id\" || 'anonymous'}", "limit": 10, "per": "1s"}],
)
def compile_throttle(config: Any, ctx: CompileContext) -> StepFn:
    key = ctx.template(config["key"], "key") if "key" in config else None
    limit = int(config["limit"])
    period = seconds(config["per"], "per")
    algorithm = config.get("algorithm", "token_bucket")
    store = store_for(config, ctx, records_only=False)
    deny_on_error = config.get("on_store_error", "allow") == "deny"
    detail = config.get("message") or f"more than {limit} requests per {config['per']}; try again later"
    namespace = f"throttle:{ctx.step_id}:"

    async def run(msg: Message) -> None:
        who = to_text(key.render(msg)) if key is not None else ""
        try:
            decision = await store.take(namespace + who, limit, period, algorithm)
        except Exception as exc:
            log.warning("throttle store unavailable (%s): %s", type(exc).__name__,
                        "denying" if deny_on_error else "letting through")
            if deny_on_error:
                raise ServiceUnavailable("the rate limit cannot be checked right now; try again shortly",
                                         headers={"Retry-After": "1"}) from None
            return
        if not decision.allowed:
            wait = max(1, math.ceil(decision.retry_after))
            raise TooManyRequests(detail, headers={"Retry-After": str(wait)},
                                  extra={"retry_after": wait, "limit": limit})

    return run
