"""The throttle step (WSO2's throttle mediator, Camel's throttle EIP): at most ``limit`` messages
per ``per`` for each key (a client id, a tenant, a header), as a token bucket (bursts up to the
limit, refilled evenly) or a sliding window (never more than the limit in any window).

Past the limit the caller gets 429 problem+json with ``Retry-After`` (whole seconds, rounded
up) and ``${error.retry_after}`` for a handler.  The counters live in this process by default;
with ``store`` (a redis endpoint) every replica counts against one limit.

``policies`` adds caller policies (WSO2's throttle policy; engine/steps/_networks.py): callers
matched by their address's network (``cidr``), their key's value (``keys``) and/or their host
name (``domains``, a reverse lookup confirmed forward: engine/steps/_domains.py), in order, the
first match deciding: denied (403), allowed without a limit, or limited by the policy's own limit;
``others`` for the rest.  ``networks`` is its older, address-only form.  Each caller then counts
against its own limit: by its key, or by its address when the step has no key.  The address is
the connection's peer unless the project trusts a gateway's X-Forwarded-For
(``settings.http.proxy_headers``) or ``address`` names a template.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.compiler import CompileContext, StepConfigError
from engine.message import Message
from engine.registry import StepFn, step_kind
from engine.steps._domains import DOMAIN_LOOKUP_FIELD
from engine.steps._fork import duration_field, seconds
from engine.steps._limits import (
    KEY_FIELD,
    MESSAGE_FIELD,
    ON_STORE_ERROR_FIELD,
    StoreTrouble,
    counted_key,
    limit_key,
    refusal,
    whole_seconds,
)
from engine.steps._networks import (
    ADDRESS_FIELD,
    ALGORITHMS,
    NETWORKS_FIELD,
    OTHERS_FIELD,
    POLICIES_FIELD,
    UNASKED,
    CallerPolicies,
)
from engine.steps._stores import STORE_FIELD, store_for

log = logging.getLogger("interlace.throttle")


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
            "policies": POLICIES_FIELD,
            "networks": NETWORKS_FIELD,
            "others": OTHERS_FIELD,
            "address": ADDRESS_FIELD,
            "domain_lookup": DOMAIN_LOOKUP_FIELD,
        },
    },
    examples=[{"key": "${headers.\"x-client-id\" || 'anonymous'}", "limit": 10, "per": "1s"},
              {"key": "${headers.\"x-client-id\" || 'anonymous'}", "limit": 10, "per": "1s",
               "policies": [{"cidr": "203.0.113.0/24", "access": "deny"},
                            {"keys": ["partner-gold"], "limit": 1000, "per": "1s"},
                            {"cidr": ["10.0.0.0/8", "192.168.0.0/16"], "keys": "batch", "access": "allow"},
                            {"keys": ["trial-1", "trial-2"], "limit": 100, "per": "1h",
                             "algorithm": "sliding_window"}],
               "others": "limit"},
              {"limit": 10, "per": "1s",
               "policies": [{"domains": ["gw.partner.example", "*.partner.example"], "limit": 500},
                            {"domains": "*.blocked.example", "access": "deny"}],
               "domain_lookup": {"ttl": "5m", "timeout": "1s", "size": 10000}},
              {"limit": 5, "per": "1s", "networks": [{"cidr": ["203.0.113.0/24"], "access": "deny"},
                                                      {"cidr": "10.0.0.0/8", "access": "allow"},
                                                      {"cidr": "192.168.0.0/16", "limit": 100, "per": "1s"}]}],
)
def compile_throttle(config: Any, ctx: CompileContext) -> StepFn:
    if "networks" in config and "policies" in config:
        raise StepConfigError("networks is the address-only form of policies: give one of them (policies with "
                              "cidr does what networks does)", "networks")
    for field in ("policies", "networks"):
        if field in config:
            return _compile_by_policy(config, ctx, field)
    for required in ("limit", "per"):
        if required not in config:
            raise StepConfigError(f"missing required key {required!r}")
    for own in ("others", "address"):
        if own in config:
            raise StepConfigError(f"{own} goes with policies or networks (policies by caller)", own)
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
            decision = await store.take(namespace + counted_key(key(msg)), limit, period, algorithm)
        except Exception as exc:
            trouble.met(exc)
            return
        if not decision.allowed:
            raise refusal(detail, whole_seconds(decision.retry_after), limit)

    return run


def _compile_by_policy(config: Any, ctx: CompileContext, field: str) -> StepFn:
    """The throttle with caller policies (``policies`` or ``networks``): deny, allow, or the
    policy's own limit; each caller counts by its key, or by its address without one."""
    policies = CallerPolicies(config, ctx, field)
    reads_address = policies.reads_address
    reads_names = policies.reads_names
    store = store_for(config, ctx, records_only=False)
    trouble = StoreTrouble(config, log, "throttle", "rate")
    message = config.get("message")
    namespace = f"throttle:{ctx.step_id}:"

    async def run(msg: Message) -> None:
        key = policies.key(msg)
        address = policies.address(msg) if reads_address or key is None else None
        policy = policies.policy(address, key, UNASKED) if reads_names else policies.policy(address, key)
        if policy is None:  # a policy names domains: the caller's name decides, looked up (cached) only now
            policy = policies.policy(address, key, await policies.name(address))
            assert policy is not None
        if policy.access == "allow":
            return
        if policy.access == "deny":
            raise policies.denied(policy, address)
        who = counted_key(key) if key is not None else (str(address) if address is not None else "")
        try:
            decision = await store.take(f"{namespace}{policy.name}:{who}", policy.limit, policy.period,
                                        policy.algorithm)
        except Exception as exc:
            trouble.met(exc)
            return
        if not decision.allowed:
            detail = message or f"more than {policy.limit} requests per {policy.per_text}; try again later"
            raise refusal(detail, whole_seconds(decision.retry_after), policy.limit)

    return run
