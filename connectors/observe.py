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

from engine import metrics, otlp_wire, tracing

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


# (id of a step's shared attributes or 0, endpoint, base URL, operation, span kind) -> (those
# attributes, the attempt's shared attributes with the step's under them, their encoding with the
# span's name and kind: engine/otlp_wire.py ``head``): a call step has no span of its own
# (engine/instrument.py ONE_CALL_KINDS), its attempts' spans say which step they are
_HEADS: dict[tuple[int, str, str, str, int], tuple[Any, dict[str, Any], bytes]] = {}


def head(step: Any, endpoint: str, url: str, operation: str, kind: int) -> tuple[dict[str, Any], bytes]:
    """The shared attributes of an attempt's span (under ``step``'s, when not None) and its head."""
    key = (id(step) if step is not None else 0, endpoint, url, operation, kind)
    found = _HEADS.get(key)
    if found is None or found[0] is not step:  # the id of a step dropped by a reload, reused
        if len(_HEADS) > 10_000:
            _HEADS.clear()
        shared = _shared(endpoint, url, operation) if step is None else {**step, **_shared(endpoint, url, operation)}
        found = _HEADS[key] = (step, shared, otlp_wire.head(operation, kind, shared))
    return found[1], found[2]


# url.full -> its attribute, encoded: an endpoint's calls go to few URLs (bounded)
_URLS: dict[str, bytes] = {}


def url_attribute(location: str) -> bytes:
    """``url.full`` of an attempt at ``location``, without its query and fragment (they may
    carry secrets), encoded."""
    found = _URLS.get(location)
    if found is None:
        if len(_URLS) > 4096:
            _URLS.clear()
        found = _URLS[location] = otlp_wire.pair("url.full", location.partition("?")[0].partition("#")[0])
    return found


class Attempt:
    """One attempt at a backend, being timed (and traced when tracing is on)."""

    __slots__ = ("endpoint", "span", "started", "trace_id", "url")

    def __init__(self, endpoint: str, url: str, operation: str, target: str | None = None,
                 kind: int = tracing.CLIENT, trace_id: str | None = None) -> None:
        """``trace_id``: the caller records the attempt's span itself (connectors/_http_call.py):
        none is made here, the durations carry this trace id as exemplar."""
        self.endpoint = endpoint
        self.url = url
        self.span: tracing.Span | None = None
        self.trace_id = trace_id
        if trace_id is None and tracing.ENABLED:
            shared, encoded = head(tracing.step.get(), endpoint, url, operation, kind)
            span = self.span = tracing.start_span(operation, kind, shared, None, encoded)
            if span is not None and span.sampled:
                span.own = url_attribute(target or url)
        self.started = time.perf_counter()

    def propagate(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``headers`` carrying this attempt's trace context (unchanged when tracing is off)."""
        return headers if self.span is None else tracing.propagate(self.span, headers)

    def answered(self, status: int) -> None:
        span = self.span
        if span is not None:
            span.code = status  # http.response.status_code
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
        trace_id = self.trace_id
        span = self.span
        if span is not None:
            if span.sampled:
                trace_id = span.trace_id
            span.end()
        metrics.backend_call(self.endpoint, self.url, outcome, elapsed, trace_id)
