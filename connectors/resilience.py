"""Retries, failover, circuit breakers and deadlines: one layer around every connector kind.

An ``Endpoint`` is what ``endpoints: NAME: KIND: {...}`` builds: a connector (one kind's
``attempt``) wrapped in the behaviour every kind shares.  How one ``invoke(request)`` goes:

1. The connector's targets (its URLs, hosts, DSNs) are tried in their order (``strategy:
   failover``) or starting from the next one in turn (``round-robin``); a target whose breaker
   is open is skipped.
2. A failure that never reached the backend (``BackendUnreachable``, or ``BackendTimeout``
   with ``reached=False``) moves on to the next target at once; when every target failed, the
   whole round is retried after a backoff, up to ``retry.attempts`` rounds.  A timeout after
   the request was sent is retried only with ``retry.on_timeout`` (the backend may have acted).
   A reply whose status is in ``retry.on_status`` is retried the same way; when retries run
   out that last reply is returned as it is.  ``BackendRejected`` and ``BackendFault`` are
   answers, not outages: never retried, and they count as a success for the breaker.
3. A request that is not ``replayable()`` (a streamed body already started) is never sent
   again; one inside a transaction runs once, on the transaction's connection.
4. ``deadline`` bounds the whole invoke, retries and pauses included (504 backend-timeout).
5. When no target could be tried (every breaker open): ``CircuitOpen`` (503).

Errors get ``endpoint`` and ``operation`` in their ``extra``, so ``${error.endpoint}`` names
them in a flow's error handler.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from connectors import observe
from connectors.base import Connector, Invocation, Reply, Request, Transaction, TransactionOptions
from engine import metrics, tracing
from engine.errors import BackendError, BackendFault, BackendRejected, BackendTimeout, BackendUnreachable, CircuitOpen
from engine.units import parse_duration

if TYPE_CHECKING:
    from engine.compiler import CompileContext

log = logging.getLogger("interlace.endpoints")

AttemptFn = Callable[[Request, int], Awaitable[Reply]]  # one try of a request on target i (Connector.attempt)

DEFAULT_BACKOFF: Final = "100ms"
DEFAULT_MAX_BACKOFF: Final = "2s"
DEFAULT_BREAKER_FAILURES: Final = 5
DEFAULT_BREAKER_RESET: Final = "30s"
DEFAULT_BREAKER_STATUSES: Final = (502, 503, 504)
CHECK_INTERVAL: Final = 1.0  # readiness checks a required endpoint at most this often
CHECK_BUDGET: Final = 2.0  # and gives it this long to answer


def duration_schema(description: str) -> dict[str, Any]:
    return {"type": ["string", "number"], "description": description + " A duration: seconds as a number, or "
                                                                       "with a unit: 250ms, 2s, 1m."}


def statuses_schema(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}, "uniqueItems": True,
            "description": description}


# The settings every kind shares; settings_schema() merges them into each kind's own.
RESILIENCE_PROPERTIES: Final[dict[str, Any]] = {
    "strategy": {"enum": ["failover", "round-robin"],
                 "description": "With several targets (urls): failover (default) tries them in the order given; "
                                "round-robin starts each call at the next one in turn, spreading the load."},
    "retry": {
        "type": "object", "additionalProperties": False,
        "description": "Retries with exponential backoff and jitter: attempts (in all; default 1, no retry), "
                       "backoff (first pause, doubled each time; default 100ms), max_backoff (default 2s), "
                       "on_status (reply statuses to retry, e.g. [502, 503]; when retries run out the last reply "
                       "is returned), on_timeout (retry timeouts too; default false). Failures that never reached "
                       "the backend (refused, reset, DNS, connect timeout) are always retried; rejections and "
                       "faults never; a request body streamed from the caller is never sent twice.",
        "properties": {
            "attempts": {"type": "integer", "minimum": 1, "maximum": 10,
                         "description": "Attempts in all, the first included (default 1: no retry). Each attempt "
                                        "tries every target once."},
            "backoff": duration_schema("Pause before the first retry, doubled before each next one; each pause is "
                                       "randomised between half and all of it (default 100ms)."),
            "max_backoff": duration_schema("Longest pause between attempts (default 2s); also caps a Retry-After "
                                           "sent by the backend."),
            "on_status": statuses_schema("Reply statuses retried like connection failures, e.g. [502, 503]. When "
                                         "retries run out the last such reply is returned to the flow as it is "
                                         "(default: none)."),
            "on_timeout": {"type": "boolean",
                           "description": "Retry timeouts after the request was sent too (default false: the "
                                          "backend may have acted on the request already)."},
        },
    },
    "breaker": {
        "type": "object", "additionalProperties": False,
        "description": "A circuit breaker per target: after `failures` consecutive failures (default 5: "
                       "unreachable, timeouts, replies with a status in on_status, default [502, 503, 504]) the "
                       "target is not called for `reset` (default 30s); calls fail at once with circuit-open (503) "
                       "when no target is left. Then one probe call is let through: success closes the breaker, "
                       "failure opens it again. Without this key there is no breaker.",
        "properties": {
            "failures": {"type": "integer", "minimum": 1,
                         "description": "Consecutive failures (unreachable, timeouts, replies with a status in "
                                        "on_status) that open it (default 5)."},
            "reset": duration_schema("How long it stays open before the probe (default 30s)."),
            "on_status": statuses_schema("Reply statuses that count as failures (default [502, 503, 504])."),
        },
    },
    "deadline": duration_schema("Longest time one call may take in all, retries and their pauses included "
                                "(default: no limit); past it the call fails with backend-timeout (504)."),
    "required": {"type": "boolean",
                 "description": "Readiness (GET /health/ready on the management port) fails while this endpoint "
                                "cannot be used, so the pod gets no traffic (default false)."},
}


def settings_schema(cls: type[Any]) -> dict[str, Any]:
    """A kind's whole settings schema: its own SCHEMA with the shared resilience settings."""
    own: dict[str, Any] = cls.SCHEMA
    properties = dict(own.get("properties", {}))
    for key, value in RESILIENCE_PROPERTIES.items():
        properties.setdefault(key, value)
    schema = {**own, "properties": properties}
    summary = getattr(cls, "SUMMARY", "")
    if summary and "description" not in schema:
        schema["description"] = summary
    return schema


def setting_duration(config: dict[str, Any], key: str, default: str | None, section: str) -> float | None:
    if key not in config and default is None:
        return None
    try:
        return parse_duration(config.get(key, default))  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"{section}.{key}: {exc}" if section else f"{key}: {exc}") from None


def never_reached(exc: BackendError) -> bool:
    """Whether a failure happened before the backend saw the request (refused, reset, DNS, a
    connect timeout, an open breaker): safe to send it elsewhere.  Failover over an endpoint's
    targets and the load_balance step's failover over endpoints both key off it."""
    return isinstance(exc, BackendUnreachable) or (isinstance(exc, BackendTimeout) and not exc.reached)


def rotation(start: int, count: int) -> list[int]:
    """The order ``start, start+1, ..., count-1, 0, ..., start-1``: round robin, then failover."""
    return [*range(start, count), *range(start)]


class Breaker:
    """A circuit breaker for one target.

    Closed: calls pass; ``threshold`` consecutive failures open it.  Open: calls are refused
    without touching the backend.  After ``reset`` seconds it is half-open: one call (the
    probe) passes while the others are still refused; the probe's success closes the breaker,
    its failure opens it for another ``reset``.  A threshold of 0 turns it off."""

    REJECT, PASS, PROBE = 0, 1, 2
    __slots__ = ("failures", "opened_at", "probing", "reset", "threshold")

    def __init__(self, threshold: int, reset: float) -> None:
        self.threshold = threshold
        self.reset = reset
        self.failures = 0  # consecutive
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        if self.threshold <= 0:
            return "off"
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.reset else "open"

    def admit(self) -> int:
        """REJECT, PASS, or PROBE (the one call let through while half-open)."""
        if self.opened_at is None:
            return self.PASS
        if self.probing or time.monotonic() - self.opened_at < self.reset:
            return self.REJECT
        self.probing = True
        return self.PROBE

    def succeeded(self, ticket: int) -> bool:
        """Record a success; True when this closed the breaker."""
        if ticket == self.PROBE:
            self.probing = False
        self.failures = 0
        was_open = self.opened_at is not None
        self.opened_at = None
        return was_open

    def failed(self, ticket: int) -> bool:
        """Record a failure; True when this opened the breaker (or reopened it after a probe)."""
        self.failures += 1
        if ticket == self.PROBE:
            self.probing = False
        if self.threshold <= 0:
            return False
        if ticket == self.PROBE or (self.opened_at is None and self.failures >= self.threshold):
            self.opened_at = time.monotonic()
            return True
        return False

    def abandon(self, ticket: int) -> None:
        """The call ended without a verdict (cancelled, or its body's source failed)."""
        if ticket == self.PROBE:
            self.probing = False


class RetryPolicy:
    __slots__ = ("attempts", "backoff", "max_backoff", "on_status", "on_timeout")

    def __init__(self, config: dict[str, Any]) -> None:
        self.attempts = int(config.get("attempts", 1))
        self.backoff = setting_duration(config, "backoff", DEFAULT_BACKOFF, "retry") or 0.0
        self.max_backoff = setting_duration(config, "max_backoff", DEFAULT_MAX_BACKOFF, "retry") or 0.0
        self.on_status = frozenset(int(s) for s in config.get("on_status", ()))
        self.on_timeout = bool(config.get("on_timeout", False))

    def delay(self, retry: int, retry_after: str | None) -> float:
        """Pause before retry number ``retry`` (1, 2, ...): exponential backoff with jitter
        (between half and all of ``backoff * 2**(retry-1)``, at most ``max_backoff``), so that
        the retries of many callers spread out; a Retry-After in seconds is honoured up to
        ``max_backoff``."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (retry - 1))
        pause = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None and retry_after.strip().isdigit():
            pause = max(pause, min(float(retry_after), self.max_backoff))
        return pause


class Endpoint:
    """A named endpoint: a connector with retries, failover, breakers and a deadline.

    Example::

        endpoint = Endpoint("orders", HttpConnector("orders", config), config)
        await endpoint.open()
        reply = await endpoint.invoke(HttpRequest("GET", "/orders/7"))
    """

    def __init__(self, name: str, connector: Connector, settings: dict[str, Any], kind: str = "") -> None:
        self.name = name
        self.connector = connector
        self.kind = kind
        breaker = settings.get("breaker")
        threshold = int(breaker.get("failures", DEFAULT_BREAKER_FAILURES)) if breaker is not None else 0
        reset = setting_duration(breaker or {}, "reset", DEFAULT_BREAKER_RESET, "breaker") or 0.0
        self.breaker_statuses = frozenset(int(s) for s in (breaker or {}).get("on_status", DEFAULT_BREAKER_STATUSES))
        self.breakers = tuple(Breaker(threshold, reset) for _ in connector.targets)
        if threshold > 0:
            for target in connector.targets:
                metrics.breaker_known(name, target)
        self.round_robin = settings.get("strategy", "failover") == "round-robin"
        self.retry = RetryPolicy(settings.get("retry") or {})
        self.deadline = setting_duration(settings, "deadline", None, "")
        self.required = bool(settings.get("required", False))
        self._next = 0
        # the target that answered last (failover moves it): health shows which one is in use
        self.active: int | None = None
        self._checked_at = -CHECK_INTERVAL
        self._check_error: str | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        await self.connector.open()

    async def close(self) -> None:
        await self.connector.close()

    async def ready(self) -> str | None:
        """None when usable, else why not (for readiness); checks at most once a second."""
        now = time.monotonic()
        if now - self._checked_at < CHECK_INTERVAL:
            return self._check_error
        self._checked_at = now
        try:
            async with asyncio.timeout(CHECK_BUDGET):
                await self.connector.check()
            self._check_error = None
        except TimeoutError:
            self._check_error = f"endpoint {self.name!r} did not answer its check in {CHECK_BUDGET:.0f} s"
        except BackendError as exc:
            self._check_error = exc.detail
            log.warning("endpoint %r is not ready: %s%s", self.name, exc.detail,
                        f" ({exc.internal})" if exc.internal else "")
        return self._check_error

    def health(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "strategy": "round-robin" if self.round_robin else "failover",
            "required": self.required,
            "active": self.connector.targets[self.active] if self.active is not None else None,
            "targets": [{"target": target, "breaker": breaker.state, "consecutive_failures": breaker.failures}
                        for target, breaker in zip(self.connector.targets, self.breakers, strict=True)],
            **self.connector.health(),
        }

    # --- operations --------------------------------------------------------------------------

    def operation_name(self, given: str | None) -> str | None:
        """The operation a step asks for (or the kind's default); None when it has none."""
        return given if given is not None else type(self.connector).DEFAULT_OPERATION

    def prepare(self, operation: str, config: dict[str, Any], ctx: CompileContext) -> Invocation:
        """At load: the request-time callable of one step's operation."""
        return self.connector.prepare(operation, config, ctx, self.invoke)

    async def begin(self, options: TransactionOptions) -> Transaction:
        """Open a transaction on the first target that takes one (in the strategy's order,
        skipping open breakers): a target that cannot be reached fails over to the next, as a
        call does.  The transaction then stays on its target: its statements are never retried
        nor failed over (a half-done transaction must not continue elsewhere)."""
        error: BackendError | None = None
        for index in self._in_order():
            breaker = self.breakers[index]
            ticket = breaker.admit()
            if ticket == Breaker.REJECT:
                continue
            try:
                transaction = await self.connector.begin(options, index)
            except (BackendUnreachable, BackendTimeout) as exc:
                self._failed(index, ticket)
                error = exc
                if never_reached(exc):
                    continue
                self._named(exc, "transaction")
                raise
            except BackendError as exc:
                breaker.succeeded(ticket)
                self._named(exc, "transaction")
                raise
            except BaseException:
                breaker.abandon(ticket)
                raise
            breaker.succeeded(ticket)
            self.active = index
            return transaction
        if error is None:
            error = CircuitOpen(f"endpoint {self.name!r} is not being called for now: its circuit breaker is open")
        self._named(error, "transaction")
        raise error

    async def invoke(self, request: Request, attempt: AttemptFn | None = None) -> Reply:
        """Send ``request`` with the endpoint's retries, failover and breakers (module docstring).

        ``attempt`` (default: the connector's) makes one try on a target: the engine's own use of
        an endpoint (engine/sqlstore.py's records) passes the connector's real one, so that a flow
        test's mocks, which answer ``connector.attempt``, answer the flows' calls only."""
        try:
            if request.transaction is not None:
                return await (attempt or self.connector.attempt)(request, 0)
            if self.deadline is None:
                return await self._invoke(request, attempt)
            try:
                async with asyncio.timeout(self.deadline):
                    return await self._invoke(request, attempt)
            except TimeoutError:
                raise BackendTimeout(f"endpoint {self.name!r} did not answer within its deadline of "
                                     f"{self.deadline:g} s") from None
        except BackendError as exc:
            self._named(exc, request.operation)
            raise

    def _named(self, exc: BackendError, operation: str) -> None:
        exc.extra.setdefault("endpoint", self.name)
        exc.extra.setdefault("operation", operation)

    def _in_order(self) -> range | list[int]:
        count = len(self.breakers)
        if not self.round_robin or count == 1:
            return range(count)
        start = self._next % count
        self._next = start + 1
        return rotation(start, count)

    async def _invoke(self, request: Request, attempt_of: AttemptFn | None = None) -> Reply:
        held: Reply | None = None  # the last reply with a status to retry
        error: BackendError | None = None  # the last failure
        tried = False
        retry = self.retry
        attempt_of = attempt_of or self.connector.attempt
        targets = self.connector.targets
        for attempt in range(retry.attempts):
            if attempt:
                if not request.replayable():
                    break
                pause = retry.delay(attempt, held.header("retry-after") if held is not None else None)
                reason = f"status {held.status}" if held is not None else error.internal if error else "?"
                log.warning("endpoint %r: attempt %d of %d failed (%s); retrying in %.0f ms", self.name, attempt,
                            retry.attempts, reason, pause * 1000)
                metrics.backend_retry(self.name)
                await asyncio.sleep(pause)
            for index in self._in_order():
                breaker = self.breakers[index]
                ticket = breaker.admit()
                if ticket == Breaker.REJECT:
                    continue
                target = targets[index]
                if ticket == Breaker.PROBE:
                    metrics.breaker_changed(self.name, target, "half_open")
                tried = True
                # what the attempt addresses only matters to its span: not built while tracing is off
                seen = request.observation = observe.Attempt(
                    self.name, target, request.span_name(), request.location(target) if tracing.ENABLED else None,
                    request.span_kind)
                try:
                    reply = await attempt_of(request, index)
                except (BackendUnreachable, BackendTimeout) as exc:
                    seen.failed("timeout" if isinstance(exc, BackendTimeout) else "unreachable", exc)
                    self._failed(index, ticket)
                    if held is not None:
                        await held.aclose()
                        held = None
                    error = exc
                    if request.replayable() and (never_reached(exc) or retry.on_timeout):
                        continue
                    raise
                except (BackendRejected, BackendFault) as exc:
                    seen.failed(exc.category or "error", exc)
                    breaker.succeeded(ticket)  # it answered: it is alive
                    if held is not None:
                        await held.aclose()
                    raise
                except BackendError as exc:
                    seen.failed("error", exc)
                    self._failed(index, ticket)
                    if held is not None:
                        await held.aclose()
                    raise
                except BaseException:
                    seen.abandoned()
                    breaker.abandon(ticket)  # cancelled, or the request's own source failed
                    if held is not None:
                        await held.aclose()
                    raise
                status = reply.status
                if status is None:
                    seen.succeeded()
                else:
                    seen.answered(status)
                self.active = index
                if status in self.breaker_statuses:
                    self._failed(index, ticket)
                elif breaker.succeeded(ticket):
                    log.warning("endpoint %r: circuit closed for %s", self.name, target)
                    metrics.breaker_changed(self.name, target, "closed")
                if status not in retry.on_status or not request.replayable():
                    if held is not None:
                        await held.aclose()
                    return reply
                if held is not None:
                    await held.aclose()
                held, error = reply, None
            if not tried:
                break
        if held is not None:
            return held
        if error is not None:
            raise error
        raise CircuitOpen(f"endpoint {self.name!r} is not being called for now: its circuit breaker is open",
                          internal=", ".join(f"{t}: {b.state}" for t, b in zip(self.connector.targets, self.breakers,
                                                                                strict=True)))

    def _failed(self, index: int, ticket: int) -> None:
        breaker = self.breakers[index]
        if breaker.failed(ticket):
            log.warning("endpoint %r: circuit opened for %s after %d consecutive failures; next probe in %.1f s",
                        self.name, self.connector.targets[index], breaker.failures, breaker.reset)
            metrics.breaker_changed(self.name, self.connector.targets[index], "open")


def build_endpoint(name: str, kind: str, config: dict[str, Any], context: Any = None) -> Endpoint:
    """The endpoint of one ``endpoints:`` entry (its settings validated already).  A kind may
    name its own Endpoint subclass (``ENDPOINT_CLASS``, built as ``(name, config, context)``),
    e.g. to offer Python callers a convenience method."""
    from connectors.base import connector_kinds

    cls = connector_kinds()[kind]
    endpoint_class = getattr(cls, "ENDPOINT_CLASS", None)
    if endpoint_class is not None:
        built: Endpoint = endpoint_class(name, config, context)
        return built
    return Endpoint(name, cls(name, config, context), config, kind)
