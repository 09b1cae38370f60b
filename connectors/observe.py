"""What every connector reports per attempt at a backend: a CLIENT span and the call metrics.

Connector-agnostic: the resilience layer (retries, breaker, failover) wraps each attempt::

    attempt = observe.Attempt(endpoint.name, target.display, "GET", target.base + path)
    headers = attempt.propagate(headers)      # traceparent/tracestate of the attempt's span
    try:
        reply = await send(...)
    except BackendTimeout as exc:
        attempt.failed("timeout", exc); raise
    attempt.answered(reply.status)

``interlace_backend_request_duration_seconds{endpoint, url, outcome}`` counts and times each
attempt; ``url`` is the endpoint's base URL as configured (bounded), never the request's path.
With tracing on the attempt runs in a CLIENT span under the step's span (a call step has none of
its own: then under the request's, carrying the step's flow, id and kind), and its context goes
to the backend, so the backend's own spans join the same trace.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from engine import metrics, tracing

# (endpoint, base URL, operation) -> the attributes every attempt of it shares, parsed once
# (bounded by the endpoints of the flows; the export process encodes each once per batch)
_SHARED: dict[tuple[str, str, str], dict[str, Any]] = {}


def _shared(endpoint: str, url: str, operation: str) -> dict[str, Any]:
    key = (endpoint, url, operation)
    found = _SHARED.get(key)
    if found is None:
        parts = urlsplit(url)
        found = {"interlace.endpoint": endpoint, "interlace.url": url, "server.address": parts.hostname or ""}
        try:
            if parts.port:
                found["server.port"] = parts.port
        except ValueError:
            pass  # not a URL with a port (a connector's own target name)
        if operation.isupper():  # an HTTP method
            found["http.request.method"] = operation
        if len(_SHARED) > 10_000:  # endpoints reloaded many times over: start again
            _SHARED.clear()
        _SHARED[key] = found
    return found


# (id of a step's shared attributes, endpoint, base URL, operation) -> (those attributes, the
# attempt's shared attributes with the step's under them): a call step has no span of its own
# (engine/instrument.py ONE_CALL_KINDS), its attempts' spans say which step they are
_WITH_STEP: dict[tuple[int, str, str, str], tuple[Any, dict[str, Any]]] = {}


def _shared_with_step(step: Any, endpoint: str, url: str, operation: str) -> dict[str, Any]:
    key = (id(step), endpoint, url, operation)
    found = _WITH_STEP.get(key)
    if found is None or found[0] is not step:  # the id of a step dropped by a reload, reused
        if len(_WITH_STEP) > 10_000:
            _WITH_STEP.clear()
        found = _WITH_STEP[key] = (step, {**step, **_shared(endpoint, url, operation)})
    return found[1]


class Attempt:
    """One attempt at a backend, being timed (and traced when tracing is on)."""

    __slots__ = ("endpoint", "span", "started", "url")

    def __init__(self, endpoint: str, url: str, operation: str, target: str | None = None,
                 kind: int = tracing.CLIENT) -> None:
        self.endpoint = endpoint
        self.url = url
        self.span: tracing.Span | None = None
        if tracing.ENABLED:
            full = (target or url).partition("?")[0].partition("#")[0]
            step = tracing.step.get()
            shared = _shared(endpoint, url, operation) if step is None else \
                _shared_with_step(step, endpoint, url, operation)
            self.span = tracing.start_span(operation, kind, shared, {"url.full": full})
        self.started = time.perf_counter()

    def propagate(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``headers`` carrying this attempt's trace context (unchanged when tracing is off)."""
        return headers if self.span is None else tracing.propagate(self.span, headers)

    def answered(self, status: int) -> None:
        span = self.span
        if span is not None:
            span.attributes["http.response.status_code"] = status
            if status >= 500:
                span.fail(str(status))
        self._done(metrics.outcome_of_status(status))

    def succeeded(self) -> None:
        """An answer without an HTTP status (a database's rows, a file written): outcome ok."""
        self._done("ok")

    def failed(self, outcome: str, error: BaseException) -> None:
        """The attempt got no answer: ``outcome`` timeout, unreachable or error."""
        if self.span is not None:
            self.span.fail(getattr(error, "code", type(error).__name__), outcome)
        self._done(outcome)

    def abandoned(self) -> None:
        """Cancelled, or the caller's own body failed: no verdict on the backend, not counted."""
        if self.span is not None:
            self.span.attributes["error.type"] = "cancelled"
            self.span.end()

    def _done(self, outcome: str) -> None:
        elapsed = time.perf_counter() - self.started
        trace_id = None
        if self.span is not None:
            trace_id = self.span.trace_id_hex
            self.span.end()
        metrics.backend_call(self.endpoint, self.url, outcome, elapsed, trace_id)
