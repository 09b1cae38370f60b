"""The ``store`` source: a message processor that forwards what ``store`` steps accepted.

It leases due messages of its queue (engine/store/store.py: two processors, in one process or in
two replicas sharing PostgreSQL, never hold the same message at once), runs the flow on each
with ``${vars.message_id}`` (the idempotency key to pass on) and ``${vars.attempt}`` set, and then:

- the flow succeeded: the message is deleted;
- it failed and the policy retries it: its next attempt is scheduled in the store, after the
  backoff (the attempts survive a restart);
- its attempts are used up, or the failure is not retried: it moves to the dead-letter store.

A poison message therefore costs one slot for one attempt at a time and never stops the others.
Without ``on_error.redelivery`` a processor tries 10 times, 1 s doubling to 60 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from engine.message import Message
from engine.sources.base import Redelivery, Source, SourceContext, source_kind
from engine.sources.policy import DURATION
from engine.store import StoreError, current_store
from engine.units import parse_duration

if TYPE_CHECKING:
    from engine.compiler import CompileContext
    from engine.store.store import StoredMessage

log = logging.getLogger("interlace.sources.store")

DEFAULT_POLICY = Redelivery(max_attempts=10, initial=1.0, multiplier=2.0, maximum=60.0, jitter=0.2)


class StoreSource(Source):
    kind = "store"
    needs_store = True

    def __init__(self, queue: str, concurrency: int, ordered: bool, lease: float, poll: float) -> None:
        self.queue = queue
        self.concurrency = concurrency
        self.ordered = ordered
        self.lease = lease
        self.poll = poll

    def describe(self) -> dict[str, Any]:
        return {"queue": self.queue, "concurrency": self.concurrency, "ordered": self.ordered,
                "lease_seconds": self.lease}

    async def run(self, ctx: SourceContext) -> None:
        store = current_store()
        policy = ctx.policy if ctx.policy != Redelivery() else DEFAULT_POLICY
        target = policy.dead_letter or {}
        dead_store = str(target.get("store") or f"{self.queue}.dead")
        wake = store.waker(self.queue)
        in_flight: set[asyncio.Task[None]] = set()
        ctx.running()
        try:
            while True:
                await ctx.admit()
                free = self.concurrency - len(in_flight)
                if free <= 0:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    claimed = await store.claim(self.queue, free, self.lease, ordered=self.ordered)
                except StoreError as exc:
                    ctx.failing(str(exc))
                    log.warning("processor %s: %s; trying again in %.1fs", ctx.name, exc, self.poll)
                    await asyncio.sleep(self.poll)
                    continue
                ctx.running()
                if not claimed:
                    ctx.lag(0.0)
                    await self._idle(store, wake, in_flight)
                    continue
                ctx.lag(max(0.0, time.time() - min(m.created for m in claimed)))
                for stored in claimed:
                    task = asyncio.create_task(self._one(ctx, policy, dead_store, target, stored))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
        finally:
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _idle(self, store: Any, wake: asyncio.Event, in_flight: set[asyncio.Task[None]]) -> None:
        """Wait for a new message here, a retry falling due, or a slot finishing."""
        wait = self.poll
        with contextlib.suppress(StoreError):
            due = await store.next_due(self.queue)
            if due is not None:
                wait = min(wait, max(0.005, due - time.time()))
        wake.clear()
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(wake.wait())]
        if in_flight:
            waiters.append(asyncio.ensure_future(asyncio.wait(set(in_flight), return_when=asyncio.FIRST_COMPLETED)))
        _, pending = await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            future.cancel()

    async def _one(self, ctx: SourceContext, policy: Redelivery, dead_store: str, target: dict[str, Any],
                   stored: StoredMessage) -> None:
        with ctx.working():  # a retiring source is cancelled only once this is done, outcome recorded
            store = current_store()
            msg = Message(body=stored.body, content_type=stored.content_type, headers=dict(stored.headers),
                          correlation_id=stored.id)
            msg.vars.update(stored.vars)
            msg.vars["message_id"] = stored.id
            msg.vars["attempt"] = stored.attempts
            error = await ctx.run_once(msg)
            try:
                if error is None:
                    await store.delivered(stored.seq)
                    return
                error["attempts"] = stored.attempts
                if stored.attempts < policy.max_attempts and policy.retries(error):
                    await store.retry_later(stored.seq, policy.delay(stored.attempts), error)
                    return
                if "folder" in target:
                    dead = Message(body=stored.body, content_type=stored.content_type, headers=dict(stored.headers))
                    dead.vars.update(msg.vars)
                    await ctx.dead_letter(dead, error, self.queue)
                    await store.delivered(stored.seq)
                else:
                    await store.bury(stored.seq, dead_store, ctx.name, error)
                    ctx.dead_lettered()
                    log.warning("processor %s: message %s dead-lettered to %s after %d attempts: %s", ctx.name,
                                stored.id, dead_store, stored.attempts, error.get("message"))
            except StoreError as exc:
                # the lease runs out and the message comes back: at-least-once, never lost
                log.warning("processor %s: could not record the outcome of %s: %s", ctx.name, stored.id, exc)


@source_kind(
    "store",
    summary="Process the messages a store step accepted (a message processor): forward each, retry with "
            "backoff, dead-letter what keeps failing.",
    schema={
        "type": "object", "additionalProperties": False, "required": ["queue"],
        "properties": {
            "queue": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$", "description": "The queue the store "
                                                                                        "steps write to."},
            "concurrency": {"type": "integer", "minimum": 1, "maximum": 1000,
                            "description": "Messages in flight at once in this process (default 8)."},
            "ordered": {"type": "boolean", "description": "Keep the order per order_key: a message waits while an "
                                                          "older one with its key is not delivered (default false)."},
            "lease": {**DURATION, "description": "How long a message is held by one processor before another "
                                                 "may take it (it crashed): longer than the flow takes (default 60s)."},
            "poll": {**DURATION, "description": "How often an idle processor looks for messages other processes "
                                                "stored (default 1s; this process's own wake it at once)."},
        },
    },
    examples=[{"queue": "shipments", "concurrency": 4}, {"queue": "orders", "ordered": True}],
)
def build_store_source(config: dict[str, Any], ctx: CompileContext) -> Source:
    return StoreSource(str(config["queue"]), int(config.get("concurrency", 8)), bool(config.get("ordered", False)),
                       parse_duration(config.get("lease", 60)), parse_duration(config.get("poll", 1)))
