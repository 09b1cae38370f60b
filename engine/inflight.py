"""Which requests may still use the flows a reload replaced: an ASGI wrapper counting them.

A reload swaps the routing table in one assignment; a request that began before it may still
be running on the old flows and their endpoints' connection pools, one that begins after it
never is.  So each request is counted under the generation current when it arrived, and the
old flows' pools close as soon as no request of their generation or an older one is left,
not after a fixed wait (21 reloads under a fixed 30 s wait held 1,050 extra sockets).

Flows started by other sources (schedules, file polls, queues) use the same pools: each running
source holds its generation (``hold()``) until its task has ended, which after a reload is once
the work it had begun is finished (engine/sources/manager.py), so no source flow can reopen a
pool that was closed under it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send


class InFlight:
    """Wraps the facade's ASGI app; ``retire()`` after a swap tells when the old flows are free."""

    __slots__ = ("_waiters", "active", "app", "generation")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.generation = 0
        # generation -> requests in flight that arrived under it (enter/leave; engine/drain.py too)
        self.active: dict[int, int] = {}
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        generation = self.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.leave(generation)

    def hold(self) -> Callable[[], None]:
        """Count something other than a request that may use the current flows (a source's task)
        until the function returned is called (once; later calls do nothing)."""
        generation = self.enter()
        held = [True]

        def release() -> None:
            if held:
                held.clear()
                self.leave(generation)

        return release

    def enter(self) -> int:
        """One request (or holder) begins under the current generation, returned for ``leave``."""
        generation = self.generation
        active = self.active
        active[generation] = active.get(generation, 0) + 1
        return generation

    def leave(self, generation: int) -> None:
        """One request (or holder) of ``generation`` has ended."""
        left = self.active[generation] - 1
        if left:
            self.active[generation] = left
        else:
            del self.active[generation]
            if self._waiters:
                self._wake()

    def in_flight(self, up_to: int | None = None) -> int:
        """Requests in flight (that arrived at generation ``up_to`` or before)."""
        return sum(n for g, n in self.active.items() if up_to is None or g <= up_to)

    def retire(self) -> asyncio.Future[None]:
        """Call right after swapping the flows: a future done once every request that may use the
        flows just replaced has ended (at once when none is in flight)."""
        old = self.generation
        self.generation += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((old, done))
        self._wake()
        return done

    def _wake(self) -> None:
        oldest = min(self.active, default=None)
        still = []
        for generation, done in self._waiters:
            if oldest is None or oldest > generation:
                if not done.done():
                    done.set_result(None)
            else:
                still.append((generation, done))
        self._waiters = still
