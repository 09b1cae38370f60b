"""The resequence step (Camel's resequence EIP, stream and batch modes): messages carrying a
sequence number are sent to an endpoint or a sequence in the order of their numbers, whatever
the order they arrived in; each message goes on at once in its own flow (the caller is answered).

``mode: stream`` (default): a message is released as soon as every number before it was; a gap
is waited for at most ``timeout`` (from when its number became the one waited for), then
skipped.  The first number expected is ``start``, or the first one seen.  A number below the
next one expected (its turn is past) is ``late``: sent at once (default) or dropped; one already
held is a ``duplicate`` and dropped.  At most ``capacity`` messages are held: one more releases
the lowest held, skipping the gap before it.

``mode: batch``: messages are gathered until ``size`` of them, or ``timeout`` after the first,
then released sorted by number (duplicates dropped).

Released messages are sent one after the other by one task (the order is the point), each
within ``send_timeout``; a failure is logged and counted, and the next one goes.  At most
``max_pending`` released messages wait to be sent: past it new messages are refused with 503
problem+json ``resequencer-full`` and Retry-After.  When the flows stop or are replaced, the
held messages are released in order and every pending one is sent (each within its
``send_timeout``) before the endpoints close.  State is this process's memory, or with
``store`` a redis or sql endpoint's (``engine/steps/_resequence_durable.py``): there the held
messages outlive the engine and the replicas share them.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from engine import metrics
from engine.compiler import CompileContext, StepConfigError
from engine.errors import FlowError, RequestInvalid, ServiceUnavailable
from engine.expression_blame import value_is_request
from engine.message import Message
from engine.registry import _KINDS, StepFn, step_kind
from engine.steps._fork import duration_field, fork, seconds
from engine.steps.wire_tap import DEFAULT_TIMEOUT, _target

log = logging.getLogger("interlace.resequence")

DEFAULT_CAPACITY = 1000
DEFAULT_MAX_PENDING = 1000
DEFAULT_BATCH_SIZE = 100
DEFAULT_WAIT = 1.0


class ResequencerFull(ServiceUnavailable):
    code = "resequencer-full"
    title = "Resequencer full"


class BadSequenceNumber(RequestInvalid):
    code = "bad-sequence-number"
    title = "Bad sequence number"


def _schema() -> dict[str, Any]:
    return {
        "type": "object", "additionalProperties": False, "required": ["number"],
        "properties": {
            "number": {"type": "string",
                       "description": "The sequence number of a message (an integer), e.g. ${payload.seq} or "
                                      "${headers.\"x-sequence\"}."},
            "mode": {"enum": ["stream", "batch"],
                     "description": "stream (default): each message released once all before it were, a gap "
                                    "waited for at most timeout; batch: messages gathered up to size or timeout, "
                                    "then released sorted."},
            "timeout": duration_field(f"stream: how long a gap is waited for before it is skipped; batch: how "
                                      f"long after its first message a batch is released (default "
                                      f"{DEFAULT_WAIT:g}s)."),
            "start": {"type": "integer", "description": "stream: the first number expected (default: the first "
                                                        "one seen)."},
            "capacity": {"type": "integer", "minimum": 1,
                         "description": f"stream: messages held at most (default {DEFAULT_CAPACITY}); one more "
                                        "releases the lowest held, skipping the gap before it."},
            "late": {"enum": ["send", "drop"],
                     "description": "stream: a message whose turn is past (its number is below the next one "
                                    "expected): send it at once (default) or drop it."},
            "size": {"type": "integer", "minimum": 1,
                     "description": f"batch: messages in a batch (default {DEFAULT_BATCH_SIZE})."},
            "call": {"type": "object", "required": ["endpoint"],
                     "description": "Where released messages go: an endpoint's operation, the keys of a call step "
                                    "(endpoint, method, path, ...). Its reply is dropped."},
            "sequence": {**_KINDS["sequence"].schema,
                         "description": "Where released messages go: a sequence (its name, or {name, with})."},
            "store": {"type": "string",
                      "description": "An endpoint keeping the messages held, the next number and the messages "
                                     "released but not yet sent, so that a restart loses none and several "
                                     "replicas order one stream together (one of them sends, at least once): "
                                     "redis, or sql (SQLite or PostgreSQL, tables interlace_resequence_*); "
                                     "default: this process's memory."},
            "max_pending": {"type": "integer", "minimum": 1,
                            "description": f"Released messages waiting to be sent at most (default "
                                           f"{DEFAULT_MAX_PENDING}); past it new messages are refused with 503."},
            "send_timeout": duration_field(f"How long sending one message may take (default "
                                           f"{DEFAULT_TIMEOUT:g}s)."),
        },
    }


@step_kind(
    "resequence",
    summary="Send messages to an endpoint or a sequence in the order of their sequence numbers (stream: as soon "
            "as the next number is there, a gap waited for at most a timeout; batch: sorted batches); each "
            "message goes on at once.",
    category="route",
    schema=_schema,
    examples=[{"number": "${payload.seq}", "timeout": "2s",
               "call": {"endpoint": "ledger", "method": "POST", "path": "/entries"}},
              {"number": '${headers."x-sequence"}', "mode": "batch", "size": 50, "timeout": "500ms",
               "sequence": "apply-changes"}],
)
def compile_resequence(config: Any, ctx: CompileContext) -> StepFn:
    mode = config.get("mode", "stream")
    if "call" not in config and "sequence" not in config:
        raise StepConfigError("a resequence sends the messages it puts in order somewhere: give call (an endpoint) "
                              "or sequence")
    if "call" in config and "sequence" in config:
        raise StepConfigError("a resequence sends to one place: give call or sequence, not both", "sequence")
    for key in ("start", "capacity", "late") if mode == "batch" else ("size",):
        if key in config:
            raise StepConfigError(f"{key} belongs to mode: {'stream' if mode == 'batch' else 'batch'}", key)
    if "store" in config and "start" in config:
        from engine.steps._resequence_durable import LARGEST

        if not -LARGEST <= int(config["start"]) <= LARGEST:  # else every message would be refused 422
            raise StepConfigError(f"a sequence number kept in a store is at most 2^53 in size, got start: "
                                  f"{config['start']}", "start")
    number = ctx.template(config["number"], "number")
    if number.is_constant:  # every message would have the same number (or none): a forgotten ${...}
        raise StepConfigError(f"number gives each message its own sequence number: a template such as "
                              f"${{payload.seq}}, not the constant {config['number']!r}", "number")
    ctx.needs_body()  # the message is held: a streamed body is read first
    target = _target(config, ctx)
    assert target is not None
    resequencer = _kind(config, ctx)(
        ctx.owner, ctx.step_id, number, target,
        batch=mode == "batch",
        wait=seconds(config["timeout"], "timeout") if "timeout" in config else DEFAULT_WAIT,
        start=int(config["start"]) if "start" in config else None,
        capacity=int(config.get("capacity", DEFAULT_CAPACITY)),
        send_late=config.get("late", "send") == "send",
        size=int(config.get("size", DEFAULT_BATCH_SIZE)),
        max_pending=int(config.get("max_pending", DEFAULT_MAX_PENDING)),
        send_timeout=seconds(config["send_timeout"], "send_timeout") if "send_timeout" in config
        else DEFAULT_TIMEOUT)
    ctx.on_open(resequencer.start)
    ctx.on_close(resequencer.stop)
    return resequencer.arrive


def _kind(config: Any, ctx: CompileContext) -> Callable[..., Resequencer]:
    """The resequencer a ``store`` asks for: this process's memory, or a redis or sql endpoint's."""
    if "store" not in config:
        return Resequencer
    name = config["store"]
    endpoint = ctx.endpoint(name, "store")
    connector = getattr(endpoint, "connector", endpoint)  # the resilience wrapper, when there is one
    if getattr(connector, "name", None) == "broken":
        return Resequencer  # its own error is reported already
    from connectors.redis import RedisEndpoint
    from connectors.sql import SqlConnector
    from engine.steps._resequence_durable import DurableResequencer, KeptState

    kept: KeptState
    if ctx.stores_in_memory and isinstance(connector, RedisEndpoint | SqlConnector):
        return _KeptInMemory
    if isinstance(connector, RedisEndpoint):
        from engine.steps._resequence_redis import RedisKept

        kept = RedisKept(connector, ctx.step_id)
    elif isinstance(connector, SqlConnector):
        from engine.steps._resequence_sql import SqlKept

        kept = SqlKept(endpoint, connector, ctx.step_id)
    else:
        raise StepConfigError(f"endpoint {name!r} cannot keep a resequencer's state; declare a redis endpoint "
                              f"(endpoints: {name}: redis: {{url: redis://...}}), a sql one (endpoints: {name}: "
                              "sql: {url: sqlite:///order.db}) or leave store out for this process's memory",
                              "store")
    return functools.partial(DurableResequencer, kept=kept)


class Resequencer:
    """One resequence step: the messages it holds, their release in order, and one sender."""

    keeps_on_stop = False  # memory releases what it holds on a clean stop (a store keeps it)

    def __init__(self, flow: str, step: str, number: Any, target: Callable[[Message], Awaitable[Any]], *,
                 batch: bool, wait: float, start: int | None, capacity: int, send_late: bool, size: int,
                 max_pending: int, send_timeout: float) -> None:
        self.flow, self.step, self.number, self.target = flow, step, number, target
        self.batch, self.wait, self.capacity, self.send_late, self.size = batch, wait, capacity, send_late, size
        self.max_pending, self.send_timeout = max_pending, send_timeout
        self.next: int | None = start  # stream: the number whose turn it is
        self.held: dict[int, tuple[float, Message]] = {}  # number -> (when it arrived, its copy)
        self.order: list[int] = []  # stream: a heap of the numbers held
        self.batch_since = 0.0  # batch: when its first message came
        self.waiting_for: int | None = None  # stream: the missing number being waited for, since when
        self.waiting_since = 0.0
        self.pending: deque[Message] = deque()  # released, waiting for the sender
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False
        self._count = metrics.resequence_counter(flow, step)

    # -- a message arrives --

    async def arrive(self, msg: Message) -> None:
        if self._sender is None:
            self.start()
        number = self._number_of(msg)
        if len(self.pending) >= self.max_pending:
            self._count("refused")
            raise ResequencerFull(f"resequence {self.step}: {self.max_pending} messages are waiting to be sent; try "
                                  "again shortly", headers={"Retry-After": "1"})
        copy = fork(msg)
        if self.batch:
            self._hold_in_batch(number, copy)
        else:
            self._hold_in_stream(number, copy)

    def _number_of(self, msg: Message) -> int:
        value = self.number.render(msg)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise BadSequenceNumber(f"resequence {self.step}: the sequence number must be an integer, got "
                                f"{str(value)[:40]!r}", status=self._refusal_status(msg))

    def _refusal_status(self, msg: Message) -> int:
        """A number refused is the caller's mistake (422) when the template read it from what the
        caller sent, as it came; the flow's (500) when it came from anything a step made."""
        return 422 if value_is_request(tuple(e.blame for e in self.number.expressions), msg) else 500

    def _hold_in_stream(self, number: int, copy: Message) -> None:
        if self.next is None:
            self.next = number
        if number < self.next:
            self._count("late")
            if self.send_late:
                self._release(copy)
            return
        if number in self.held:
            self._count("duplicate")
            return
        self.held[number] = (time.monotonic(), copy)
        heapq.heappush(self.order, number)
        self._release_in_turn("in_order")
        if len(self.held) > self.capacity:
            self._skip_gap("after_capacity")
        self._note_gap()

    def _note_gap(self) -> None:
        """A gap is timed from when its number became the one waited for."""
        if self.held and self.waiting_for != self.next:
            self.waiting_for, self.waiting_since = self.next, time.monotonic()

    def _release_in_turn(self, outcome: str) -> None:
        """Release every held message whose turn has come: the first with ``outcome``."""
        while self.order and self.order[0] == self.next:
            number = heapq.heappop(self.order)
            self._count(outcome)
            outcome = outcome if outcome == "stopped" else "in_order"  # the ones after it simply had their turn
            self._release(self.held.pop(number)[1])
            self.next = number + 1

    def _skip_gap(self, outcome: str) -> None:
        """Give up on the numbers missing before the lowest held one."""
        if self.order:
            self.next = self.order[0]
            self._release_in_turn(outcome)

    def _hold_in_batch(self, number: int, copy: Message) -> None:
        if number in self.held:
            self._count("duplicate")
            return
        if not self.held:
            self.batch_since = time.monotonic()
        self.held[number] = (self.batch_since, copy)
        if len(self.held) >= self.size:
            self._release_batch("batch_size")

    def _release_batch(self, outcome: str) -> None:
        for number in sorted(self.held):
            self._count(outcome)
            self._release(self.held[number][1])
        self.held.clear()

    def _release(self, copy: Message) -> None:
        self.pending.append(copy)
        self._wake.set()

    # -- time, the sender, and the lifetime --

    def start(self) -> None:
        if self._sender is not None:
            return
        loop = asyncio.get_running_loop()
        self._sender = loop.create_task(self._send_all())
        self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        tick = min(max(self.wait / 10, 0.02), 1.0)
        while True:
            await asyncio.sleep(tick)
            if not self.held:
                continue
            now = time.monotonic()
            if self.batch:
                if now - self.batch_since >= self.wait:
                    self._release_batch("batch_timeout")
            elif now - self.waiting_since >= self.wait:
                self._skip_gap("after_gap_timeout")
                self._note_gap()

    async def _send_all(self) -> None:
        while True:
            while not self.pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
            await self._deliver(self.pending.popleft())

    async def _deliver(self, copy: Message) -> None:
        """Send one released message within its send_timeout; a failure is logged and counted."""
        try:
            async with asyncio.timeout(self.send_timeout):
                await self.target(copy)
        except TimeoutError:
            self._failed(copy, f"did not finish within its send_timeout of {self.send_timeout:g} s")
        except FlowError as exc:
            self._failed(copy, f"{exc.code}: {exc.detail}" + (f" ({exc.internal})" if exc.internal else ""))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("resequence %s: sending failed", self.step, extra={"correlation_id": copy.correlation_id})
            self._count("failed")
        else:
            self._count("sent")

    def _failed(self, copy: Message, why: str) -> None:
        log.warning("resequence %s: sending failed: %s", self.step, why, extra={"correlation_id": copy.correlation_id})
        self._count("failed")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self.keeps_on_stop:
            pass  # a flow-test case's stand-in for a store: what is held stays, as it would in the store
        elif self.batch:  # what is held goes, in order: nothing kept in memory is lost on a clean stop
            self._release_batch("stopped")
        else:
            while self.order:
                self._skip_gap("stopped")
        self._stopping = True
        self._wake.set()
        if self._sender is None:
            return
        # each message within its send_timeout: the whole wait is bounded by what is pending
        _done, late = await asyncio.wait({self._sender}, timeout=self.send_timeout * (len(self.pending) + 1) + 1.0)
        for task in late:
            task.cancel()
        await asyncio.gather(self._sender, return_exceptions=True)
        self._sender = self._sweeper = None  # flows opened again (a flow-test case) start afresh
        self._stopping = False


class _KeptInMemory(Resequencer):
    """A ``store:``'s resequencer in a flow-test case: the case's memory, and what it holds when
    the case ends is not released (it would wait in the store for the next engine)."""

    keeps_on_stop = True
