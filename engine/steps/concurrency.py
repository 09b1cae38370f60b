"""The concurrency step (WSO2's throttle ``MaximumConcurrentAccess``, Camel's throttle in
``ConcurrentRequests`` mode, a bulkhead): at most ``limit`` executions of the nested steps at
once for each key, so a slow backend or one busy tenant cannot take every worker.

A message past the limit waits up to ``wait`` for a slot (first come, first served; default
0: no waiting), then gets 429 (or ``status: 503``) problem+json with ``Retry-After``.  The
slots live in this process by default; with ``store`` (a redis endpoint) every replica counts
against one limit: each held slot is a member of a Redis sorted set scored by when its lease
ends, renewed while the steps run, so a replica that dies frees its slots after ``lease``.  A
slot given back is announced on a Redis channel, so a message waiting on another replica tries
again at once (and, should the announcement be missed, on its own timer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from engine.compiler import CompileContext, StepConfigError
from engine.kvstore import MemoryStore
from engine.message import Message
from engine.registry import STEPS_REF, StepFn, step_kind
from engine.steps._fork import duration_field, seconds
from engine.steps._limits import (
    KEY_FIELD,
    MESSAGE_FIELD,
    ON_STORE_ERROR_FIELD,
    StoreTrouble,
    limit_key,
    refusal,
    whole_seconds,
)
from engine.steps._stores import STORE_FIELD, store_for
from engine.units import parse_duration

log = logging.getLogger("interlace.concurrency")

# a waiter on a shared store tries again when a slot is announced as freed, else after 50 ms, backing off
# to 1 s (a slot freed by a lease running out, or an announcement missed)
_POLL_FIRST, _POLL_MOST = 0.05, 1.0


class LocalSlots:
    """``limit`` slots per key in this process, handed to waiters in arrival order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}
        self._waiting: dict[str, deque[asyncio.Future[bool]]] = {}

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    async def acquire(self, key: str, wait: float) -> bool:
        held = self._held.get(key, 0)
        if held < self.limit and key not in self._waiting:
            self._held[key] = held + 1
            return True
        if wait <= 0:
            return False
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[bool] = loop.create_future()
        queue = self._waiting.setdefault(key, deque())
        queue.append(granted)
        timer = loop.call_later(wait, self._expire, key, granted)
        try:
            return await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled() and granted.result():
                self.release(key)  # handed a slot as the caller left: pass it on
            raise
        finally:
            timer.cancel()

    def _expire(self, key: str, granted: asyncio.Future[bool]) -> None:
        if not granted.done():
            granted.set_result(False)
        queue = self._waiting.get(key)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(granted)
            if not queue:
                del self._waiting[key]

    def release(self, key: str) -> None:
        queue = self._waiting.get(key)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                if not queue:
                    del self._waiting[key]
                waiter.set_result(True)  # the slot goes straight to the next in line
                return
        self._waiting.pop(key, None)
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)


class SharedSlots:
    """``limit`` slots per key in a redis endpoint's store, shared by every replica."""

    def __init__(self, store: Any, limit: int, lease: float) -> None:
        self.store = store
        self.limit = limit
        self.lease = lease

    async def acquire(self, key: str, member: str, wait: float) -> bool:
        if await self.store.acquire_slot(key, member, self.limit, self.lease):
            return True
        if wait <= 0:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        pause = _POLL_FIRST
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return False
            freed = self.store.watch_slots(key)  # before asking: a slot given back meanwhile is not missed
            try:
                if await self.store.acquire_slot(key, member, self.limit, self.lease):
                    return True
                await asyncio.wait({freed}, timeout=min(pause, max(left, 0)))
            finally:
                self.store.unwatch_slots(key, freed)
            pause = min(pause * 2, _POLL_MOST)

    async def keep(self, key: str, member: str) -> None:
        """Renew the slot's lease until cancelled (the steps are done)."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.store.renew_slot(key, member, self.lease)
            except Exception as exc:
                log.warning("concurrency slot %s could not be renewed: %s", key, type(exc).__name__)


@step_kind(
    "concurrency",
    summary="Run the nested steps for at most limit messages at once per key; past it wait, then 429 with "
            "Retry-After.",
    category="policy",
    schema={
        "type": "object", "additionalProperties": False, "required": ["limit", "steps"],
        "properties": {
            "key": KEY_FIELD,
            "limit": {"type": "integer", "minimum": 1, "description": "Executions of the steps at once."},
            "steps": STEPS_REF,
            "wait": {"type": ["string", "number"],
                     "description": "How long a message waits for a free slot before it is refused (default 0: "
                                    "refused at once). A duration: 250ms, 2s."},
            "status": {"enum": [429, 503],
                       "description": "The answer past the limit: 429 (default; the caller's share is used up) or "
                                      "503 (the service is at capacity)."},
            "retry_after": duration_field("The Retry-After of a refusal, rounded up to whole seconds (default 1s)."),
            "store": STORE_FIELD,
            "lease": duration_field("With store: how long a slot is held without renewal, so a replica that "
                                    "dies frees its slots (default 30s; renewed every third of it)."),
            "on_store_error": ON_STORE_ERROR_FIELD,
            "message": MESSAGE_FIELD,
        },
    },
    examples=[{"key": "${headers.\"x-client-id\" || 'anonymous'}", "limit": 4, "wait": "500ms",
               "steps": [{"call": {"endpoint": "reports", "method": "GET", "path": "/reports/${path.id}"}}]}],
    branches=("steps",),
)
def compile_concurrency(config: Any, ctx: CompileContext) -> StepFn:
    key = limit_key(config, ctx)
    limit = int(config["limit"])
    steps = ctx.steps(config["steps"], "steps")
    try:
        wait = parse_duration(config.get("wait", 0))
    except ValueError as exc:
        raise StepConfigError(str(exc), "wait") from exc
    if wait < 0:
        raise StepConfigError(f"wait cannot be negative, got {config['wait']!r}", "wait")
    status = int(config.get("status", 429))
    retry_after = whole_seconds(seconds(config.get("retry_after", "1s"), "retry_after"))
    trouble = StoreTrouble(config, log, "concurrency", "concurrency")
    detail = config.get("message") or f"more than {limit} requests at once; try again later"
    namespace = f"concurrency:{ctx.step_id}:"

    store = store_for(config, ctx, records_only=False)
    if isinstance(store, MemoryStore):  # no store named (or a broken one, reported already)
        slots = LocalSlots(limit)

        async def run_local(msg: Message) -> None:
            who = key(msg)
            if not await slots.acquire(who, wait):
                raise refusal(detail, retry_after, limit, status=status, code="concurrency-limited")
            try:
                await steps.run(msg)
            finally:
                slots.release(who)

        return run_local

    if not hasattr(store, "acquire_slot"):
        raise StepConfigError("this store cannot hold concurrency slots; name a redis endpoint", "store")
    shared = SharedSlots(store, limit, seconds(config.get("lease", "30s"), "lease"))

    async def run_shared(msg: Message) -> None:
        who = namespace + key(msg)
        member = store.slot_member()  # type: ignore[attr-defined]
        try:
            acquired = await shared.acquire(who, member, wait)
        except Exception as exc:
            trouble.met(exc)
            await steps.run(msg)
            return
        if not acquired:
            raise refusal(detail, retry_after, limit, status=status, code="concurrency-limited")
        keeper = asyncio.ensure_future(shared.keep(who, member))
        try:
            await steps.run(msg)
        finally:
            keeper.cancel()
            try:
                await store.release_slot(who, member)  # type: ignore[attr-defined]
            except Exception as exc:
                log.warning("concurrency slot %s could not be released (%s); it frees itself after its lease",
                            who, type(exc).__name__)

    return run_shared
