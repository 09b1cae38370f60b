"""A call of a plain http endpoint compiled into one coroutine.

An http endpoint with one URL, no ``retry``, no ``breaker`` and no ``deadline`` (the common
case) has nothing for the resilience layer's loop to do: its call is one attempt on its one
URL.  Going through it anyway costs a coroutine frame per layer on every call and on every
resumption (the operation's ``run``, ``Endpoint.invoke``, ``Endpoint._invoke``,
``HttpConnector.attempt``, and around them the call step and its step timer).  For such an
endpoint ``HttpEndpoint.prepare`` gives a ``FoldedCall``: what those layers do for this
configuration, written out in one coroutine (the attempt observed as ``observe.Attempt``
observes it, its failure typed as ``HttpConnector.attempt`` types it, named as
``Endpoint.invoke`` names it, the breaker's count of consecutive failures kept), and the call
step asks it for its step form: the reply made the message, the step timed, in the same
coroutine.  Anything else (retries, several URLs, a breaker, a deadline, a transaction, tracing
on for the step timer) goes through the layers as before.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx

from connectors import observe
from connectors._http_request import status_error
from connectors.base import Reply
from connectors.resilience import Breaker
from engine import tracing
from engine.errors import BackendError, BackendFault, BackendRejected, BackendTimeout, BackendUnreachable

if TYPE_CHECKING:
    from connectors.http import HttpEndpoint, HttpRequest
    from engine.message import Message
    from engine.metrics import Tally

Render = Callable[["Message"], "HttpRequest"]
Accept = Callable[[int], bool] | None
After = Callable[["Message", Reply], None]
PASS = Breaker.PASS  # the ticket of a target without a breaker: every call passes


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


def folded(endpoint: HttpEndpoint, render: Render, accept: Accept, after: After | None = None,
           timer: tuple[Tally, Tally] | None = None) -> Callable[[Message], Awaitable[Any]]:
    """The one coroutine: render, attempt, observe, type the failure, check the status, then
    (as a step) make the reply the message and time the step."""
    connector = endpoint.connector
    base = connector.endpoints[0]
    target = connector.targets[0]
    breaker = endpoint.breakers[0]
    breaker_statuses = endpoint.breaker_statuses
    name = endpoint.name
    limits = connector._limits
    reply_of = connector._reply
    failure_of = connector.failure
    clock = time.perf_counter
    ok, failed = timer if timer is not None else (None, None)

    async def run(msg: Message) -> Any:
        started = clock() if timer is not None else 0.0
        try:
            request = render(msg)
            method = request.method
            seen = request.observation = observe.Attempt(
                name, target, method, request.location(target) if tracing.ENABLED else None)
            headers = base.headers_with(request.headers, request.forwarded)
            if seen.span is not None:
                headers = seen.propagate(headers)
            transport = connector.transport or connector._opened()
            try:
                answer = await transport.exchange(method, base.base + request.path, headers, request.body, limits)
            except httpx.TransportError as exc:
                # as Endpoint._invoke sorts what HttpConnector.attempt raises (the body's own
                # failure included: a streamed reply of another backend can be a BackendError)
                error = failure_of(exc, base, request)
                if isinstance(error, (BackendUnreachable, BackendTimeout)):
                    seen.failed("timeout" if isinstance(error, BackendTimeout) else "unreachable", error)
                    endpoint._failed(0, PASS)
                elif isinstance(error, (BackendRejected, BackendFault)):
                    seen.failed(error.category or "error", error)
                    breaker.succeeded(PASS)
                elif isinstance(error, BackendError):
                    seen.failed("error", error)
                    endpoint._failed(0, PASS)
                else:
                    seen.abandoned()  # the request's own body failed: no verdict on the backend
                if isinstance(error, BackendError):
                    endpoint._named(error, "request")
                source = request.source
                raise error from (None if source is not None and error is source.error else exc)
            except BaseException:
                seen.abandoned()  # cancelled
                raise
            reply = reply_of(answer, base)
            status = reply.status or 0
            seen.answered(status)
            endpoint.active = 0
            if status in breaker_statuses:
                endpoint._failed(0, PASS)
            else:
                breaker.succeeded(PASS)
            if accept is not None and not accept(status):
                await reply.aclose()
                raise status_error(name, status)
            if after is None:
                return reply
            after(msg, reply)
        except BaseException:
            if failed is not None:
                failed.observe(clock() - started)
            raise
        if ok is not None:
            ok.observe(clock() - started)
        return None

    return run
