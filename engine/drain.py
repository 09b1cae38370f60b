"""Draining on SIGTERM, and what happens to the requests still in flight when it times out.

``DrainGuard`` wraps the facade's ASGI app and knows each request in flight.  When the drain
timeout passes, ``cut()`` cancels them all: one that has not started its answer gets a 503
problem+json (``drain-timeout``, with ``Retry-After`` and ``Connection: close``), one whose
answer is already streaming has its connection closed (the client sees a truncated answer,
never a complete-looking one).  No traceback is logged per request; the server logs how many
were cut and exits with ``EXIT_DRAIN_CUT`` so that an orchestrator sees the drain was not
clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from engine.errors import PROBLEM_BASE
from engine.httpguard import CLIENT_KEY, abort

EXIT_DRAIN_CUT = 3  # the process exit code when requests were cut at the drain timeout

Scope = dict[str, Any]
ASGIApp = Any


def _problem(retry_after: int) -> tuple[dict[str, Any], dict[str, Any]]:
    body = json.dumps({
        "type": PROBLEM_BASE + "drain-timeout", "title": "Service unavailable", "status": 503,
        "detail": "the engine is shutting down and this request did not finish in time; retry it",
    }).encode()
    start = {"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()), (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": body}


class _InFlight:
    """Whether a request's answer has started, for a server other than the engine's own."""

    __slots__ = ("response_started",)

    def __init__(self) -> None:
        self.response_started = False


class _TrackedSend:
    """``send`` noting when the answer starts."""

    __slots__ = ("inner", "state")

    def __init__(self, inner: Any, state: _InFlight) -> None:
        self.inner = inner
        self.state = state

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.state.response_started = True
        await self.inner(message)


class DrainGuard:
    """An ASGI wrapper that can cut the requests in flight (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # each request's task -> what knows whether its answer started (uvicorn's cycle, or an _InFlight)
        self.in_flight: dict[asyncio.Task[Any], Any] = {}
        self.cutting = False
        self.cut_answered = 0  # cut before their answer started: got the 503
        self.cut_streaming = 0  # cut mid-answer: connection closed

    @property
    def cut_total(self) -> int:
        return self.cut_answered + self.cut_streaming

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        task = asyncio.current_task() if scope["type"] == "http" else None
        if task is None:
            await self.app(scope, receive, send)
            return
        # the engine's server (engine/httpguard.py) knows whether the answer started: no send wrapper
        state: Any = scope.get("extensions", {}).get(CLIENT_KEY)
        inner_send = send
        if state is None:
            state = _InFlight()
            inner_send = _TrackedSend(send, state)
        self.in_flight[task] = state
        try:
            await self.app(scope, receive, inner_send)
        except asyncio.CancelledError:
            if not self.cutting:
                raise
            await self._answer_cut(scope, state, send)
        finally:
            del self.in_flight[task]

    async def _answer_cut(self, scope: Scope, state: Any, send: Any) -> None:
        if not state.response_started:
            self.cut_answered += 1
            start, body = _problem(retry_after=1)
            with contextlib.suppress(Exception):  # the client may be gone too
                await send(start)
                await send(body)
            return
        self.cut_streaming += 1
        abort(scope)  # the client sees a truncated answer; uvicorn logs nothing for it

    def cut(self) -> int:
        """Cancel every request in flight; returns how many there were."""
        self.cutting = True
        tasks = list(self.in_flight)
        for task in tasks:
            task.cancel()
        return len(tasks)
