"""The load_balance step (Camel's loadBalance EIP, WSO2's load-balance endpoint): one of a
declared set of endpoints is called per message, and another one when it cannot answer.

Which one: ``round_robin`` (each in turn, the default), ``weighted`` (in turn, each ``weight``
times as often, spread out: weights 3 and 1 give a, b, a, a, ...), ``random`` (by weight) or
``sticky`` (the ``key`` template, e.g. a session or tenant, always picks the same endpoint while
it answers; rendezvous hashing, so removing an endpoint moves only its own keys) or
``least_connections`` (the endpoint with the fewest of this step's calls still waiting for an
answer, per weight, in this process; ties in turn: nginx's least_conn, WSO2's weighted
round-robin least-connection), which keeps a slow endpoint from collecting a queue, or
``least_response_time`` (the least decaying average of its recent calls' times, times its calls
in flight plus one, per weight; an endpoint never tried or not picked for ``probe_after`` is
tried once, so a slow one that became fast is taken again; failures count as slow:
engine/steps/_response_times.py; nginx's least_time).

Failover: when the chosen endpoint's call fails before reaching it (refused, reset, a connect
timeout, its circuit breaker open; ``connectors/resilience.py:never_reached``, the same test an
endpoint's own failover over its URLs uses) or answers a status listed in ``failover_on``, the
next endpoint in the declared order is tried, each at most once.  When all fail, the last
failure is the step's (or the last reply, when it had a status from ``failover_on``).  Each
endpoint keeps its own retries, breaker and deadline; the request body is read before the first
try so that it can be sent again.

The endpoint that answered is in ``${vars.<var>}`` (default ``${vars.load_balanced}``) and in
``interlace_load_balanced_calls_total{flow, step, endpoint, outcome}`` (answered, failed_over,
failed); with least_response_time each endpoint's average in
``interlace_load_balance_response_time_seconds{flow, step, endpoint, url}``.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable
from typing import Any

from connectors.base import Reply
from connectors.resilience import never_reached, rotation, statuses_schema
from engine import metrics
from engine.compiler import CompileContext, StepConfigError
from engine.errors import BackendError
from engine.expressions import to_text
from engine.message import Message
from engine.registry import StepFn, step_kind
from engine.steps._fork import duration_field, seconds
from engine.steps._operations import OperationCall, apply_reply
from engine.steps._response_times import ResponseTimes

STRATEGIES = ("round_robin", "weighted", "random", "sticky", "least_connections", "least_response_time")
DEFAULT_DECAY = "10s"
DEFAULT_PROBE_AFTER = "5s"
DEFAULT_VAR = "load_balanced"

_ENDPOINT_ITEM = {"oneOf": [
    {"type": "string", "description": "An endpoint's name (declared under endpoints:), weight 1."},
    {"type": "object", "additionalProperties": False, "required": ["name"],
     "properties": {"name": {"type": "string", "description": "An endpoint's name (declared under endpoints:)."},
                    "weight": {"type": "integer", "minimum": 1, "maximum": 1000,
                               "description": "How often it is picked against the others (default 1); "
                                              "weighted, random, sticky, least_connections and "
                                              "least_response_time use it."}}}]}


@step_kind(
    "load_balance",
    summary="Call one of a declared set of endpoints (round robin, weighted, random, sticky by a key, least "
            "connections or least response time), "
            "failing over to the next when it cannot be reached or answers a listed status; the reply becomes "
            "the message.",
    category="connect",
    schema={
        "type": "object", "additionalProperties": False, "required": ["endpoints"],
        "properties": {
            "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT_ITEM,
                          "description": "The endpoints it spreads the calls over, in failover order."},
            "strategy": {"enum": list(STRATEGIES),
                         "description": "round_robin (default), weighted (in turn by weight, spread out), random "
                                        "(by weight), sticky (by key: the same key, the same endpoint while it "
                                        "answers), least_connections (the fewest calls in flight per weight, "
                                        "ties in turn) or least_response_time (the least decaying average "
                                        "response time x (calls in flight + 1) per weight; failures count as "
                                        "slow)."},
            "decay": duration_field(f"With least_response_time: how fast an endpoint's average forgets: after "
                                    f"this long without an answer, a new one moves it 63 % of the way (default "
                                    f"{DEFAULT_DECAY}; each answer moves it at least 10 %)."),
            "probe_after": duration_field(f"With least_response_time: an endpoint not picked for this long is "
                                          f"tried once, so that one that was slow can show it is fast again "
                                          f"(default {DEFAULT_PROBE_AFTER})."),
            "key": {"type": "string",
                    "description": "With sticky: what picks the endpoint, e.g. ${headers.\"x-session-id\"}."},
            "failover_on": statuses_schema("Reply statuses that move on to the next endpoint, e.g. [502, 503] "
                                           "(default: none; a call that never reached its endpoint always "
                                           "does)."),
            "call": {"type": "object",
                     "description": "The operation's keys, as in a call step (method, path, ...), the same for "
                                    "every endpoint."},
            "var": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                    "description": f"The variable that receives the name of the endpoint that answered "
                                   f"(default {DEFAULT_VAR})."},
        },
    },
    examples=[{"endpoints": ["orders-a", "orders-b", "orders-c"], "failover_on": [502, 503],
               "call": {"method": "GET", "path": "/orders/${path.id}"}},
              {"strategy": "sticky", "key": "${headers.\"x-session-id\"}",
               "endpoints": [{"name": "carts-1", "weight": 2}, "carts-2"], "call": {"method": "GET", "path": "/cart"}},
              {"strategy": "least_connections", "endpoints": ["search-1", "search-2"],
               "call": {"method": "GET", "path": "/search/${path.term}"}},
              {"strategy": "least_response_time", "endpoints": [{"name": "quotes-eu", "weight": 2}, "quotes-us"],
               "decay": "10s", "probe_after": "5s", "failover_on": [503],
               "call": {"method": "GET", "path": "/quotes/${path.symbol}"}}],
)
def compile_load_balance(config: Any, ctx: CompileContext) -> StepFn:
    strategy = config.get("strategy", "round_robin")
    if strategy == "sticky" and "key" not in config:
        raise StepConfigError("strategy sticky picks the endpoint by a key: give key, e.g. "
                              "${headers.\"x-session-id\"}", "strategy")
    if "key" in config and strategy != "sticky":
        raise StepConfigError(f"key picks the endpoint only with strategy: sticky (this one is {strategy})", "key")
    operation = dict(config.get("call") or {})
    if "endpoint" in operation:
        raise StepConfigError("the endpoints come from endpoints: leave endpoint out of call", ("call", "endpoint"))
    names: list[str] = []
    weights: list[int] = []
    calls: list[OperationCall] = []
    for index, item in enumerate(config["endpoints"]):
        name = str(item if isinstance(item, str) else item["name"])
        if name in names:
            raise StepConfigError(f"endpoint {name!r} is listed twice", ("endpoints", index))
        try:
            calls.append(OperationCall({**operation, "endpoint": name}, ctx, ("call",)))
        except StepConfigError as exc:
            if exc.key == ("call", "endpoint"):
                raise StepConfigError(str(exc), ("endpoints", index)) from exc
            raise
        names.append(name)
        weights.append(1 if isinstance(item, str) else int(item.get("weight", 1)))
    if len(set(weights)) > 1 and strategy == "round_robin":
        raise StepConfigError("weights count with strategy weighted, random, sticky, least_connections or "
                              "least_response_time; round_robin takes each "
                              "in turn: set strategy: weighted", "strategy")
    for own in ("decay", "probe_after"):
        if own in config and strategy != "least_response_time":
            raise StepConfigError(f"{own} goes with strategy: least_response_time (this one is {strategy})", own)
    in_flight = [0] * len(names)  # this step's calls waiting for an answer, per endpoint
    times: ResponseTimes | None = None
    if strategy == "least_response_time":
        times = ResponseTimes(weights, in_flight, seconds(config.get("decay", DEFAULT_DECAY), "decay"),
                              seconds(config.get("probe_after", DEFAULT_PROBE_AFTER), "probe_after"))
        first: Callable[[Message], int] = times.pick
        metrics.response_time_averages(ctx.owner, ctx.step_id, names, [_base_urls(c) for c in calls],
                                       times)
    else:
        first = _chooser(strategy, names, weights, ctx.template(config["key"], "key") if "key" in config else None,
                         in_flight)
    failover_on = frozenset(int(s) for s in config.get("failover_on", ()))
    var = str(config.get("var", DEFAULT_VAR))
    count = len(names)
    counted = metrics.load_balance_counter(ctx.owner, ctx.step_id, names)
    ctx.needs_body()  # a failover sends the body again: it must be bytes, not a stream read once

    async def run(msg: Message) -> None:
        error: BackendError | None = None
        held: Reply | None = None
        held_by = 0
        for index in rotation(first(msg), count):
            if held is not None:
                await held.aclose()
                held = None
            in_flight[index] += 1
            started = time.monotonic() if times is not None else 0.0
            try:
                reply = await calls[index](msg)
            except BackendError as exc:
                if times is not None:
                    times.answered(index, started, True)
                if not (never_reached(exc) or exc.extra.get("backend_status") in failover_on):
                    counted(index, "failed")
                    raise
                counted(index, "failed_over")
                error = exc
                continue
            finally:
                in_flight[index] -= 1
            if times is not None:
                times.answered(index, started, (reply.status or 0) >= 500 or reply.status in failover_on)
            if reply.status in failover_on:
                counted(index, "failed_over")
                held, held_by, error = reply, index, None
                continue
            counted(index, "answered")
            msg.vars[var] = names[index]
            apply_reply(msg, reply)
            return
        if held is not None:  # every endpoint answered a failover status: the last answer stands
            msg.vars[var] = names[held_by]
            apply_reply(msg, held)
            return
        assert error is not None
        raise error

    return run


def _base_urls(call: OperationCall) -> str:
    """An endpoint's base URL as declared (its URLs, comma-separated, when it fails over across
    several): a label value bounded by the flow files."""
    targets = getattr(getattr(call.endpoint, "connector", None), "targets", ())
    return ",".join(str(target) for target in targets)


def _chooser(strategy: str, names: list[str], weights: list[int], key: Any,
             in_flight: list[int]) -> Callable[[Message], int]:
    """At load: what picks the first endpoint to try for a message (its index)."""
    count = len(names)
    if strategy == "least_connections":
        return _least_connections(weights, in_flight)
    if strategy == "random":
        population = range(count)
        return lambda msg: random.choices(population, weights)[0]  # spreading load: no secret depends on it
    if strategy == "sticky":
        return _rendezvous(names, weights, key)
    if strategy == "weighted":
        return _smooth_weighted(weights)
    turn = 0

    def round_robin(msg: Message) -> int:
        nonlocal turn
        index = turn % count
        turn = index + 1
        return index

    return round_robin


def _smooth_weighted(weights: list[int]) -> Callable[[Message], int]:
    """Weighted round robin, spread out (nginx's smooth weighting): each turn every endpoint
    gains its weight, the highest goes and loses the total.  Weights 3, 1: a, a, b, a, ..."""
    current = [0] * len(weights)
    total = sum(weights)

    def pick(msg: Message) -> int:
        for index, weight in enumerate(weights):
            current[index] += weight
        best = max(range(len(current)), key=current.__getitem__)
        current[best] -= total
        return best

    return pick


def _rendezvous(names: list[str], weights: list[int], key: Any) -> Callable[[Message], int]:
    """Highest random weight: the key scores every endpoint and the best one is picked, so a
    key keeps its endpoint, and removing one moves only the keys that were on it."""
    salts = [name.encode() + b"\0" for name in names]

    def pick(msg: Message) -> int:
        text = to_text(key.render(msg)).encode()
        best, best_score = 0, -math.inf
        for index, (salt, weight) in enumerate(zip(salts, weights, strict=True)):
            digest = hashlib.blake2b(salt + text, digest_size=8).digest()
            unit = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
            score = -weight / math.log(unit)
            if score > best_score:
                best, best_score = index, score
        return best

    return pick


def _least_connections(weights: list[int], in_flight: list[int]) -> Callable[[Message], int]:
    """The endpoint with the fewest calls in flight for its weight; among equals the search
    starts after the last one picked, so idle endpoints still take turns."""
    count = len(weights)
    turn = 0

    def pick(msg: Message) -> int:
        nonlocal turn
        best, best_load = turn, math.inf
        for step in range(count):
            index = (turn + step) % count
            load = in_flight[index] / weights[index]
            if load < best_load:
                best, best_load = index, load
        turn = (best + 1) % count
        return best

    return pick
