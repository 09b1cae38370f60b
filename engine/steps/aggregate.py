"""The aggregate step (Camel's aggregate EIP, WSO2's aggregate of out-of-band messages): values
of separate messages with the same correlation key are gathered into a group until it is
complete, and the completed group goes to an endpoint or a sequence in the background.

The message that arrived goes on at once (a facade answers its caller, e.g. 202).  A group is
complete by ``size``, by ``timeout`` (since its first message), by ``idle`` (since its latest)
or by the ``when`` predicate over the gathered array, whichever comes first.  It is sent as a
JSON array in arrival order, or as the value of ``reduce`` over that array, with
``${vars.group}`` = {key, size, completed_by}; sending works as wire_tap's (its ``Taps``:
bounded, timed out, drained when the flows stop).

Bounds: ``max_size`` values in a group (reaching it completes the group, ``max_size``) and
``max_groups`` open groups; a message opening one more either completes the oldest group first
(``on_full: complete_oldest``, ``max_groups``) or is refused with 503 problem+json
``aggregator-full`` and Retry-After (``on_full: refuse``).  Every completion is counted in
``interlace_aggregated_groups_total{completed_by}``.  The groups are kept in memory, in a
sql endpoint's table (``engine/steps/_groups.py``) or in a redis endpoint
(``engine/steps/_groups_redis.py``); in the last two they survive a restart.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from engine import jsonfast, metrics
from engine.compiler import CompileContext, StepConfigError
from engine.errors import ExpressionError, RequestInvalid, ServiceUnavailable
from engine.expression_blame import value_is_request
from engine.message import JSON, Message
from engine.registry import _KINDS, StepFn, step_kind
from engine.steps._fork import cancel_swallowed, duration_field, seconds
from engine.steps._groups import Group, Groups, MemoryGroups, SqlGroups
from engine.steps.basic import json_payload
from engine.steps.wire_tap import DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT, Taps, _target

log = logging.getLogger("interlace.aggregate")

DEFAULT_MAX_GROUPS = 10_000
DEFAULT_MAX_SIZE = 1000
ON_FULL = ("complete_oldest", "refuse")


class AggregatorFull(ServiceUnavailable):
    code = "aggregator-full"
    title = "Aggregator full"


class NoCorrelationKey(RequestInvalid):
    code = "no-correlation-key"
    title = "No correlation key"


class BadCorrelationKey(RequestInvalid):
    code = "bad-correlation-key"
    title = "Unusable correlation key"


# what every store can hold as a group's key: PostgreSQL refuses an index row past ~2.7 kB and any
# text holding U+0000, which its driver's error made a 503 "store cannot be reached" (retried forever)
MAX_KEY_BYTES = 1024


def _schema() -> dict[str, Any]:
    return {
        "type": "object", "additionalProperties": False, "required": ["correlation", "complete"],
        "properties": {
            "correlation": {"type": "string",
                            "description": "The correlation key template: messages with the same key are gathered "
                                           "into one group, e.g. ${payload.orderId} or ${headers.x-batch}; a message "
                                           "it gives nothing for (null, missing) is refused, 422 "
                                           "no-correlation-key; one past 1024 bytes of UTF-8 or holding U+0000, "
                                           "422 bad-correlation-key."},
            "value": {"description": "What each message adds to its group (a template, e.g. ${payload.line}); "
                                     "default: its JSON payload."},
            "complete": {
                "type": "object", "additionalProperties": False,
                "description": "When a group is complete (at least one; the first that holds wins).",
                "properties": {
                    "size": {"type": "integer", "minimum": 1, "description": "Once it holds this many values."},
                    "timeout": duration_field("Once this long has passed since its first message."),
                    "idle": duration_field("Once this long has passed since its latest message."),
                    "when": {"type": "string",
                             "description": "A condition over the group (payload is the array gathered so far), "
                                            "e.g. ${length(payload) >= `3` || payload[-1].last == `true`}."},
                },
            },
            "reduce": {"type": "string",
                       "description": "An expression whose payload is the gathered array, e.g. "
                                      "sum(payload[*].total); its value is what is sent. Default: the array."},
            "call": {"type": "object", "required": ["endpoint"],
                     "description": "Where a completed group goes: an endpoint's operation, the keys of a call "
                                    "step (endpoint, method, path, ...). Its reply is dropped."},
            "sequence": {**_KINDS["sequence"].schema,
                         "description": "Where a completed group goes: a sequence (its name, or {name, with})."},
            "store": {"type": "string",
                      "description": "An endpoint keeping the open groups, so that they survive a restart and "
                                     "replicas share them: sql (SQLite or PostgreSQL, tables interlace_aggregation "
                                     "and interlace_aggregation_groups) or redis (keys under its key_prefix); "
                                     "default: this process's memory (open groups are completed when the flows stop)."},
            "max_groups": {"type": "integer", "minimum": 1,
                           "description": f"Open groups at most (default {DEFAULT_MAX_GROUPS}); see on_full."},
            "max_size": {"type": "integer", "minimum": 1,
                         "description": f"Values in one group at most (default {DEFAULT_MAX_SIZE}); a group "
                                        "reaching it is complete (completed_by max_size)."},
            "on_full": {"enum": list(ON_FULL),
                        "description": "A message opening a group past max_groups: complete_oldest (default) "
                                       "completes the oldest open group first; refuse answers 503 aggregator-full "
                                       "with Retry-After."},
            "max_in_flight": {"type": "integer", "minimum": 1,
                              "description": f"Completed groups on their way at once (default "
                                             f"{DEFAULT_MAX_IN_FLIGHT}); past it new messages are refused with 503 "
                                             "until one is sent."},
            "timeout": duration_field(f"How long sending one group may take (default {DEFAULT_TIMEOUT:g}s)."),
        },
    }


@step_kind(
    "aggregate",
    summary="Gather values of separate messages with the same correlation key until the group is complete (size, "
            "timeout, idle, predicate), then send the group to an endpoint or a sequence in the background; each "
            "message goes on at once.",
    category="route",
    schema=_schema,
    examples=[{"correlation": "${payload.orderId}", "value": "${payload.line}",
               "complete": {"size": 3, "timeout": "30s"},
               "call": {"endpoint": "orders", "method": "POST", "path": "/orders/${vars.group.key}/lines"}},
              {"correlation": '${headers."x-batch"}', "complete": {"idle": "2s", "when": "${payload[-1].last}"},
               "reduce": "{batch: payload[0].batch, total: sum(payload[*].amount)}", "sequence": "settle",
               "store": "groups", "on_full": "refuse"}],
)
def compile_aggregate(config: Any, ctx: CompileContext) -> StepFn:
    complete = config.get("complete") or {}
    if not any(key in complete for key in ("size", "timeout", "idle", "when")):
        raise StepConfigError("a group needs a way to complete: size, timeout (since its first message), idle "
                              "(since its latest) or when (a condition over the group)", "complete")
    if "call" not in config and "sequence" not in config:
        raise StepConfigError("an aggregate sends its completed groups somewhere: give call (an endpoint) or "
                              "sequence")
    if "call" in config and "sequence" in config:
        raise StepConfigError("an aggregate sends to one place: give call or sequence, not both", "sequence")
    ctx.needs_body()
    aggregator = Aggregator(
        ctx.owner, ctx.step_id,
        correlation=ctx.template(config["correlation"], "correlation"),
        value=ctx.template(config["value"], "value") if "value" in config else None,
        size=complete.get("size"),
        timeout=seconds(complete["timeout"], ("complete", "timeout")) if "timeout" in complete else None,
        idle=seconds(complete["idle"], ("complete", "idle")) if "idle" in complete else None,
        when=ctx.condition(complete["when"], ("complete", "when")) if "when" in complete else None,
        reduce=ctx.expression(config["reduce"], "reduce", reads_body=False) if "reduce" in config else None,
        groups=_groups(config, ctx),
        max_groups=int(config.get("max_groups", DEFAULT_MAX_GROUPS)),
        max_size=int(config.get("max_size", DEFAULT_MAX_SIZE)),
        refuse=config.get("on_full", "complete_oldest") == "refuse",
        send_bound=int(config.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT)),
        send_timeout=seconds(config["timeout"], "timeout") if "timeout" in config else DEFAULT_TIMEOUT,
        target=_target(config, ctx),
        durable="store" in config,
    )
    ctx.on_open(aggregator.start)
    ctx.on_close(aggregator.stop)
    return aggregator.arrive


def _groups(config: Any, ctx: CompileContext) -> Groups:
    if "store" not in config:
        return MemoryGroups()
    name = config["store"]
    endpoint = ctx.endpoint(name, "store")
    connector = getattr(endpoint, "connector", endpoint)  # the resilience wrapper, when there is one
    if getattr(connector, "name", None) == "broken":
        return MemoryGroups()  # its own error is reported already
    from connectors.redis import RedisEndpoint
    from connectors.sql import SqlConnector

    if ctx.stores_in_memory and isinstance(connector, RedisEndpoint | SqlConnector):
        return MemoryGroups()  # a flow-test case's own (still durable: open groups are not sent at its end)
    if isinstance(connector, RedisEndpoint):
        from engine.steps._groups_redis import RedisGroups

        return RedisGroups(connector, ctx.step_id)
    if not isinstance(connector, SqlConnector):
        raise StepConfigError(f"endpoint {name!r} cannot keep aggregation groups; declare a sql endpoint "
                              f"(endpoints: {name}: sql: {{url: sqlite:///groups.db}}), a redis one "
                              f"(endpoints: {name}: redis: {{url: redis://...}}) or leave store out for this "
                              "process's memory", "store")
    return SqlGroups(endpoint, connector, ctx.step_id)


class Aggregator:
    """One aggregate step: its groups, their completion, and the sending of completed groups."""

    def __init__(self, flow: str, step: str, *, correlation: Any, value: Any, size: int | None,
                 timeout: float | None, idle: float | None, when: Any, reduce: Any, groups: Groups,
                 max_groups: int, max_size: int, refuse: bool, send_bound: int, send_timeout: float,
                 target: Any, durable: bool) -> None:
        self.flow, self.step = flow, step
        self.correlation, self.value, self.size, self.when, self.reduce = correlation, value, size, when, reduce
        self.timeout, self.idle = timeout, idle
        self.groups, self.max_groups, self.max_size, self.refuse = groups, max_groups, max_size, refuse
        self.target, self.durable = target, durable
        self._completed, self._messages, deliveries = metrics.aggregate_counters(flow, step)
        self.taps = Taps(flow, step, send_bound, send_timeout, deliveries, "aggregate")
        self._sweeper: asyncio.Task[None] | None = None
        self._unreachable_said = 0.0

    # -- a message arrives --

    def _keyless_status(self, msg: Message) -> int:
        """No key is the caller's mistake (422) when the template reads what the caller sent, as
        it came (``${payload.orderId}`` on the request's body); the flow's (500) otherwise."""
        return 422 if value_is_request(tuple(e.blame for e in self.correlation.expressions), msg) else 500

    async def arrive(self, msg: Message) -> None:
        rendered = self.correlation.render(msg)
        if rendered is None:  # as Camel's aggregator: keyless messages must not all join one "None" group
            raise NoCorrelationKey(f"aggregate {self.step}: this message has no correlation key (its correlation "
                                   "template gave nothing)", status=self._keyless_status(msg))
        key = str(rendered)
        if "\x00" in key or (len(key) > MAX_KEY_BYTES // 4
                              and len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES):
            raise BadCorrelationKey(f"aggregate {self.step}: a correlation key is at most {MAX_KEY_BYTES} bytes of "
                                    "UTF-8 without U+0000; this message's is not", status=self._keyless_status(msg))
        gathered = self._value_of(msg)
        if len(self.taps.running) >= self.taps.bound:
            self._messages("refused")
            raise AggregatorFull(f"aggregate {self.step}: {self.taps.bound} completed groups are still on their way; "
                                 "try again shortly", headers={"Retry-After": "1"})
        try:
            if not await self.groups.has(key) and await self.groups.count() >= self.max_groups:
                if self.refuse:
                    self._messages("refused")
                    raise AggregatorFull(f"aggregate {self.step} holds its max_groups of {self.max_groups} open "
                                         "groups; try again shortly", headers={"Retry-After": "1"})
                oldest = await self.groups.oldest()
                if oldest is not None:
                    await self._complete(oldest, "max_groups", msg.correlation_id)
            # the values are read back only for a predicate: size and max_size need the count alone
            group = await self.groups.add(key, gathered, time.time(), with_values=self.when is not None)
        except AggregatorFull:
            raise
        except Exception as exc:
            if not self.durable:
                raise
            log.warning("%s: aggregation store unavailable (%s)", self.step, type(exc).__name__)
            raise ServiceUnavailable("the aggregation store cannot be reached right now; try again shortly",
                                     headers={"Retry-After": "1"}) from None
        self._messages("gathered")
        reason = self._reason(group, msg)
        msg.vars["group"] = {"key": key, "size": group.size, "completed_by": reason}
        if reason is None:
            return
        try:
            values = await self.groups.take(key, group.opened_by)
        except Exception as exc:
            if not self.durable:
                raise
            # the message is in its group already: a 503 would have the caller send it twice.  The
            # group stays open, completed by its next message or by time once the store answers.
            log.warning("%s: a group completed by %s could not be taken from its store (%s); it stays open",
                        self.step, reason, type(exc).__name__)
            msg.vars["group"]["completed_by"] = None
            return
        self._send(key, reason, msg.correlation_id, values)

    def _value_of(self, msg: Message) -> Any:
        value = self.value.render(msg) if self.value is not None else json_payload(msg, "aggregate")
        try:
            return jsonfast.loads(jsonfast.dumps(value))  # the group's own copy: the flow may change its payload
        except TypeError:
            raise ExpressionError(f"aggregate {self.step} gathers JSON values; this message gave "
                                  f"{type(value).__name__} (an XML payload? give value: a template)") from None

    def _reason(self, group: Group, msg: Message) -> str | None:
        if self.size is not None and group.size >= self.size:
            return "size"
        if self.when is not None and self.when.is_true(self._probe(group.values or [], msg)):
            return "predicate"
        if group.size >= self.max_size:
            return "max_size"
        return None

    @staticmethod
    def _probe(values: list[Any], msg: Message | None, correlation_id: str = "") -> Message:
        probe = Message(body=b"", correlation_id=msg.correlation_id if msg is not None else correlation_id)
        probe.set_payload(values, JSON)
        if msg is not None:
            probe.vars = msg.vars
        return probe

    # -- a group completes --

    async def _complete(self, key: str, reason: str, correlation_id: str, opened_by: int | None = None) -> None:
        self._send(key, reason, correlation_id, await self.groups.take(key, opened_by))

    def _send(self, key: str, reason: str, correlation_id: str, values: list[Any]) -> None:
        if not values:
            return  # another message, the sweeper or another replica took it first
        self._completed(reason)
        out = self._probe(values, None, correlation_id)
        out.vars = {"group": {"key": key, "size": len(values), "completed_by": reason}}
        if self.reduce is not None:
            out.set_payload(self.reduce.evaluate(out), JSON)
        self.taps.send(out, self.target)

    # -- completion by time, and the lifetime --

    def start(self) -> None:
        if self.timeout is not None or self.idle is not None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        # often enough that a group completes within a tenth of its timeout (at most 1 s late)
        shortest = min(t for t in (self.timeout, self.idle) if t is not None)
        tick = min(max(shortest / 10, 0.02), 1.0)
        while True:
            await asyncio.sleep(tick)
            if cancel_swallowed():
                raise asyncio.CancelledError
            now = time.time()
            try:
                due = await self.groups.due(now - self.timeout if self.timeout is not None else -math.inf,
                                            now - self.idle if self.idle is not None else -math.inf)
                for key, reason, opened_by in due:
                    if len(self.taps.running) >= self.taps.bound:  # no completed group is dropped: wait for a slot
                        await asyncio.wait(set(self.taps.running), return_when=asyncio.FIRST_COMPLETED)
                    await self._complete(key, reason, "", opened_by)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an unreachable store: try again on the next tick
                if cancel_swallowed():
                    raise asyncio.CancelledError from None
                if now - self._unreachable_said >= 10.0:
                    self._unreachable_said = now
                    log.warning("%s: could not complete groups by time (%s); trying again", self.step,
                                type(exc).__name__)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if not self.durable:  # memory would lose them: each open group is sent as it stands
            for key in await self.groups.keys():
                await self._complete(key, "stopped", "")
        await self.taps.drain()
