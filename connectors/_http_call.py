"""A call of a plain http endpoint compiled into one coroutine.

An http endpoint with one URL and no ``retry`` (the common case) has nothing for the resilience
layer's loop to do: its call is one attempt on its one URL, let through by its breaker if it has
one, within its deadline if it has one.  Going through the loop anyway costs a coroutine frame
per layer on every call and on every resumption (the operation's ``run``, ``Endpoint.invoke``,
``Endpoint._invoke``, ``HttpConnector.attempt``, and around them the call step and its step
timer).  For such an endpoint ``HttpEndpoint.prepare`` gives a ``FoldedCall``: what those
layers do for this configuration, written out in one coroutine (the breaker asked and told, its
changes logged and counted, as ``Endpoint._invoke`` does; the attempt observed as
``observe.Attempt`` observes it; its failure typed as ``HttpConnector.attempt`` types it and
named as ``Endpoint.invoke`` names it; a deadline bounds the exchange in a helper frame that
only an endpoint with a deadline pays), and the call step asks it for its step form: the reply
made the message, the step timed, in the same coroutine.  Retries and several URLs go through
the layers as before; with tracing on, the step timer stays the traced wrapper.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from connectors import observe
from connectors._http_request import status_error
from connectors.base import Reply
from connectors.resilience import Breaker
from engine import metrics, tracing
from engine.errors import (
    BackendError,
    BackendFault,
    BackendRejected,
    BackendTimeout,
    BackendUnreachable,
    CircuitOpen,
)

if TYPE_CHECKING:
    from connectors.http import HttpEndpoint, HttpRequest
    from engine.message import Message
    from engine.metrics import Tally

Render = Callable[["Message"], "HttpRequest"]
Accept = Callable[[int], bool] | None
After = Callable[["Message", Reply], None]
REJECT, PROBE = Breaker.REJECT, Breaker.PROBE
log = logging.getLogger("interlace.endpoints")  # the resilience layer's: breaker changes logged alike


class FoldedCall:
    """The invocation of one step's request on a plain endpoint (``await call(msg)`` -> Reply),
    and ``step(after)``: the step that runs it and then ``after(msg, reply)`` in one coroutine."""

    __slots__ = ("_accept", "_endpoint", "_render", "_run")

    def __init__(self, endpoint: HttpEndpoint, render: Render, accept: Accept) -> None:
        self._endpoint = endpoint
        self._render = render
        self._accept = accept
        self._run = folded(endpoint, render, accept)

    def __call__(self, msg: Message) -> Awaitable[Any]:
        return self._run(msg)

    def step(self, after: After) -> FoldedStep:
        return FoldedStep(self._endpoint, self._render, self._accept, after)


class FoldedStep:
    """A call step on a plain endpoint; ``timed(ok, failed)``: the same step timed (what
    engine/instrument.py's wrapper does), still one coroutine."""

    __slots__ = ("_accept", "_after", "_endpoint", "_render", "_run")

    def __init__(self, endpoint: HttpEndpoint, render: Render, accept: Accept, after: After) -> None:
        self._endpoint = endpoint
        self._render = render
        self._accept = accept
        self._after = after
        self._run = folded(endpoint, render, accept, after)

    def __call__(self, msg: Message) -> Awaitable[Any]:
        return self._run(msg)

    def timed(self, ok: Tally, failed: Tally) -> Callable[[Message], Awaitable[Any]]:
        return folded(self._endpoint, self._render, self._accept, self._after, (ok, failed))

    def traced(self, ok: Tally, failed: Tally, step: Mapping[str, Any]) -> Callable[[Message], Awaitable[Any]]:
        """The step timed and traced (what engine/instrument.py's traced wrapper does for a step
        whose only work is one call): its attempt's CLIENT span carries the step's attributes
        ``step``, its durations the trace id as exemplar."""
        return folded(self._endpoint, self._render, self._accept, self._after, (ok, failed), step)


def folded(endpoint: HttpEndpoint, render: Render, accept: Accept, after: After | None = None,
           timer: tuple[Tally, Tally] | None = None,
           step: Mapping[str, Any] | None = None) -> Callable[[Message], Awaitable[Any]]:
    """The one coroutine: render, attempt, observe, type the failure, check the status, then
    (as a step) make the reply the message and time the step.  ``step``: the step's span
    attributes, when tracing is on (the attempt's span made here, with its head and URL encoded
    once per method and path: connectors/observe.py)."""
    connector = endpoint.connector
    base = connector.endpoints[0]
    target = connector.targets[0]
    breaker = endpoint.breakers[0]
    breaker_statuses = endpoint.breaker_statuses
    name = endpoint.name
    limits = connector._limits
    reply_of = connector._reply
    failure_of = connector.failure
    deadline = endpoint.deadline
    clock = time.perf_counter
    ok, failed = timer if timer is not None else (None, None)
    current_span = tracing.current.get
    trace_headers = tracing.TRACE_HEADERS
    record_call = tracing.record_call
    getrandbits = random.getrandbits
    time_ns = time.time_ns
    client = tracing.CLIENT
    heads: dict[str, tuple[dict[str, Any], bytes]] = {}  # method -> the attempt span's shared attributes, head
    urls: dict[str, bytes] = {}  # request path -> its url.full, encoded

    def head_of(method: str) -> tuple[dict[str, Any], bytes]:
        found = heads[method] = observe.head(step, name, target, method, client)
        return found

    def url_of(request: HttpRequest) -> bytes:
        if len(urls) > 1024:
            urls.clear()
        found = urls[request.path] = observe.url_attribute(request.location(target))
        return found

    async def bounded(transport: Any, method: str, url: str, headers: Any, body: Any) -> Any:
        """The exchange within the endpoint's deadline (a frame only endpoints with one pay)."""
        try:
            async with asyncio.timeout(deadline):
                return await transport.exchange(method, url, headers, body, limits)
        except TimeoutError:
            raise BackendTimeout(f"endpoint {name!r} did not answer within its deadline of {deadline:g} s") \
                from None

    async def run(msg: Message) -> Any:
        started = clock() if timer is not None else 0.0
        trace_id = None
        try:
            request = render(msg)
            ticket = breaker.admit()
            if ticket == REJECT:
                refusal = CircuitOpen(f"endpoint {name!r} is not being called for now: its circuit breaker is "
                                      f"open", internal=f"{target}: {breaker.state}")
                endpoint._named(refusal, "request")
                raise refusal
            if ticket == PROBE:
                metrics.breaker_changed(name, target, "half_open")
            method = request.method
            parent = current_span() if step is not None else None
            if parent is None:
                seen = request.observation = observe.Attempt(
                    name, target, method, request.location(target) if tracing.ENABLED else None)
                headers = base.headers_with(request.headers, request.forwarded)
                if seen.span is not None:
                    headers = seen.propagate(headers)
            else:  # the traced step: its attempt's span under the request's, recorded here (record_call)
                span_id = (getrandbits(64) or 1).to_bytes(8, "little")
                traceparent = f"00-{parent.trace_id}-{span_id.hex()}-{'01' if parent.sampled else '00'}"
                headers = base.headers_with(request.headers, request.forwarded)
                # tracing.with_context's work without its call and copy: the list headers_with
                # made is this call's own (unless it is the endpoint's, unchanged), so the context
                # is appended to it; any traceparent/tracestate already there is replaced
                for pair in headers:  # a loop, not a comprehension's frame: the usual list has none
                    if pair[0] in trace_headers:
                        headers = [pair for pair in headers if pair[0] not in trace_headers]
                        break
                else:
                    if headers is base.headers:
                        headers = headers.copy()
                headers.append(("traceparent", traceparent))
                if parent.trace_state:
                    headers.append(("tracestate", parent.trace_state))
                if parent.sampled:
                    trace_id = parent.trace_id
                    head = (heads.get(method) or head_of(method))[1]
                    url = urls.get(request.path) or url_of(request)
                    begun = time_ns()
                seen = request.observation = observe.Attempt(name, target, method, None, client, trace_id or "")
            transport = connector.transport or connector._opened()
            try:
                if deadline is None:
                    answer = await transport.exchange(method, base.base + request.path, headers, request.body,
                                                      limits)
                else:
                    answer = await bounded(transport, method, base.base + request.path, headers, request.body)
            except httpx.TransportError as exc:
                # as Endpoint._invoke sorts what HttpConnector.attempt raises (the body's own
                # failure included: a streamed reply of another backend can be a BackendError)
                error = failure_of(exc, base, request)
                if isinstance(error, (BackendUnreachable, BackendTimeout)):
                    outcome = "timeout" if isinstance(error, BackendTimeout) else "unreachable"
                    seen.failed(outcome, error)
                    endpoint._failed(0, ticket)
                elif isinstance(error, (BackendRejected, BackendFault)):
                    outcome = error.category or "error"
                    seen.failed(outcome, error)
                    breaker.succeeded(ticket)
                elif isinstance(error, BackendError):
                    outcome = "error"
                    seen.failed(outcome, error)
                    endpoint._failed(0, ticket)
                else:
                    outcome = None
                    seen.abandoned()  # the request's own body failed: no verdict on the backend
                    breaker.abandon(ticket)
                if trace_id is not None and parent is not None:
                    record_call(parent, span_id, head, url, begun, 0,
                                "cancelled" if outcome is None else getattr(error, "code", type(error).__name__),
                                outcome)
                if isinstance(error, BackendError):
                    endpoint._named(error, "request")
                source = request.source
                raise error from (None if source is not None and error is source.error else exc)
            except BaseException as exc:
                seen.abandoned()  # cancelled, or past the deadline: no verdict on the backend
                breaker.abandon(ticket)
                if trace_id is not None and parent is not None:
                    record_call(parent, span_id, head, url, begun, 0, "cancelled", None)
                if isinstance(exc, BackendError):
                    endpoint._named(exc, "request")
                raise
            reply = reply_of(answer, base)
            status = reply.status or 0
            seen.answered(status)
            if trace_id is not None and parent is not None:
                record_call(parent, span_id, head, url, begun, status)
            endpoint.active = 0
            if status in breaker_statuses:
                endpoint._failed(0, ticket)
            elif breaker.succeeded(ticket):
                log.warning("endpoint %r: circuit closed for %s", name, target)
                metrics.breaker_changed(name, target, "closed")
            if accept is not None and not accept(status):
                await reply.aclose()
                raise status_error(name, status)
            if after is None:
                return reply
            after(msg, reply)
        except BaseException:
            if failed is not None:
                if trace_id is None:
                    failed.observe(clock() - started)
                else:
                    failed.observe_traced(clock() - started, trace_id)
            raise
        if ok is not None:
            if trace_id is None:
                ok.observe(clock() - started)
            else:
                ok.observe_traced(clock() - started, trace_id)
        return None

    return run
