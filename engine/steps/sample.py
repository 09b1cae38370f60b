"""The sample step (Camel's sampling throttler, the ``sample`` EIP): its nested steps run for a
sample of the messages, one per period or one in every N, and the flow goes on either way.

Camel's sampler stops the messages it does not pick; a facade must still answer them, so here
the sample decides only whether the nested steps run: an audit copy, a detailed log line, a
wire tap to an analytics system for one request in a hundred.  ``per`` keeps one message per
period (for each ``key``, in this process's memory or, with ``store``, in Redis, so that the
replicas sample once between them; a store that cannot be reached samples nothing meanwhile,
logged).  ``every`` keeps the first of every N messages, counted in this process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.compiler import CompileContext, StepConfigError
from engine.message import Message
from engine.registry import STEPS_REF, StepFn, step_kind
from engine.steps._fork import duration_field, seconds
from engine.steps._limits import limit_key
from engine.steps._stores import STORE_FIELD, store_for

log = logging.getLogger("interlace.sample")


@step_kind(
    "sample",
    summary="Run the nested steps for a sample of the messages (one per period, or one in every N); the flow "
            "goes on either way.",
    category="route",
    schema={
        "type": "object", "additionalProperties": False, "required": ["steps"],
        "properties": {
            "per": duration_field("One message per period runs the steps (for each key)."),
            "every": {"type": "integer", "minimum": 2,
                      "description": "One message in every N runs the steps (the first of each N, counted in this "
                                     "process)."},
            "key": {"type": "string",
                    "description": "With per: a sample for each key, e.g. ${headers.\"x-client-id\"} (default: one "
                                   "for everyone)."},
            "store": {**STORE_FIELD, "description": "With per: " + STORE_FIELD["description"]},
            "steps": STEPS_REF,
        },
    },
    examples=[{"per": "10s", "steps": [{"log": "sampled: ${payload}"}]},
              {"every": 100, "steps": [{"wire_tap": {"call": {"endpoint": "analytics", "method": "POST",
                                                              "path": "/samples"}}}]}],
    branches=("steps",),
)
def compile_sample(config: Any, ctx: CompileContext) -> StepFn:
    if ("per" in config) == ("every" in config):
        raise StepConfigError("a sample is one message per period or one in every N: give per or every (one of "
                              "them)", "every" if "every" in config else ())
    if "every" in config:
        for own in ("key", "store"):
            if own in config:
                raise StepConfigError(f"{own} goes with per (every counts the messages of this process)", own)
    steps = ctx.steps(config["steps"], "steps")
    picked_id, skipped_id = ctx.branch("steps"), ctx.branch("skipped")
    picks = _every(int(config["every"])) if "every" in config else _per(config, ctx)

    async def run(msg: Message) -> None:
        if await picks(msg):
            if msg.trace is not None:
                msg.trace.append(picked_id)
            await steps.run(msg)
        elif msg.trace is not None:
            msg.trace.append(skipped_id)

    return run


def _every(count: int) -> Callable[[Message], Awaitable[bool]]:
    seen = 0

    async def picks(msg: Message) -> bool:
        nonlocal seen
        picked = seen == 0
        seen = (seen + 1) % count
        return picked

    return picks


def _per(config: Any, ctx: CompileContext) -> Callable[[Message], Awaitable[bool]]:
    period = seconds(config["per"], "per")
    key = limit_key(config, ctx)
    store = store_for(config, ctx, records_only=False)
    namespace = f"sample:{ctx.step_id}:"
    said = 0.0

    async def picks(msg: Message) -> bool:
        nonlocal said
        try:
            # one token per period: the throttle's bucket with a limit of one
            decision = await store.take(namespace + key(msg), 1, period, "token_bucket")
        except Exception as exc:  # sampling is never worth failing a request for
            now = time.monotonic()
            if now - said >= 1.0:
                said = now
                log.warning("sample store unavailable (%s): sampling nothing meanwhile", type(exc).__name__)
            return False
        return decision.allowed

    return picks
