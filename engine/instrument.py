"""The wrapper the compiler puts around each step: a span and a duration per step that does work.

It takes a step and returns one of the same shape (``Message -> None``), so every step kind,
built in or added later, gets it without a line of its own.  Which kinds do work is the
registry's business: ``StepKind.observed`` (by default the kinds of the categories in
``WORK_CATEGORIES``: calls, transforms, SQL, stores).  Steps that only move values around
(set, choice, log...) run unwrapped: they cost nothing extra.

With tracing off the wrapper only times the step (``interlace_step_duration_seconds``); with it
on, the step also runs inside an INTERNAL span named after its kind, carrying its flow, id,
endpoint(s), the message status after it, and the error it raised; a step whose only work is one
call (``ONE_CALL_KINDS``) has no span of its own: its attempts' spans carry its attributes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from engine import metrics, tracing
from engine.errors import FlowError
from engine.message import Message
from engine.registry import StepFn

WORK_CATEGORIES = frozenset({"connect", "transform", "sql", "store", "messaging", "data"})
# Kinds whose only work is one call of an endpoint: no INTERNAL span of their own, since the
# attempt's CLIENT (or PRODUCER) span already says which endpoint, with what status or error; it
# carries the step's attributes (flow, step id and kind) instead.  One span a call less, about a
# third of what tracing cost a proxied request (benchmarks/tracing_inprocess.py).
ONE_CALL_KINDS = frozenset({"call"})


def observe_step(run: StepFn, *, kind: str, step_id: str, flow: str, endpoints: Sequence[str] = ()) -> StepFn:
    """``run`` timed (and traced when tracing is on), as a step of the same shape."""
    ok = metrics.tally(metrics.STEP_SECONDS, flow, step_id, kind, "ok")
    failed = metrics.tally(metrics.STEP_SECONDS, flow, step_id, kind, "error")
    clock = time.perf_counter

    async def timed(msg: Message) -> None:
        started = clock()
        try:
            await run(msg)
        except BaseException:
            failed.observe(clock() - started)
            raise
        ok.observe(clock() - started)

    if not tracing.ENABLED:
        # a step that can time itself in its own coroutine (a folded call, connectors/_http_call.py),
        # or a shaper, which stays one (a foreach's value-only path times it per item)
        self_timed = getattr(run, "timed", None)
        if self_timed is not None:
            timed_itself: StepFn = self_timed(ok, failed)
            return timed_itself
        return timed

    # the attributes every span of this step shares: made once, here (the export thread encodes
    # them once per batch); a span's own (status, error) go in its own dict
    shared: dict[str, str | list[str]] = {"interlace.flow": flow, "interlace.step.id": step_id,
                                          "interlace.step.kind": kind}
    if len(endpoints) == 1:
        shared["interlace.endpoint"] = endpoints[0]
    elif endpoints:
        shared["interlace.endpoint"] = list(endpoints)
    start_span, current, internal, observe = tracing.start_span, tracing.current, tracing.INTERNAL, metrics.observe

    if kind in ONE_CALL_KINDS:
        # a step that traces itself in its own coroutine (a folded call, connectors/_http_call.py)
        self_traced = getattr(run, "traced", None)
        if self_traced is not None:
            traced_itself: StepFn = self_traced(ok, failed, shared)
            return traced_itself
        step = tracing.step

        async def traced_call(msg: Message) -> None:
            token = step.set(shared)
            started = clock()
            try:
                await run(msg)
            except BaseException:
                span = current.get()
                observe(failed, clock() - started, span.trace_id_hex if span is not None else None)
                raise
            else:
                span = current.get()
                observe(ok, clock() - started, span.trace_id_hex if span is not None else None)
            finally:
                step.reset(token)

        return traced_call

    async def traced(msg: Message) -> None:
        span = start_span(kind, internal, shared)
        if span is None:  # not under a request's span (a source without one): timed only
            await timed(msg)
            return
        token = current.set(span)
        started = clock()
        try:
            await run(msg)
        except BaseException as exc:
            observe(failed, clock() - started, span.trace_id_hex)
            span.fail(exc.code if isinstance(exc, FlowError) else type(exc).__name__, str(exc))
            if isinstance(exc, FlowError):
                span.attributes["interlace.error.status"] = exc.status
            raise
        else:
            observe(ok, clock() - started, span.trace_id_hex)
            span.attributes["interlace.status"] = msg.status
        finally:
            current.reset(token)
            span.end()

    return traced
