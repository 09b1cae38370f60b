"""The wire_tap step (Camel's wireTap, WSO2's clone to an asynchronous target): a copy of the
message goes to an endpoint or a sequence in the background, and the flow goes on at once.

The copy is taken when the step runs (body, headers, variables, status), so what the flow does
next never shows in it; its own ``steps`` may reshape it first.  Then it goes to ``call`` (an
endpoint's operation, as in a call step; the reply is dropped) or ``sequence``.  The flow never
waits for the tap and never fails because of it: a tap that fails or passes its ``timeout`` is
logged (with the correlation id) and counted in ``interlace_wire_taps_total{outcome="failed"}``.

At most ``max_in_flight`` copies of one step are on their way at once; a message that finds the
bound reached is not tapped (``outcome="dropped"``, logged at most once a second): a slow tap
target must not pile up memory behind a busy facade.  When the flows stop or are replaced, the
taps still on their way are waited for (each at most its ``timeout``) before the endpoints
close; a flow test waits for them the same way before it checks its mocks' calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine import metrics
from engine.compiler import CompileContext, StepConfigError
from engine.errors import FlowError
from engine.message import Message
from engine.registry import _KINDS, STEPS_REF, StepFn, step_kind
from engine.steps._fork import duration_field, fork, seconds
from engine.steps._operations import OperationCall
from engine.steps.control import compile_sequence

log = logging.getLogger("interlace.wire_tap")

DEFAULT_MAX_IN_FLIGHT = 100
DEFAULT_TIMEOUT = 10.0


def _schema() -> dict[str, Any]:
    return {
        "type": "object", "additionalProperties": False,
        "properties": {
            "steps": {**STEPS_REF, "description": "Steps that reshape the copy before it goes (they see the "
                                                  "copy only; the flow's message is never changed)."},
            "call": {"type": "object", "required": ["endpoint"],
                     "description": "Where the copy goes: an endpoint's operation, the keys of a call step "
                                    "(endpoint, method, path, ...). Its reply is dropped."},
            "sequence": {**_KINDS["sequence"].schema,
                         "description": "Where the copy goes: a sequence (its name, or {name, with})."},
            "max_in_flight": {"type": "integer", "minimum": 1,
                              "description": f"Copies of this step on their way at once (default "
                                             f"{DEFAULT_MAX_IN_FLIGHT}); a message finding them all busy is not "
                                             "tapped, and counted as dropped."},
            "timeout": duration_field(f"How long one copy may take (default {DEFAULT_TIMEOUT:g}s); past it the "
                                      "tap is cancelled and counted as failed. It also bounds the wait for taps "
                                      "on their way when the flows stop."),
        },
    }


@step_kind(
    "wire_tap",
    summary="Send a copy of the message to an endpoint or a sequence in the background; the flow does not wait "
            "for it and never fails because of it.",
    category="route",
    schema=_schema,
    examples=[{"steps": [{"payload": {"json": {"event": "order-received", "order": "${payload.id}"}}}],
               "call": {"endpoint": "audit", "method": "POST", "path": "/events"}},
              {"sequence": "archive-order", "max_in_flight": 20, "timeout": "5s"}],
    branches=("steps",),
)
def compile_wire_tap(config: Any, ctx: CompileContext) -> StepFn:
    if not any(key in config for key in ("call", "sequence", "steps")):
        raise StepConfigError("a wire tap needs somewhere to send its copy: call (an endpoint), sequence, or "
                              "steps that do the sending")
    if "call" in config and "sequence" in config:
        raise StepConfigError("a wire tap sends its copy to one place: give call or sequence, not both", "sequence")
    shape = ctx.steps(config["steps"], "steps") if "steps" in config else None
    target = _target(config, ctx)
    ctx.needs_body()  # the copy is taken now: a streamed body is read first
    taps = Taps(ctx.owner, ctx.step_id, int(config.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT)),
                seconds(config["timeout"], "timeout") if "timeout" in config else DEFAULT_TIMEOUT)

    async def tap(copy: Message) -> None:
        if shape is not None:
            await shape.run(copy)
        if target is not None:
            await target(copy)

    ctx.on_close(taps.drain)

    async def run(msg: Message) -> None:
        taps.send(fork(msg), tap)

    return run


def _target(config: Any, ctx: CompileContext) -> Callable[[Message], Awaitable[Any]] | None:
    if "call" in config:
        call = OperationCall(config["call"], ctx, ("call",))

        async def send(copy: Message) -> None:
            reply = await call(copy)
            await reply.aclose()  # nobody reads a tap's reply: give its connection back

        return send
    if "sequence" in config:
        try:
            return compile_sequence(config["sequence"], ctx)
        except StepConfigError as exc:
            raise StepConfigError(str(exc), ("sequence", *exc.key), exc.offset) from exc
    return None


class Taps:
    """The copies of one wire_tap step on their way: started, bounded, drained.

    The aggregator sends its completed groups the same way; ``count`` (by outcome: sent, failed,
    dropped) and ``what`` (the name in its log lines) are then its own."""

    def __init__(self, flow: str, step: str, bound: int, timeout: float,
                 count: Callable[[str], None] | None = None, what: str = "wire tap") -> None:
        self.flow, self.step, self.bound, self.timeout, self.what = flow, step, bound, timeout, what
        self.running: set[asyncio.Task[None]] = set()
        self._dropped_said = 0.0
        self._count = count or metrics.wire_tap_counter(flow, step)

    def send(self, copy: Message, tap: Callable[[Message], Awaitable[None]]) -> None:
        if len(self.running) >= self.bound:
            self._count("dropped")
            now = time.monotonic()
            if now - self._dropped_said >= 1.0:
                self._dropped_said = now
                log.warning("%s %s: %d copies already on their way (max_in_flight); this one is not sent",
                            self.what, self.step, self.bound, extra={"correlation_id": copy.correlation_id})
            return
        task = asyncio.get_running_loop().create_task(self._run(copy, tap))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _run(self, copy: Message, tap: Callable[[Message], Awaitable[None]]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await tap(copy)
        except TimeoutError:
            self._failed(copy, f"did not finish within its timeout of {self.timeout:g} s")
        except FlowError as exc:
            self._failed(copy, f"{exc.code}: {exc.detail}" + (f" ({exc.internal})" if exc.internal else ""))
        except asyncio.CancelledError:
            self._failed(copy, "cancelled")
            raise
        except Exception:
            log.exception("%s %s failed", self.what, self.step, extra={"correlation_id": copy.correlation_id})
            self._count("failed")
        else:
            self._count("sent")

    def _failed(self, copy: Message, why: str) -> None:
        log.warning("%s %s failed: %s", self.what, self.step, why, extra={"correlation_id": copy.correlation_id})
        self._count("failed")

    async def drain(self) -> None:
        """Wait for the copies on their way (each ends within its timeout), then cancel any left."""
        if not self.running:
            return
        pending = set(self.running)
        _done, late = await asyncio.wait(pending, timeout=self.timeout + 1.0)
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
