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
import sys
import threading
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette

from engine.errors import PROBLEM_BASE
from engine.httpguard import CLIENT_KEY, abort
from engine.inflight import InFlight

EXIT_DRAIN_CUT = 3  # the process exit code when requests were cut at the drain timeout

Scope = dict[str, Any]
ASGIApp = Any
_NONE: dict[str, Any] = {}


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


def _task_finder() -> Callable[[], asyncio.Task[Any] | None]:
    """``asyncio.current_task`` without its Python frame and without a system call (Python
    3.11 has it in Python; the table it reads is the C one); as it is where it is C already.

    3.11's ``get_running_loop`` asks the kernel for the process id on every call (``getpid``,
    to notice a fork), so the loop is looked up once per thread and kept: a task found under
    it is the running one (one loop runs per thread); when none is, the loop is asked again."""
    table = getattr(asyncio.tasks, "_current_tasks", None)
    if sys.version_info >= (3, 12) or not isinstance(table, dict):
        return asyncio.current_task
    running_loop = asyncio.get_running_loop
    find = table.get
    thread = threading.get_ident
    loops: dict[int, asyncio.AbstractEventLoop] = {}

    def current() -> asyncio.Task[Any] | None:
        loop = loops.get(thread())
        task = find(loop) if loop is not None else None
        if task is None:
            if len(loops) > 64:  # threads come and go (test clients): keep no old loop alive
                loops.clear()
            loop = loops[thread()] = running_loop()
            task = find(loop)
        return task

    return current


class DrainGuard:
    """An ASGI wrapper that can cut the requests in flight (see the module docstring).

    Around the runtime's ``InFlight`` (which wraps the facade, a Starlette app) it does the work
    of all three in one frame per request: it counts the request under its generation as
    ``InFlight`` does and calls the facade's middleware stack as ``Starlette.__call__`` does, so
    a request passes one wrapper instead of three; around any other app it only wraps it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._counter: InFlight | None = None
        self._facade: Starlette | None = None
        if isinstance(app, InFlight) and isinstance(app.app, Starlette):
            self._counter, self._facade = app, app.app
        self._current_task = _task_finder()
        # the facade's routes that may answer without an await, by raw path (engine/front.py
        # Facade.quick_paths), for the engine's protocol (engine/httpguard.py), which asks the
        # facade itself (Facade.quick, answer_now) while not cutting; None around another app
        self.quick_paths: dict[bytes, Any] | None = getattr(self._facade, "quick_paths", None)
        self.facade = self._facade
        # each request's task -> what knows whether its answer started (uvicorn's cycle, or an _InFlight)
        self.in_flight: dict[asyncio.Task[Any], Any] = {}
        self.cutting = False
        self.cut_answered = 0  # cut before their answer started: got the 503
        self.cut_streaming = 0  # cut mid-answer: connection closed

    @property
    def cut_total(self) -> int:
        return self.cut_answered + self.cut_streaming

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        task = self._current_task() if scope["type"] == "http" else None
        if task is None:
            await self.app(scope, receive, send)
            return
        # the engine's server (engine/httpguard.py) knows whether the answer started: no send wrapper
        state: Any = scope.get("extensions", _NONE).get(CLIENT_KEY)
        inner_send = send
        if state is None:
            state = _InFlight()
            inner_send = _TrackedSend(send, state)
        self.in_flight[task] = state
        counter, facade = self._counter, self._facade
        try:
            if counter is None or facade is None:
                await self.app(scope, receive, inner_send)
            else:
                # InFlight.__call__ and Starlette.__call__, inline
                generation = counter.enter()
                try:
                    scope["app"] = facade
                    stack = facade.middleware_stack
                    if stack is None:
                        stack = facade.middleware_stack = facade.build_middleware_stack()
                    await stack(scope, receive, inner_send)
                finally:
                    counter.leave(generation)
        except asyncio.CancelledError:
            if not self.cutting:
                raise
            await self._answer_cut(scope, state, send)
        finally:
            del self.in_flight[task]
            if inner_send is send:
                # uvicorn's cycle holds the scope and the scope held the cycle: a reference cycle
                # per request, ~11 objects only the collector frees (a young collection every
                # ~900 requests, 2-4 % of the CPU).  Nothing reads it once the app has returned.
                del scope["extensions"][CLIENT_KEY]

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
