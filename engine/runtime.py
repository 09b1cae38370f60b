"""The running engine: the current compiled flows, reload, readiness and draining.

One Runtime per worker process.  Reload compiles the folder anew and, only if that succeeds,
swaps the facade's routing table in one assignment; the old endpoints' pools are closed as
soon as the last request that may use them has ended (engine.inflight), at the latest after
``old_endpoint_grace`` seconds.

A reload that loads but would take away every flow of a file that is still there (an emptied
or half-saved file) is refused unless forced (``POST /reload?force=true``, docs/security.md):
the previous flows keep serving.  Nothing a flow folder holds makes reload raise: every
failure is a ``ReloadResult`` with the reasons.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import metrics
from engine.app import project_middleware
from engine.compiler import CompiledProject
from engine.front import DEFAULT_MAX_BODY, Facade
from engine.inflight import InFlight
from engine.loader import LoadErrors, load_project
from engine.sources.manager import SourceManager
from engine.store import use_store

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.store.store import Store

log = logging.getLogger("interlace.runtime")


@dataclass
class ReloadResult:
    ok: bool
    errors: list[str] = field(default_factory=list)
    flows: int = 0
    # why it failed: "invalid" (the folder has errors), "refused" (valid, but would remove a file's
    # flows; force overrides), "internal" (an engine bug, in the log)
    reason: str | None = None
    # when it happened (UTC, RFC 3339): two reloads with the same outcome still tell apart
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": self.ok, "errors": self.errors, "flows": self.flows, "at": self.at}
        if self.reason is not None:
            body["reason"] = self.reason
        return body


class Runtime:
    def __init__(self, flows_dir: Path, *, max_body: int = DEFAULT_MAX_BODY, old_endpoint_grace: float = 60.0) -> None:
        self.flows_dir = Path(flows_dir)
        self.max_body = max_body
        self.facade: Facade | None = None
        self.app: InFlight | None = None  # the facade, counting requests in flight: what the server serves
        self.draining = False
        self.last_reload: ReloadResult | None = None
        self.old_endpoint_grace = old_endpoint_grace
        self._reload_lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self.sources = SourceManager()
        self.store: Store | None = None
        # run at the start of every reload, whatever the flows' outcome (the facade's TLS files),
        # and after a reload that swapped in new flows (their settings.tls)
        self.reload_hooks: list[Callable[[], object]] = []
        self.reloaded_hooks: list[Callable[[CompiledProject], object]] = []

    @property
    def ready(self) -> bool:
        return self.facade is not None and not self.draining

    @property
    def project(self) -> CompiledProject:
        assert self.facade is not None, "flows not loaded yet"
        return self.facade.table.project

    def load(self) -> CompiledProject:
        """Load and compile the folder; raises LoadErrors and serves nothing if invalid."""
        project = load_project(self.flows_dir, serving=True)
        assert project.compiled is not None
        return project.compiled

    async def start(self, compiled: CompiledProject | None = None) -> None:
        compiled = compiled or self.load()
        await self._open_store(compiled)
        await compiled.open()
        self.facade = Facade(compiled, max_body=self.max_body, settings_middleware=project_middleware)
        self.app = InFlight(self.facade)
        self.sources.hold = self.app.hold  # source flows keep their endpoints open as requests do
        metrics.FLOWS_LOADED.set(len(compiled.flows))
        await self.sources.start(compiled)
        log.info("serving %d flows from %s", len(compiled.flows), self.flows_dir)

    async def _open_store(self, compiled: CompiledProject) -> None:
        """Open the message store once a flow needs it (a store step, a processor, a file poll...)."""
        if self.store is not None or not SourceManager.needs_store(compiled):
            return
        from engine.store.store import Store, safe_url, store_url_for

        store = Store(store_url_for(self.flows_dir))
        await store.open()
        self.store = store
        use_store(store)
        log.info("message store: %s", safe_url(store.url))

    async def reload(self, *, force: bool = False) -> ReloadResult:
        for hook in self.reload_hooks:
            hook()
        async with self._reload_lock:
            try:
                compiled = await asyncio.get_running_loop().run_in_executor(None, self.load)
            except LoadErrors as exc:
                return self._failed(ReloadResult(False, [str(e) for e in exc.errors], len(self.project.flows),
                                                 "invalid"), str(exc))
            except Exception:
                log.exception("reload failed inside the engine, still serving the previous flows")
                return self._failed(ReloadResult(False, ["the reload failed inside the engine; the log has the "
                                                         "details"], len(self.project.flows), "internal"), None)
            losses = [] if force else self.losses(compiled)
            if losses:
                return self._failed(ReloadResult(False, losses, len(self.project.flows), "refused"),
                                    "\n".join(losses))
            await self._open_store(compiled)
            await compiled.open()
            assert self.facade is not None
            old = self.facade.swap(compiled)
            assert self.app is not None
            free = self.app.retire()  # before the new sources start: they hold the new generation
            metrics.reloaded(True, len(compiled.flows))
            await self.sources.start(compiled)
            task = asyncio.create_task(self._close_later(old, free))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            for swapped in self.reloaded_hooks:
                swapped(compiled)
            result = ReloadResult(True, [], len(compiled.flows))
            log.info("reloaded: %d flows", len(compiled.flows))
            self.last_reload = result
            return result

    def _failed(self, result: ReloadResult, why: str | None) -> ReloadResult:
        metrics.reloaded(False, result.flows)
        if why is not None:
            log.error("reload %s, still serving the previous %d flows:\n%s",
                      "refused" if result.reason == "refused" else "failed", result.flows, why)
        self.last_reload = result
        return result

    def losses(self, compiled: CompiledProject) -> list[str]:
        """Why swapping to ``compiled`` would lose flows nobody asked to remove: every file that
        still exists but would serve none of the flows it served (removing a file is the way)."""
        if self.facade is None:
            return []
        before = Counter(flow.flow.file for flow in self.project.flows)
        after = Counter(flow.flow.file for flow in compiled.flows)
        return [f"{file}:1:1: the reload would remove all {count} flow{'s' if count != 1 else ''} of this file, "
                f"which still exists; delete the file to remove them, or reload with force=true"
                for file, count in sorted(before.items()) if not after[file] and file.exists()]

    async def _close_later(self, old: CompiledProject, free: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(free, self.old_endpoint_grace)
        except TimeoutError:
            log.warning("closing the replaced flows' endpoints with requests still in flight after %.0f s",
                        self.old_endpoint_grace)
        finally:  # stop() cancels the wait: the pools close all the same
            await old.close()

    async def stop(self) -> None:
        await self.sources.stop()
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        if self.facade is not None:
            await self.facade.table.project.close()
        if self.store is not None:
            await self.store.close()
            use_store(None)
            self.store = None
