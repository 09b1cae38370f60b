"""What the front reports per request: the server span, the request metrics and the request log.

The front calls three functions around each request, whatever shape it has (an ASGI endpoint,
a middleware)::

    seen = telemetry.begin(method, path, headers, correlation_id)   # on arrival
    telemetry.routed(seen, flow.name, route_template)                # once the route is known
    ...run the flow, answer...
    telemetry.end(seen, status, request_bytes, response_bytes, error)

``begin`` starts the SERVER span (continuing the caller's ``traceparent``/``tracestate``) and
makes it current, so that step and backend spans are its children; ``end`` records
``interlace_http_request_duration_seconds`` (with the trace id as exemplar), the body sizes,
and writes one line to the ``interlace.request`` logger: flow, route, method, path, status,
duration, correlation and trace ids, and each backend call with its timing.  That logger is at
INFO: ``--log-levels interlace.request=warning`` turns the request lines off.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from engine import metrics, otlp_wire, tracing
from engine.observability import direct_handler

request_log = logging.getLogger("interlace.request")


class Seen(tracing.ServerSpan):
    """One request being observed; with tracing on, also its SERVER span (``tracing.start_server``
    sets the span's fields on it; ``token`` is then not None)."""

    __slots__ = ("backends", "cid", "flow", "method", "path", "received", "route", "started", "tallies", "token")

    def __init__(self, method: str, path: str, cid: str) -> None:
        self.started = time.perf_counter()
        self.method = method
        self.path = path
        self.cid = cid
        self.flow = ""
        self.route = ""
        self.token: Any = None  # with tracing on: the current span's before this one (tracing.start_server)
        self.backends: list[tuple[str, str, str, float]] | None = None
        # a request body without Content-Length: -1 while it arrives, then its size (engine/front.py)
        self.received: int | None = None
        self.tallies: RouteTallies | None = None


class RouteTallies:
    """One route's request metrics (flow, route template), made with the route when the flows
    load: a request finds its three histograms' tallies here, not by its labels in the
    metrics' tables.  The children are made on first use, so a route no request has reached
    shows no series."""

    __slots__ = ("flow", "heads", "received", "route", "seconds", "sent")

    def __init__(self, flow: str, route: str) -> None:
        self.flow = flow
        self.route = route
        self.heads: dict[str, bytes] = {}  # method -> the route's server span head (tracing on)
        self.seconds: dict[tuple[str, int], metrics.Tally] = {}  # (method, status) ->
        self.received: metrics.Tally | None = None
        self.sent: metrics.Tally | None = None

    def received_tally(self) -> metrics.Tally:
        tally = self.received = metrics.request_bytes(self.flow, self.route)
        return tally

    def sent_tally(self) -> metrics.Tally:
        tally = self.sent = metrics.response_bytes(self.flow, self.route)
        return tally

    def head_of(self, method: str) -> bytes:
        head = self.heads[method] = _route_attributes(method, self.flow, self.route)[2]
        return head

    def seconds_of(self, method: str, status: int) -> metrics.Tally:
        tally = self.seconds[method, status] = metrics.request_seconds(self.flow, self.route, method,
                                                                       _STATUS.get(status) or str(status))
        return tally


_STATUS = {status: str(status) for status in range(100, 600)}


def request_size(seen: Seen, headers: dict[str, str]) -> int | None:
    """The request body's size for the metrics: its Content-Length; without one, the bytes that
    arrived (a chunked body, once the flow has read it to its end), 0 with no body at all; None
    when a body came but was never read to its end (its size is not known)."""
    length = headers.get("content-length")
    if length is not None:
        return int(length) if length.isdigit() else None
    received = seen.received
    if received is None:
        return 0 if "transfer-encoding" not in headers else None
    return received if received >= 0 else None


def begin(method: str, path: str, headers: dict[str, str], cid: str) -> Seen:
    seen = Seen(metrics.request_method(method), path, cid)
    metrics.IN_FLIGHT.inc()
    if request_log.isEnabledFor(logging.INFO):
        seen.backends = []
        metrics.request_backends.set(seen.backends)
    if tracing.ENABLED:
        seen.token = tracing.start_server(seen, seen.method, headers, path, cid)
    return seen


# (method, flow, route) -> the server span's name, the attributes every request of it shares and
# their encoding with the name (engine/otlp_wire.py ``head``), made once per route.  Bounded: the
# flows' routes times the methods metrics.request_method keeps.
_ROUTES: dict[tuple[str, str, str], tuple[str, dict[str, str], bytes]] = {}


def _route_attributes(method: str, flow: str, route: str) -> tuple[str, dict[str, str], bytes]:
    key = (method, flow, route)
    found = _ROUTES.get(key)
    if found is None:
        shared = {"http.request.method": method}
        if route:
            shared.update({"http.route": route, "interlace.flow": flow})
        if len(_ROUTES) > 10_000:  # flows reloaded many times over: start again
            _ROUTES.clear()
        name = f"{method} {route}" if route else method
        found = _ROUTES[key] = (name, shared, otlp_wire.head(name, tracing.SERVER, shared))
    return found


def routed(seen: Seen, flow: str, route: str, tallies: RouteTallies | None = None) -> None:
    seen.flow = flow
    seen.route = route
    seen.tallies = tallies
    if seen.token is not None:  # traced: the server span's name and shared attributes, encoded
        method = seen.method
        if tallies is not None:
            seen.head = tallies.heads.get(method) or tallies.head_of(method)
        else:
            seen.head = _route_attributes(method, flow, route)[2]


def end(seen: Seen, status: int, request_bytes: int | None = None, response_bytes: int | None = None,
        error: BaseException | None = None) -> None:
    elapsed = time.perf_counter() - seen.started
    metrics.IN_FLIGHT.dec()
    trace_id = None
    token = seen.token
    if token is not None:
        if seen.sampled:
            trace_id = seen.trace_id
            tracing.end_server(seen, seen.head or _route_attributes(seen.method, "", "")[2],  # no route: the method's
                               seen.path, seen.cid, status,
                               None if error is None else getattr(error, "code", type(error).__name__))
        tracing.current.reset(token)
    tallies = seen.tallies
    if tallies is not None:  # a route's: its tallies at hand
        seconds = tallies.seconds.get((seen.method, status)) or tallies.seconds_of(seen.method, status)
        if trace_id:
            seconds.observe_traced(elapsed, trace_id)
        else:
            seconds.observe(elapsed)
        if request_bytes is not None:
            (tallies.received or tallies.received_tally()).observe(request_bytes)
        if response_bytes is not None:
            (tallies.sent or tallies.sent_tally()).observe(response_bytes)
    else:
        flow, route = seen.flow, seen.route
        metrics.observe(metrics.request_seconds(flow, route, seen.method, _STATUS.get(status) or str(status)),
                        elapsed, trace_id)
        if request_bytes is not None:
            metrics.request_bytes(flow, route).observe(request_bytes)
        if response_bytes is not None:
            metrics.response_bytes(flow, route).observe(response_bytes)
    if seen.backends is not None:
        metrics.request_backends.set(None)
        # the structured fields' values, made into fields only if a format reads them (JSON does):
        # a tuple, not a closure (a closure over them put every local of this function in a cell)
        request = (seen, status, elapsed, request_bytes, response_bytes, error, trace_id)
        handler = direct_handler(request_log)
        if handler is None or not handler.request_line(
                request_log.name, time.time(), seen.cid, (seen.method, seen.path, status, elapsed * 1000),
                request_fields, request):
            request_log.handle(RequestRecord(*request))


def answered(method: str, path: str, cid: str, tallies: RouteTallies, status: int, started: float,
             request_bytes: int | None, response_bytes: int) -> None:
    """What ``begin``, ``routed`` and ``end`` record for a request answered at once (engine/front.py
    ``Facade.answer_now``: untraced, no backend called, no await between ``started`` and the
    answer written), without a ``Seen``: the same histograms and request line.  The in-flight
    gauge is left as it is: it would go up and down again with nothing able to read it between."""
    elapsed = time.perf_counter() - started
    method = metrics.request_method(method)
    seconds = tallies.seconds.get((method, status)) or tallies.seconds_of(method, status)
    seconds.observe(elapsed)
    if request_bytes is not None:
        (tallies.received or tallies.received_tally()).observe(request_bytes)
    (tallies.sent or tallies.sent_tally()).observe(response_bytes)
    if request_log.isEnabledFor(logging.INFO):
        handler = direct_handler(request_log)
        if handler is None or not handler.request_line(
                request_log.name, time.time(), cid, (method, path, status, elapsed * 1000), _answered_fields,
                (tallies, method, path, cid, status, elapsed, request_bytes, response_bytes)):
            request_log.handle(RequestRecord(_answered_seen(tallies, method, path, cid), status, elapsed,
                                             request_bytes, response_bytes, None, None))


def _answered_seen(tallies: RouteTallies, method: str, path: str, cid: str) -> Seen:
    """The ``Seen`` that ``begin`` and ``routed`` would have made for a request ``answered`` at once."""
    seen = Seen(method, path, cid)
    seen.flow, seen.route, seen.tallies, seen.backends = tallies.flow, tallies.route, tallies, []
    return seen


def _answered_fields(tallies: RouteTallies, method: str, path: str, cid: str, status: int, elapsed: float,
                     request_bytes: int | None, response_bytes: int) -> dict[str, Any]:
    return request_fields(_answered_seen(tallies, method, path, cid), status, elapsed, request_bytes, response_bytes,
                          None, None)


def request_fields(seen: Seen, status: int, elapsed: float, request_bytes: int | None, response_bytes: int | None,
                   error: BaseException | None, trace_id: str | None) -> dict[str, Any]:
    """The request line's structured fields: flow, route, method, path, status, duration_ms,
    backends (each with its timing), and request_bytes, response_bytes, error and trace_id
    when known."""
    fields: dict[str, Any] = {
        "flow": seen.flow or None, "route": seen.route or None, "method": seen.method, "path": seen.path,
        "status": status, "duration_ms": round(elapsed * 1000, 3),
        "backends": [{"endpoint": e, "url": u, "outcome": o, "duration_ms": round(s * 1000, 3)}
                     for e, u, o, s in seen.backends or ()],
    }
    if request_bytes is not None:
        fields["request_bytes"] = request_bytes
    if response_bytes is not None:
        fields["response_bytes"] = response_bytes
    if error is not None:
        fields["error"] = getattr(error, "code", type(error).__name__)
    if trace_id:
        fields["trace_id"] = trace_id
    return fields


class RequestRecord(logging.LogRecord):
    """The request line as a log record, made for a fraction of ``Logger.info``'s cost.

    ``Logger.info`` finds its caller by walking the stack and ``LogRecord.__init__`` works out
    the source file, thread and process names anew for every record: about half of what the
    request line cost (docs/performance.md).  This record copies those, which are the same for
    every request line, from a template made once per process (and again in a forked worker),
    and builds its structured ``fields`` only when a handler reads them (the JSON format does;
    the text format prints the message alone).  It goes through ``Logger.handle``: levels,
    filters and handlers apply as to any record.
    """

    def __init__(self, seen: Seen, status: int, elapsed: float, request_bytes: int | None,
                 response_bytes: int | None, error: BaseException | None, trace_id: str | None) -> None:
        template = _TEMPLATE or _make_template()
        self.__dict__.update(template)
        now = time.time()
        self.created = now
        self.msecs = int((now - int(now)) * 1000) + 0.0
        self.relativeCreated = (now - logging._startTime) * 1000  # type: ignore[attr-defined]
        ident = threading.get_ident()
        if ident != template["thread"]:
            self.thread, self.threadName = ident, threading.current_thread().name
        self.args = (seen.method, seen.path, status, elapsed * 1000)
        self.correlation_id = seen.cid
        # the request's trace id, as CorrelationFilter would look it up (the request's span is no
        # longer current when its line is written)
        self.trace_id = trace_id
        self._request = (seen, status, elapsed, request_bytes, response_bytes, error, trace_id)
        self._fields: dict[str, Any] | None = None

    @property
    def fields(self) -> dict[str, Any]:
        """flow, route, method, path, status, duration_ms, backends (each with its timing), and
        request_bytes, response_bytes, error and trace_id when known."""
        if self._fields is None:
            self._fields = request_fields(*self._request)
        return self._fields


_TEMPLATE: dict[str, Any] = {}


def _make_template() -> dict[str, Any]:
    """What every request line's record shares, from one record made the ordinary way."""
    model = logging.LogRecord(request_log.name, logging.INFO, __file__, _LINE, "%s %s %d %.1f ms", (), None,
                              "end")
    _TEMPLATE.update(model.__dict__)
    return _TEMPLATE


_LINE = end.__code__.co_firstlineno
os.register_at_fork(after_in_child=_TEMPLATE.clear)  # a worker's records carry its own pid
