"""Starting, stopping, pausing and listing the sources of the flows being served.

The runtime owns one ``SourceManager``.  On start (and after each reload) it starts one task
per flow whose source is not http.  On reload the old sources retire once the new flows are in
place: they take no new work, and what they had begun (a flow running, a file being moved)
finishes on the flows it began with, as a request in flight does; then they are cancelled
(after ``RETIRE_GRACE`` at the latest: a cancelled source has acknowledged nothing it did not
finish, so what it held comes again).  Each source task holds the runtime's in-flight
generation (engine/inflight.py) until it has ended, so the replaced flows' pools close after
their last source flow too, and none reopens one.  A source task that crashes is restarted
after a pause, so one bad source never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.sources.base import SourceContext

if TYPE_CHECKING:
    from engine.compiler import CompiledProject

log = logging.getLogger("interlace.sources")

RESTART_PAUSE = 1.0
DEPTH_EVERY = 5.0
RETIRE_GRACE = 30.0  # how long a replaced source may take to finish what it began


class SourceManager:
    def __init__(self) -> None:
        self.contexts: dict[str, SourceContext] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._paused: set[str] = set()  # kept across reloads: an operator paused it
        self.on_observe: Callable[[str, str, float], None] | None = None
        self._depth: asyncio.Task[None] | None = None
        # counts a source task as in flight until it ends (the runtime's InFlight.hold)
        self.hold: Callable[[], Callable[[], None]] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    @staticmethod
    def needs_store(project: CompiledProject) -> bool:
        from engine.sources.base import needs_store

        return any(flow.trigger is not None and (flow.trigger.needs_store or needs_store(flow.policy))
                   for flow in project.flows) or "store" in getattr(project, "needs", set())

    async def start(self, project: CompiledProject) -> None:
        old_contexts, old = self.contexts, self._tasks
        self.contexts, self._tasks = {}, {}
        for name, task in old.items():
            old_contexts[name].retire()
            winding = asyncio.create_task(self._wind_down(old_contexts[name], task), name=f"retiring:{name}")
            self._retiring.add(winding)
            winding.add_done_callback(self._retiring.discard)
        for flow in project.flows:
            if flow.trigger is None:
                continue
            ctx = SourceContext(flow, flow.trigger, flow.policy)
            ctx.on_observe = self.on_observe
            if flow.name in self._paused:
                ctx.pause()
            self.contexts[flow.name] = ctx
            task = asyncio.create_task(self._keep_running(ctx), name=f"source:{flow.name}")
            if self.hold is not None:
                task.add_done_callback(_calling(self.hold()))
            self._tasks[flow.name] = task
        if self.contexts:
            log.info("started %d sources: %s", len(self.contexts), ", ".join(self.contexts))
        if self._depth is None and self.needs_store(project):
            self._depth = asyncio.create_task(self._report_depth(), name="store-depth")

    async def _report_depth(self) -> None:
        """Every few seconds, the depth of each queue and dead-letter store as a gauge."""
        from engine import metrics
        from engine.store import StoreError, current_store, has_store

        while True:
            if has_store():
                try:
                    for name, counts in (await current_store().queue_counts()).items():
                        # a queue's messages, or a dead-letter store's letters
                        metrics.store_depth(name, counts["stored"] + counts.get("dead", 0))
                except StoreError as exc:
                    log.warning("store depth: %s", exc)
            await asyncio.sleep(DEPTH_EVERY)

    @staticmethod
    async def _wind_down(ctx: SourceContext, task: asyncio.Task[None]) -> None:
        """A replaced source: let what it began finish, then stop it."""
        try:
            await asyncio.wait_for(ctx.idle(), RETIRE_GRACE)
        except TimeoutError:
            log.warning("source of the replaced flow %s still busy after %.0f s; stopping it", ctx.name, RETIRE_GRACE)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _keep_running(self, ctx: SourceContext) -> None:
        while True:
            try:
                await ctx.source.run(ctx)
                return
            except asyncio.CancelledError:
                ctx.stats.state = "stopped"
                raise
            except Exception as exc:
                ctx.failing(f"{exc.__class__.__name__}: {exc}")
                log.exception("source of flow %s failed; restarting it in %.0fs", ctx.name, RESTART_PAUSE)
                await asyncio.sleep(RESTART_PAUSE)

    async def stop(self) -> None:
        if self._depth is not None:
            self._depth.cancel()
            self._depth = None
        tasks = [*self._tasks.values(), *self._retiring]
        self._tasks = {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for ctx in self.contexts.values():
            ctx.stats.state = "stopped"

    def pause(self, name: str) -> bool:
        ctx = self.contexts.get(name)
        if ctx is None:
            return False
        self._paused.add(name)
        ctx.pause()
        return True

    def resume(self, name: str) -> bool:
        ctx = self.contexts.get(name)
        if ctx is None:
            return False
        self._paused.discard(name)
        ctx.resume()
        return True

    def describe(self) -> list[dict[str, Any]]:
        now = time.time()
        out = []
        for name, ctx in self.contexts.items():
            stats = ctx.stats.as_dict()
            out.append({"flow": name, "kind": ctx.source.kind, "settings": ctx.source.describe(),
                        "since_last_run_seconds": round(now - stats["last_run"], 3) if stats["last_run"] else None,
                        **stats})
        return out


def _calling(release: Callable[[], None]) -> Callable[[asyncio.Task[None]], None]:
    """A done-callback that calls ``release``."""
    def done(_task: asyncio.Task[None]) -> None:
        release()
    return done

