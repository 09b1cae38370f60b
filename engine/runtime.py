"""The running engine: the current compiled flows, reload, readiness and draining.

One Runtime per worker process.  Reload compiles the folder anew and, only if that succeeds,
swaps the facade's routing table in one assignment; the old endpoints are closed once the
requests that started on them have had time to finish.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import metrics
from engine.app import project_middleware
from engine.compiler import CompiledProject
from engine.front import DEFAULT_MAX_BODY, Facade
from engine.loader import LoadErrors, load_project
from engine.sources.manager import SourceManager
from engine.store import use_store

if TYPE_CHECKING:
    from engine.store.store import Store

log = logging.getLogger("interlace.runtime")


@dataclass
class ReloadResult:
    ok: bool
    errors: list[str] = field(default_factory=list)
    flows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": self.errors, "flows": self.flows}


class Runtime:
    def __init__(self, flows_dir: Path, *, max_body: int = DEFAULT_MAX_BODY, old_endpoint_grace: float = 30.0) -> None:
        self.flows_dir = Path(flows_dir)
        self.max_body = max_body
        self.facade: Facade | None = None
        self.draining = False
        self.last_reload: ReloadResult | None = None
        self.old_endpoint_grace = old_endpoint_grace
        self._reload_lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self.sources = SourceManager()
        self.store: Store | None = None

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

    async def reload(self) -> ReloadResult:
        async with self._reload_lock:
            try:
                compiled = await asyncio.get_running_loop().run_in_executor(None, self.load)
            except LoadErrors as exc:
                metrics.reloaded(False, len(self.project.flows))
                result = ReloadResult(False, [str(e) for e in exc.errors], len(self.project.flows))
                log.error("reload refused, still serving the previous flows:\n%s", exc)
                self.last_reload = result
                return result
            await self._open_store(compiled)
            await compiled.open()
            assert self.facade is not None
            old = self.facade.swap(compiled)
            metrics.reloaded(True, len(compiled.flows))
            await self.sources.start(compiled)
            task = asyncio.create_task(self._close_later(old))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            result = ReloadResult(True, [], len(compiled.flows))
            log.info("reloaded: %d flows", len(compiled.flows))
            self.last_reload = result
            return result

    async def _close_later(self, old: CompiledProject) -> None:
        await asyncio.sleep(self.old_endpoint_grace)
        await old.close()

    async def stop(self) -> None:
        await self.sources.stop()
        for task in list(self._closing):
            task.cancel()
        if self.facade is not None:
            await self.facade.table.project.close()
        if self.store is not None:
            await self.store.close()
            use_store(None)
            self.store = None
