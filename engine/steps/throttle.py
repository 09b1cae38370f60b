"""The throttle step (WSO2's throttle mediator, Camel's throttle EIP): at most ``limit`` messages
per ``per`` for each key (a client id, a tenant, a header), as a token bucket (bursts up to the
limit, refilled evenly) or a sliding window (never more than the limit in any window).

Past the limit the caller gets 429 problem+json with ``Retry-After`` (whole seconds, rounded
up) and ``${error.retry_after}`` for a handler.  The counters live in this process by default;
with ``store`` (a redis endpoint) every replica counts against one limit.

``networks`` adds policies by the client's network (engine/steps/_networks.py): denied (403),
allowed without a limit, or limited by the network's own limit; then each client address counts
against its own limit unless ``key`` says otherwise.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.compiler import CompileContext, StepConfigError
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
from engine.steps._networks import (
    ADDRESS_FIELD,
    NETWORKS_FIELD,
    OTHERS_FIELD,
    NetworkPolicies,
    denied,
    plain_key,
)
from engine.steps._stores import STORE_FIELD, store_for

log = logging.getLogger("interlace.throttle")

ALGORITHMS = ("token_bucket", "sliding_window")


@step_kind(
    "throttle",
    summary="Let at most limit messages per period through for each key; past it answer 429 with Retry-After.",
    category="policy",
    schema={
        "type": "object", "additionalProperties": False,
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
            "networks": NETWORKS_FIELD,
            "others": OTHERS_FIELD,
            "address": ADDRESS_FIELD,
        },
    },
    examples=[{"key": "${headers.\"x-client-id\" || 'anonymous'}", "limit": 10, "per": "1s"},
              {"limit": 5, "per": "1s", "networks": [{"cidr": ["203.0.113.0/24"], "access": "deny"},
                                                      {"cidr": "10.0.0.0/8", "access": "allow"},
                                                      {"cidr": "192.168.0.0/16", "limit": 100, "per": "1s"}]}],
)
def compile_throttle(config: Any, ctx: CompileContext) -> StepFn:
    if "networks" in config:
        return _compile_by_network(config, ctx)
    for required in ("limit", "per"):
        if required not in config:
            raise StepConfigError(f"missing required key {required!r}")
    for own in ("others", "address"):
        if own in config:
            raise StepConfigError(f"{own} goes with networks (policies by client network)", own)
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


def _compile_by_network(config: Any, ctx: CompileContext) -> StepFn:
    """The throttle with policies by client network: deny, allow, or the network's own limit."""
    policies = NetworkPolicies(config, ctx, config.get("limit"), config.get("per"))
    key = plain_key(config, ctx)
    algorithm = config.get("algorithm", "token_bucket")
    store = store_for(config, ctx, records_only=False)
    trouble = StoreTrouble(config, log, "throttle", "rate")
    message = config.get("message")
    namespace = f"throttle:{ctx.step_id}:"

    async def run(msg: Message) -> None:
        address = policies.address(msg)
        policy = policies.policy(address)
        if policy.access == "allow":
            return
        if policy.access == "deny":
            raise denied(address)
        who = key(msg) if key is not None else (str(address) if address is not None else "")
        try:
            decision = await store.take(f"{namespace}{policy.name}:{who}", policy.limit, policy.period, algorithm)
        except Exception as exc:
            trouble.met(exc)
            return
        if not decision.allowed:
            detail = message or f"more than {policy.limit} requests per {policy.per_text}; try again later"
            raise refusal(detail, whole_seconds(decision.retry_after), policy.limit)

    return run
