"""Sources other than HTTP: what they share, and the registry that names them.

A source kind is one module under ``engine/sources/`` that registers a ``SourceKind``: its name
(the key under ``source:`` in a flow), the JSON Schema of its settings, and ``build``, which runs
at load time (compiling what the settings need) and returns a ``Source``.  The registry is the
single source of truth: the flow schema, the loader's checks and the reference docs read it.

A ``Source`` is driven by the runtime: ``run(ctx)`` is started when the flows are served and
cancelled when they are replaced or the server stops.  For each thing that arrives it builds a
``Message`` and hands it to ``ctx.deliver``, which runs the compiled flow under the flow's
redelivery policy (``on_error.redelivery``): tries again with backoff while the error is one the
policy retries, then gives the message to the dead-letter target.  The source acknowledges
(acks the queue message, moves the file) only after ``deliver`` returned: nothing is lost when
the process dies in between, it comes again.

Adding a source kind touches one module; this one imports nothing that imports it back.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import importlib
import logging
import pkgutil
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine import metrics, tracing
from engine.errors import FlowError
from engine.message import Message
from engine.sources.tracing import source_span
from engine.store import backoff_delay, current_store, has_store

if TYPE_CHECKING:
    from engine.compiler import CompileContext, CompiledFlow

log = logging.getLogger("interlace.sources")


class Source(abc.ABC):
    """A running source: ``run`` loops until cancelled.  ``needs_store`` asks the runtime to open
    the store before it starts.  ``brings_data``: the body of each message is what its sender
    sent (a queue's producer, a file's writer), so a wrong shape in it is the data's fault, as a
    caller's body is at the front (``Message.payload_is_request``: 422 ``request-data-invalid`` or
    ``payload-shape`` in the error a dead letter, a failed file's report or a test shows, not 500);
    a schedule's message (no body but the flow's) and the store processor's (a body a flow of this
    project stored, perhaps one its steps built) bring none."""

    kind: str = ""
    needs_store: bool = False
    brings_data: bool = True

    @abc.abstractmethod
    async def run(self, ctx: SourceContext) -> None:
        """Deliver what arrives to ``ctx.deliver`` until cancelled (each kind's loop)."""

    def describe(self) -> dict[str, Any]:
        """Its settings, for the management API: never a secret."""
        return {}


Builder = Callable[[dict[str, Any], "CompileContext"], Source]


@dataclass(frozen=True)
class SourceKind:
    name: str
    summary: str
    schema: dict[str, Any]
    build: Builder
    examples: list[Any] = field(default_factory=list)


_KINDS: dict[str, SourceKind] = {}


def source_kind(name: str, *, summary: str, schema: dict[str, Any],
                examples: list[Any] | None = None) -> Callable[[Builder], Builder]:
    """Register a source builder under ``name``, with the JSON Schema of its settings."""

    def register(build: Builder) -> Builder:
        if name in _KINDS or name == "http":
            raise ValueError(f"source kind {name!r} registered twice")
        _KINDS[name] = SourceKind(name, summary, schema, build, examples or [])
        return build

    return register


_loaded = False


def source_kinds() -> dict[str, SourceKind]:
    """Every registered source kind (http is the facade's, declared in engine/schema.py)."""
    global _loaded
    if not _loaded:
        import engine.sources as package

        for module in pkgutil.iter_modules(package.__path__):
            if module.name not in ("base", "manager", "policy", "routes", "poller", "files_common", "docs",
                                   "connector_source", "remote_poll", "http_redelivery", "tracing"):
                importlib.import_module(f"engine.sources.{module.name}")
        _loaded = True
    return dict(sorted(_KINDS.items()))


# --- the redelivery policy -------------------------------------------------------------------


@dataclass(frozen=True)
class Redelivery:
    """``on_error.redelivery`` of a flow, compiled: how often and when a failed message is tried
    again, which failures count, and where it goes at the end."""

    max_attempts: int = 1
    initial: float = 1.0
    multiplier: float = 2.0
    maximum: float = 60.0
    jitter: float = 0.2
    statuses: frozenset[int] = frozenset()
    codes: frozenset[str] = frozenset()
    dead_letter: dict[str, Any] | None = None

    def retries(self, error: dict[str, Any]) -> bool:
        """Whether this failure is worth another attempt (no lists given: every failure is)."""
        if not self.statuses and not self.codes:
            return True
        status = error.get("backend_status", error.get("status"))
        return (status in self.statuses) or (error.get("code") in self.codes)

    def delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.initial, self.multiplier, self.maximum, self.jitter)


# --- what a running source reports and uses --------------------------------------------------


@dataclass
class SourceStats:
    state: str = "starting"  # starting | running | paused | failing | stopped
    last_run: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    processed: int = 0
    failures: int = 0
    dead_letters: int = 0
    lag_seconds: float = 0.0  # how late the oldest waiting work is (store, schedule)

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "last_run": self.last_run, "last_success": self.last_success,
                "last_error": self.last_error, "processed": self.processed, "failures": self.failures,
                "dead_letters": self.dead_letters, "lag_seconds": round(self.lag_seconds, 3)}


class Outcome:
    DONE = "done"
    DEAD = "dead"  # given to the dead-letter target
    REFUSED = "refused"  # failed, no dead-letter target: the source decides (nack, failed folder)


class SourceContext:
    """One flow's source at run time: runs the flow under its policy, counts, pauses."""

    def __init__(self, flow: CompiledFlow, source: Source, policy: Redelivery) -> None:
        self.flow = flow
        self.source = source
        self.policy = policy
        self.stats = SourceStats()
        self._running = asyncio.Event()
        self._running.set()
        self.on_observe: Callable[[str, str, float], None] | None = None  # metrics hook (flow, outcome, s)
        # replaced by a reload: takes no new work, finishes what it began (SourceManager)
        self.retiring = False
        self.busy = 0  # pieces of work begun and not finished (a delivery, a file with its move)
        self._idle = asyncio.Event()
        self._idle.set()
        self._ok = metrics.SOURCE_MESSAGES.labels(flow.name, "ok")

    @property
    def name(self) -> str:
        return self.flow.name

    # pausing: a source awaits ``admit()`` before it takes the next piece of work
    def pause(self) -> None:
        self._running.clear()
        self.stats.state = "paused"

    def resume(self) -> None:
        self._running.set()
        self.stats.state = "running"

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    async def admit(self) -> None:
        await self._running.wait()
        if self.retiring:  # replaced: no new work; the manager cancels the source once it is idle
            await asyncio.Event().wait()

    def retire(self) -> None:
        """A reload replaced this flow: take nothing new (``admit`` waits for good, a schedule
        stops firing); what is running finishes on the flows it began with."""
        self.retiring = True

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Around one piece of work (a delivery; a file and its move): a retiring source is
        cancelled only when none is running."""
        self.busy += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.busy -= 1
            if not self.busy:
                self._idle.set()

    async def idle(self) -> None:
        """Until no piece of work is running."""
        await self._idle.wait()

    def running(self) -> None:
        if not self.paused:
            self.stats.state = "running"

    def failing(self, why: str) -> None:
        """The source itself is in trouble (broker down, folder missing); it goes on trying."""
        self.stats.state = "failing"
        self.stats.last_error = why

    async def run_once(self, msg: Message) -> dict[str, Any] | None:
        """Run the flow once; None on success, else the error as ``${error.*}`` shows it.

        With tracing on the run is a CONSUMER span (engine/sources/tracing.py), the parent of its
        steps' spans, continuing the ``traceparent`` the message carries."""
        if not tracing.ENABLED:
            return await self._run(msg)
        span = source_span(self, msg)
        token = tracing.current.set(span)
        try:
            error = await self._run(msg)
        except BaseException:  # cancelled (the source stops): the span still ends
            span.fail("cancelled")
            span.end()
            raise
        finally:
            tracing.current.reset(token)
        if error is not None:
            span.fail(str(error.get("code") or "error"), str(error.get("message") or ""))
            span.attributes["interlace.error.status"] = error.get("status")
        span.end()
        return error

    async def _run(self, msg: Message) -> dict[str, Any] | None:
        started = time.time()
        self.stats.last_run = started
        try:
            await self.flow.handle(msg)
        except FlowError as exc:
            error = {**exc.as_dict(), "step": getattr(exc, "step_id", None)}
        except Exception as exc:
            log.exception("flow %s failed", self.name)
            error = {"status": 500, "code": "internal", "message": "internal error; see the logs",
                     "step": getattr(exc, "step_id", None)}
        else:
            self.stats.processed += 1
            self.stats.last_success = time.time()
            self._observe("done", started)
            return None
        self.stats.failures += 1
        self.stats.last_error = str(error.get("message"))
        self._observe("failed", started)
        return error

    def _observe(self, outcome: str, started: float) -> None:
        if outcome == "done":
            self._ok.inc()  # the child looked up once: labels() per message cost more than the count
        else:
            metrics.source_message(self.name, outcome)
        if self.on_observe is not None:
            self.on_observe(self.name, outcome, time.time() - started)

    def lag(self, seconds: float) -> None:
        """How far behind the source is (the age of the oldest waiting work)."""
        self.stats.lag_seconds = seconds
        metrics.source_lag(self.name, seconds)

    def dead_lettered(self) -> None:
        self.stats.dead_letters += 1
        metrics.source_message(self.name, "dead_lettered")

    async def deliver(self, make: Callable[[int], Message], *, attempts_before: int = 0, origin: str = "",
                      record: Callable[[int], Awaitable[None]] | None = None) -> tuple[str, dict[str, Any] | None]:
        """Run the flow on a fresh message per attempt, with the policy's redelivery, then the
        dead-letter target.  Returns (outcome, last error).  ``attempts_before``: the attempts an
        earlier delivery made (a broker's delivery count, or the store's record, after the engine
        stopped mid-flow); when they are used up already the message goes to the dead letter
        without running again, so a message whose flow kills the engine cannot kill it forever.
        ``record(n)`` is awaited before attempt ``n`` runs: a source that counts attempts in the
        store (files, MQTT) writes it down there, so that a crash in that attempt still counts."""
        with self.working():
            attempt = attempts_before
            if attempt and self.policy != Redelivery() and attempt >= self.policy.max_attempts:
                exhausted: dict[str, Any] = {
                    "status": 500, "code": "redelivery-exhausted", "attempts": attempt,
                    "message": f"delivered {attempt} times before without being acknowledged (the engine "
                               f"stopped while its flow ran); max_attempts is {self.policy.max_attempts}"}
                self.stats.failures += 1
                self.stats.last_error = exhausted["message"]
                if await self.dead_letter(make(attempt), exhausted, origin):
                    return Outcome.DEAD, exhausted
                return Outcome.REFUSED, exhausted
            while True:
                attempt += 1
                if record is not None:
                    await record(attempt)
                msg = make(attempt)
                error = await self.run_once(msg)
                if error is None:
                    return Outcome.DONE, None
                if attempt >= self.policy.max_attempts or not self.policy.retries(error):
                    break
                await asyncio.sleep(self.policy.delay(attempt))
            error["attempts"] = attempt
            if await self.dead_letter(make(attempt), error, origin):
                return Outcome.DEAD, error
            return Outcome.REFUSED, error

    async def dead_letter(self, msg: Message, error: dict[str, Any], origin: str) -> bool:
        """Hand a message that ran out of attempts to the policy's target; False when it has none
        or the target is the source's own (a dead-letter queue the source publishes to)."""
        target = self.policy.dead_letter
        if not target or "source" in target:
            return False
        if "store" in target:
            store = current_store()
            await store.add_dead_letter(str(target["store"]), queue=origin or self.name, flow=self.name,
                                        body=msg.body, content_type=msg.content_type, headers=dict(msg.headers),
                                        vars=dict(msg.vars), attempts=int(error.get("attempts", 1)), error=error)
        elif "folder" in target:
            from engine.sources.files_common import write_dead_letter_file

            await write_dead_letter_file(target["folder"], self.flow, msg, error)
        elif "steps" in target and not await run_dead_letter_steps(self.flow, msg, error):
            return False
        self.dead_lettered()
        log.warning("flow %s: message dead-lettered after %s attempts: %s", self.name, error.get("attempts"),
                    error.get("message"))
        return True


async def run_dead_letter_steps(flow: CompiledFlow, msg: Message, error: dict[str, Any]) -> bool:
    """Hand ``msg`` to the flow's ``dead_letter.steps`` with ``${error.*}`` set; False when they failed
    (logged: the caller disposes of the message as it would without a dead letter)."""
    steps = flow.dead_letter_steps
    if steps is None:
        return False
    msg.error = dict(error)
    try:
        await steps.run(msg)
    except Exception as exc:
        log.warning("flow %s: the dead-letter steps failed (%s: %s); the message is disposed of as without "
                    "a dead letter", flow.name, type(exc).__name__, getattr(exc, "detail", exc))
        return False
    return True


def needs_store(policy: Redelivery) -> bool:
    return bool(policy.dead_letter and "store" in policy.dead_letter)


__all__ = ["Outcome", "Redelivery", "Source", "SourceContext", "SourceKind", "SourceStats", "has_store",
           "needs_store", "source_kind", "source_kinds"]
