"""Tracing with OpenTelemetry, configured by the standard ``OTEL_*`` environment variables.

Off unless asked for: tracing starts when ``OTEL_TRACES_EXPORTER`` is ``otlp`` or ``console``,
or when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` keep it off.  Off, nothing of OpenTelemetry is imported and the
compiler puts no span around any step: it costs nothing.

On, spans go out over OTLP: ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or ``..._TRACES_PROTOCOL``)
``http/protobuf`` (the default) or ``grpc``; endpoint, headers, timeout, compression and
certificates from the OTLP exporters' own ``OTEL_EXPORTER_OTLP_*`` variables; batching from
``OTEL_BSP_SCHEDULE_DELAY`` (ms, default 5000), ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (default 512:
a full batch goes at once) and ``OTEL_BSP_MAX_QUEUE_SIZE`` (default 2048: beyond it spans are
dropped and counted).  Sampling is the SDK's sampler built from ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG`` (default ``parentbased_always_on``: a request follows the gateway's
decision in its ``traceparent``), asked once per request or message, at its first span; the
spans under it share its decision.  ``OTEL_SERVICE_NAME`` (default ``interlace``) and
``OTEL_RESOURCE_ATTRIBUTES`` name the service.

What it costs, and why it is built this way (benchmarks/observability_ab.sh, CPU per request of
the worker, its export thread included, back to back on the shared machine):

- The SDK's own span objects and in-process batch export took the worker's CPU per request
  from 477 to 1,019 µs.  So a worker records each finished span as a tuple (a few µs) and a
  thread encodes and sends them in batches (engine/span_export.py).
- The SDK's ``ReadableSpan`` and its OTLP encoder cost ~70 µs a span, ~210 µs a proxied
  request: the export thread writes the protobuf itself (engine/otlp_wire.py, ~5 µs a span,
  checked against the SDK's encoder) and hands the bytes to the SDK's exporter client.
- That thread once handed its batches to a process of its own (pickled): the pickle and unpickle
  were ~13,000 of the ~35,000 instructions a span cost to export, and the process's CPU is the
  pod's all the same (a one-CPU pod runs both).
- Attributes a route, step or endpoint shares are one dict made once (``Span.shared``), encoded
  once per batch; a span carries only its own few.  Trace ids stay the hex text they are read
  and shown as; exemplars skip the client library's per-call check.

The spans: one SERVER span per request, continuing the caller's ``traceparent``/``tracestate``;
one CONSUMER span per message or run a source (schedule, file, queue, MQTT) hands to a flow,
continuing a ``traceparent`` the message carries (engine/sources/base.py); under either one
INTERNAL span per step that does work (engine/instrument.py); under a call step one CLIENT span
per attempt at the backend, whose context goes to the backend in ``traceparent``
(connectors/observe.py), or a PRODUCER span for a message published (AMQP headers, MQTT 5 user
properties), whose consumer continues it.
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
import re
import struct
import threading
import time
from collections.abc import Mapping
from typing import Any

from engine.otlp_wire import CODES as _CODES
from engine.otlp_wire import LOCAL_PARENT as _LOCAL_PARENT
from engine.otlp_wire import REMOTE_KINDS as _REMOTE_KINDS
from engine.otlp_wire import REMOTE_PARENT as _REMOTE_PARENT
from engine.otlp_wire import SHORT as _SHORT
from engine.otlp_wire import STATUS_FIELDS as _STATUS_FIELDS
from engine.otlp_wire import head_of as _head_of
from engine.otlp_wire import own as _own
from engine.otlp_wire import pair as _pair
from engine.otlp_wire import status_code as _status_code
from engine.otlp_wire import status_with as _status_with
from engine.otlp_wire import string_prefix as _string_prefix
from engine.otlp_wire import trace_field as _trace_field
from engine.otlp_wire import varint as _varint

log = logging.getLogger("interlace.tracing")

ENABLED = False
PROTOCOLS = ("http/protobuf", "grpc")
INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = 1, 2, 3, 4, 5  # OTLP's SpanKind numbers
UNSET, OK, ERROR = 0, 1, 2  # OTLP's status codes

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_getrandbits = random.getrandbits  # reseeded in each forked worker by the random module itself
_time_ns = time.time_ns

current: contextvars.ContextVar[Parent | None] = contextvars.ContextVar("interlace_span", default=None)
# the shared attributes of the step being run whose only work is one call (engine/instrument.py):
# that step has no span of its own, its attempts' CLIENT spans carry them (connectors/observe.py)
step: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("interlace_step", default=None)


class TracingConfigError(ValueError):
    """An OTEL_* variable this engine cannot follow."""


def _wire(span_id: int) -> int:
    """A span id as ``Span`` keeps it: the little-endian reading of its 8 bytes (see there)."""
    return int.from_bytes(span_id.to_bytes(8, "big"), "little")


class Parent:
    """What a span's children, ``inject`` and the logs read of it: its trace id (the 32 hex
    digits it is shown as), ``trace_field`` (the trace id and state encoded, engine/otlp_wire.py),
    ``trace_state``, ``sampled`` and its id (``wire_id``, see ``Span``)."""

    __slots__ = ("sampled", "trace_field", "trace_id", "trace_state", "wire_id")

    sampled: bool
    trace_field: bytes
    trace_id: str
    trace_state: str
    wire_id: int

    @property
    def span_id(self) -> int:
        return int.from_bytes(self.wire_id.to_bytes(8, "little"), "big")

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.wire_id.to_bytes(8, 'little').hex()}-{'01' if self.sampled else '00'}"

    @property
    def trace_id_hex(self) -> str | None:
        """The trace id for logs and exemplars, when the span is sampled."""
        return self.trace_id if self.sampled else None


class Span(Parent):
    """One span being recorded.  ``sampled`` False: it only carries the context to backends.

    ``shared`` holds the attributes its step or route has in common with every other span of it
    (one dict made at load or on the first request, never changed); ``attributes`` those of this
    span alone.  ``trace_id`` is kept as the 32 hex digits it is shown as (traceparent, logs,
    exemplars), never formatted per use.

    A span is encoded when it ends, by one join of byte strings most of which were made before:
    ``trace_field`` (its trace id and state, made once per trace), ``head`` (its name, kind and
    shared attributes, made once per route or endpoint: engine/otlp_wire.py ``head``), ``own``
    (own attributes its maker encoded, e.g. the request's path), ``code`` (the HTTP status, one
    encoding per status).  What ``attributes`` holds is encoded at the end.  The span's and its
    parent's ids are kept as ``wire_id``/``wire_parent``, the little-endian reading of their
    8 bytes, so that one little-endian struct packs both ids and both times (OTLP's times are
    little-endian fixed64, its ids bytes); ``span_id``/``parent_id`` give them as numbers."""

    __slots__ = ("attributes", "code", "end_ns", "flags", "head", "kind", "name", "own", "shared", "start_ns",
                 "status", "status_message", "wire_parent")

    def __init__(self, name: str, kind: int, trace_id: str, parent_id: int, sampled: bool,
                 shared: Mapping[str, Any] | None, trace_state: str = "", attributes: dict[str, Any] | None = None,
                 trace_field: bytes | None = None, head: bytes | None = None, own: bytes = b"") -> None:
        self.name = name
        self.kind = kind
        self.trace_id = trace_id
        self.wire_id = _getrandbits(64) or 1
        self.wire_parent = _wire(parent_id) if parent_id else 0
        self.sampled = sampled
        self.shared = shared
        self.attributes = {} if attributes is None else attributes
        self.trace_state = trace_state
        self.trace_field = _trace_field(bytes.fromhex(trace_id), trace_state) if trace_field is None else trace_field
        self.head = head
        self.own = own
        self.code = 0
        self.flags = _REMOTE_PARENT if parent_id and kind in _REMOTE_KINDS else _LOCAL_PARENT
        self.status = UNSET
        self.status_message = ""
        self.start_ns = _time_ns()
        self.end_ns = 0

    @property
    def parent_id(self) -> int:
        return int.from_bytes(self.wire_parent.to_bytes(8, "little"), "big")

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def fail(self, error_type: str, message: str = "") -> None:
        """Mark the span failed: status ERROR and ``error.type``."""
        self.attributes["error.type"] = error_type
        self.status = ERROR
        self.status_message = message[:200]

    def end(self) -> None:
        if self.sampled and not self.end_ns:
            self.end_ns = end = _time_ns()
            exporter = _exporter
            pending = exporter.pending
            size = len(pending)
            if size >= exporter.limit:
                exporter.dropped += 1
                return
            # the span's OTLP encoding (engine/otlp_wire.py has the field numbers), written here
            # in one join: this runs twice a proxied request.  It goes to the list framed as
            # ScopeSpans.spans 2 (_FRAMES): the export joins a batch as it is
            parent = self.wire_parent
            head = self.head
            if head is None:
                head = self.head = _head_of(self.name, self.kind, self.shared or {})
            code = self.code
            attributes = self.attributes
            status = self.status
            data = b"".join((
                self.trace_field,
                _IDS_TIMES(0x0812, self.wire_id, 0x0822, parent, 0x39, self.start_ns, 0x41, end) if parent
                else _ID_TIMES(0x0812, self.wire_id, 0x39, self.start_ns, 0x41, end),
                head, self.own,
                (_CODES.get(code) or _status_code(code)) if code else b"",
                _own(attributes) if attributes else b"",
                _status_with(self.status_message) if status == ERROR and self.status_message
                else _STATUS_FIELDS[status],
                self.flags))
            n = len(data)
            pending.append(_FRAMES[n] if n < 4096 else _frame(n))
            pending.append(data)
            if size + 2 == exporter.batch:  # a full batch goes now, as the SDK's batch processor does
                exporter.wake.set()



class ServerSpan(Parent):
    """A request's SERVER span as ``start_server`` begins it and ``end_server`` ends it: its
    route's ``head`` (engine/otlp_wire.py ``head``), its start, its remote parent's id (0: none).
    engine/telemetry.py's object for a request is one, so that a traced request makes one
    object, not two, and sets only these fields."""

    __slots__ = ("head", "start_ns", "wire_parent")

    head: bytes | None
    start_ns: int
    wire_parent: int


# span_id 2 and parent_span_id 4 (their tags as little-endian shorts: 0x12 0x08, 0x22 0x08), then
# start_time_unix_nano 7 and end_time_unix_nano 8, in one pack (see Span)
_IDS_TIMES = struct.Struct("<HQHQBQBQ").pack
_ID_TIMES = struct.Struct("<HQBQBQ").pack
_CALL_IDS_TIMES = struct.Struct("<H8sHQBQBQ").pack  # the span's id as its bytes (record_call)
_CALL_IDS_TIMES_SIZE = struct.calcsize("<H8sHQBQBQ")
_ID_TIMES_SIZE = struct.calcsize("<HQBQBQ")
_new_span = object.__new__
# a span's framing as ScopeSpans.spans 2 (its tag and length), by its length: each span goes to the
# export as two pieces, this and the span (the export joins a batch as it is)
_FRAMES = tuple(b"\x12" + short for short in _SHORT[:4096])


def _frame(n: int) -> bytes:
    return b"\x12" + _varint(n)



def record_call(parent: Parent, span_id: bytes, head: bytes, own: bytes, begun: int, code: int,
                error_type: str = "", message: str | None = "") -> None:
    """The CLIENT span of a call a folded step made (connectors/_http_call.py), written and queued
    as ``Span.end`` writes a span, from what that coroutine kept instead of a span object (once
    a backend call: the object and its end were a tenth of what tracing cost a request).

    ``span_id``: its id's 8 bytes, ``own``: its url.full encoded, ``begun``: its
    start; ``code``: the HTTP status (0: none; 500 and above fail it, as ``observe.Attempt``
    does), ``error_type`` with ``message`` the outcome of a call that failed without one
    (``message`` None: cancelled, error.type only)."""
    exporter = _exporter
    pending = exporter.pending
    size = len(pending)
    if size >= exporter.limit:
        exporter.dropped += 1
        return
    if not error_type and not parent.trace_state:  # the usual call: answered, in a trace of no state
        key = (head, own, code)
        pack, frame, rest = _CALL_SHAPES.get(key) or _call_shape(key)
        pending += (frame, pack(parent.trace_field, 0x0812, span_id, 0x0822, parent.wire_id, 0x39, begun, 0x41,
                                _time_ns(), rest))  # one extend: whole spans, as the thread cuts them
        if size + 2 == exporter.batch:
            exporter.wake.set()
        return
    if not error_type or code >= 500:  # an answer: its status code's fields, made once per code
        tail = _CLIENT_TAILS.get(code) or _client_tail(code)
    else:
        if message is None:
            status = _STATUS_FIELDS[UNSET]
        else:
            status = _status_with(message[:200]) if message else _STATUS_FIELDS[ERROR]
        tail = b"".join(((_CODES.get(code) or _status_code(code)) if code else b"", _pair("error.type", error_type),
                         status, _LOCAL_PARENT))
    data = b"".join((
        parent.trace_field, _CALL_IDS_TIMES(0x0812, span_id, 0x0822, parent.wire_id, 0x39, begun, 0x41, _time_ns()),
        head, own, tail))
    n = len(data)
    pending.append(_FRAMES[n] if n < 4096 else _frame(n))  # two appends, cheaper than one += (see _flush)
    pending.append(data)
    if size + 2 == exporter.batch:
        exporter.wake.set()


# (head, url.full encoded, HTTP status) -> a CLIENT span written in one pack: the struct of its
# fields (trace_field, ids and times, the rest), its frame and the rest (head, url.full, the tail
# by status): for a call in a trace without trace state (trace_field 18 bytes) that got an
# answer, every field's length is known, so its frame is too.  One pack of 10 values where a
# join of 5, a pack of 8 and a len were.
_CALL_SHAPES: dict[tuple[bytes, bytes, int], tuple[Any, bytes, bytes]] = {}


def _call_shape(key: tuple[bytes, bytes, int]) -> tuple[Any, bytes, bytes]:
    if len(_CALL_SHAPES) > 4096:
        _CALL_SHAPES.clear()
    head, own, code = key
    rest = head + own + (_CLIENT_TAILS.get(code) or _client_tail(code))
    n = 18 + _CALL_IDS_TIMES_SIZE + len(rest)
    frame = _FRAMES[n] if n < 4096 else _frame(n)
    found = _CALL_SHAPES[key] = (struct.Struct(f"<18sH8sHQBQBQ{len(rest)}s").pack, frame, rest)
    return found


# a CLIENT span's last fields by its HTTP status: http.response.status_code, and from 500
# error.type (the status) with status ERROR, else status UNSET; then its flags (a local parent)
_CLIENT_TAILS: dict[int, bytes] = {}


def _client_tail(code: int) -> bytes:
    if len(_CLIENT_TAILS) > 1024:
        _CLIENT_TAILS.clear()
    failed = code >= 500
    found = _CLIENT_TAILS[code] = b"".join((
        (_CODES.get(code) or _status_code(code)) if code else b"", _pair("error.type", str(code)) if failed else b"",
        _STATUS_FIELDS[ERROR if failed else UNSET], _LOCAL_PARENT))
    return found


def child_span(parent: Parent, name: str, kind: int, shared: Mapping[str, Any] | None, head: bytes | None,
               own: bytes = b"") -> Span:
    """A span under ``parent``, made without ``Span.__init__``'s call (this runs once per backend
    call): the same fields."""
    span: Span = _new_span(Span)
    span.name = name
    span.kind = kind
    span.trace_id = parent.trace_id
    span.wire_id = _getrandbits(64) or 1
    span.wire_parent = parent.wire_id
    span.sampled = parent.sampled
    span.shared = shared
    span.attributes = {}
    span.trace_state = parent.trace_state
    span.trace_field = parent.trace_field
    span.head = head
    span.own = own
    span.code = 0
    span.flags = _LOCAL_PARENT
    span.status = UNSET
    span.status_message = ""
    span.start_ns = _time_ns()
    span.end_ns = 0
    return span


def wanted(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def protocol(env: Mapping[str, str]) -> str:
    chosen = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
              or "http/protobuf").strip().lower()
    if chosen not in PROTOCOLS:
        raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={chosen!r} is not supported; "
                                 f"use one of: {', '.join(PROTOCOLS)}")
    return chosen


def exporters(env: Mapping[str, str]) -> list[str]:
    names = [e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if e.strip()]
    unknown = sorted(set(names) - {"otlp", "console"})
    if unknown:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: unknown exporter {', '.join(unknown)}; "
                                 f"use otlp, console or none")
    return names


_sampler: Any = None
# the SDK's built-in samplers, decided without building an OpenTelemetry context per request
# (asking the SDK's sampler object took ~100 µs a request on the loaded benchmark machine):
# (follow the parent's flag when there is one, the root decision: True, False or a ratio sampler)
_fast: tuple[bool, Any] | None = None
_BUILT_IN = ("always_on", "always_off", "traceidratio")


def _fast_sampler(env: Mapping[str, str]) -> tuple[bool, Any] | None:
    name = (env.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").strip().lower()
    parent_based = name.startswith("parentbased_")
    root = name.removeprefix("parentbased_")
    if root not in _BUILT_IN:
        return None  # a sampler from an entry point: the SDK's object decides
    if root == "traceidratio":
        from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

        try:
            rate = float(env.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)
        except ValueError:
            rate = 1.0  # what the SDK does with an unreadable ratio
        return parent_based, TraceIdRatioBased(rate if 0.0 <= rate <= 1.0 else 1.0)
    return parent_based, root == "always_on"


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Set up tracing in this process as the environment says; True when it is on.

    Call it in each worker (after a fork): it starts the export thread.  ``env`` decides whether
    tracing is on, the sampler and the batching; the exporters read their ``OTEL_EXPORTER_OTLP_*``
    settings from the process environment, as the SDK's do."""
    global ENABLED, _sampler
    env = os.environ if env is None else env
    shutdown()
    if not wanted(env):
        return False
    names = exporters(env)
    chosen = protocol(env)
    from opentelemetry.sdk.trace import TracerProvider

    _sampler = TracerProvider().sampler  # the SDK's, from OTEL_TRACES_SAMPLER(_ARG)
    global _fast, _root_always
    _fast = _fast_sampler(env)
    _root_always = _fast[1] if _fast is not None and isinstance(_fast[1], bool) else None
    delay = float(env.get("OTEL_BSP_SCHEDULE_DELAY") or 5000) / 1000
    _exporter.start(delay, int(env.get("OTEL_BSP_MAX_QUEUE_SIZE") or 2048),
                    int(env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or 512))
    ENABLED = True
    log.info("tracing on: %s spans%s, sampler %s", ",".join(names),
             f" over OTLP {chosen}" if "otlp" in names else "", type(_sampler).__name__)
    return True


def shutdown() -> None:
    """Export what is buffered and stop (on the way out of a worker)."""
    global ENABLED
    ENABLED = False
    _exporter.stop()


# -- starting spans -------------------------------------------------------------------------------

def _should_sample(trace_id: int, parent: tuple[int, bool] | None, name: str, attributes: Mapping[str, Any],
                   kind: int = SERVER) -> bool:
    if _fast is not None:
        parent_based, root = _fast
        if parent is not None and parent_based:
            return parent[1]  # the SDK's ParentBased: a remote parent's sampled flag decides
        if isinstance(root, bool):
            return root
        return bool(trace_id & root.TRACE_ID_LIMIT < root.bound)  # TraceIdRatioBased's own rule
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

    context = None
    if parent is not None:
        parent_context = SpanContext(trace_id, parent[0], is_remote=True,
                                     trace_flags=TraceFlags(TraceFlags.SAMPLED if parent[1] else 0))
        context = trace.set_span_in_context(NonRecordingSpan(parent_context))
    result = _sampler.should_sample(context, trace_id, name, SpanKind(kind - 1), attributes)
    return bool(result.decision.is_sampled())


def _parent_of(headers: Mapping[str, str]) -> tuple[str, int, bool, str] | None:
    """(trace id, parent span id, sampled, trace state) of a valid ``traceparent`` in ``headers``."""
    given = headers.get("traceparent")
    found = _TRACEPARENT.match(given.strip().lower()) if given else None
    if found and found[1] != "ff" and found[2] != "0" * 32 and found[3] != "0" * 16:
        return found[2], int(found[3], 16), bool(int(found[4], 16) & 1), headers.get("tracestate", "")[:512]
    return None


def start_root_span(name: str, kind: int, headers: Mapping[str, str], shared: Mapping[str, Any],
                    attributes: dict[str, Any] | None = None) -> Span:
    """The first span of a request (SERVER) or of a message from a source (CONSUMER), continuing
    the ``traceparent``/``tracestate`` in ``headers`` when it is valid, else starting a trace."""
    parent = _parent_of(headers)
    if parent is None:
        number = _getrandbits(128) or 1
        trace = number.to_bytes(16, "big")
        trace_id, parent_id, trace_state = trace.hex(), 0, ""
    else:
        trace_id, parent_id, _, trace_state = parent
        trace = bytes.fromhex(trace_id)
    fast = _fast
    if fast is not None and isinstance(fast[1], bool) and (parent is None or not fast[0]):
        sampled = fast[1]  # always_on / always_off at the root: no need for the id as a number
    else:
        sampled = _should_sample(int(trace_id, 16), None if parent is None else (parent_id, parent[2]), name,
                                 {**shared, **(attributes or {})}, kind)
    return Span(name, kind, trace_id, parent_id, sampled, shared, trace_state, attributes,
                _trace_field(trace, trace_state))


# the decision for a request without a traceparent when it needs no trace id (always_on or
# always_off at the root, parent-based or not): the request span's fast path; None: ask _should_sample
_root_always: bool | None = None


def server_span(method: str, headers: Mapping[str, str], path: str, cid: str) -> Span:
    """The SERVER span of a request, continuing the caller's ``traceparent``/``tracestate`` when
    valid; named ``method`` until its route is known (engine/telemetry.py ``routed`` gives it its
    name, shared attributes and head).  Its ``url.path`` and correlation id are encoded now."""
    if "traceparent" not in headers and _root_always is not None:
        trace = (_getrandbits(128) or 1).to_bytes(16, "big")
        span = _new_span(Span)  # Span.__init__'s fields, without its call (once a request)
        span.name = method
        span.kind = SERVER
        span.trace_id = trace.hex()
        span.wire_id = _getrandbits(64) or 1
        span.wire_parent = 0
        span.sampled = _root_always
        span.shared = None
        span.attributes = {}
        span.trace_state = ""
        span.trace_field = b"\x0a\x10" + trace
        span.head = None
        span.own = b""
        span.code = 0
        span.flags = _LOCAL_PARENT
        span.status = UNSET
        span.status_message = ""
        span.start_ns = _time_ns()
        span.end_ns = 0
    else:
        span = start_root_span(method, SERVER, headers, {"http.request.method": method},
                               {"url.path": path, "interlace.correlation_id": cid})
        span.shared = None
        span.attributes = {}
    if span.sampled:
        path_pair = _PATHS.get(path)
        if path_pair is None:
            if len(_PATHS) > 4096:
                _PATHS.clear()
            path_pair = _PATHS[path] = _pair("url.path", path)
        text = cid.encode("utf-8", "replace")
        prefix = _CID_PREFIXES.get(len(text))
        if prefix is None:
            prefix = _cid_prefix(len(text))
        span.own = b"".join((path_pair, prefix, text))
    return span


def start_server(span: ServerSpan, method: str, headers: Mapping[str, str], path: str,
                 cid: str) -> contextvars.Token[Parent | None]:
    """Make ``span`` the SERVER span of a request and the current span, as ``server_span`` makes
    one (continuing a valid ``traceparent``/``tracestate``); ``end_server`` ends it.

    ``span`` is engine/telemetry.py's object for the request; its route's ``head`` is given once
    the route is known."""
    if _root_always is not None and "traceparent" not in headers:
        trace = (_getrandbits(128) or 1).to_bytes(16, "big")
        span.trace_id = trace.hex()
        span.trace_field = b"\x0a\x10" + trace
        span.trace_state = ""
        span.sampled = _root_always
        span.wire_parent = 0
    else:
        root = start_root_span(method, SERVER, headers, {"http.request.method": method},
                               {"url.path": path, "interlace.correlation_id": cid})
        span.trace_id = root.trace_id
        span.trace_field = root.trace_field
        span.trace_state = root.trace_state
        span.sampled = root.sampled
        span.wire_parent = root.wire_parent
    span.wire_id = _getrandbits(64) or 1
    span.head = None
    span.start_ns = _time_ns()
    return current.set(span)


def end_server(span: ServerSpan, head: bytes, path: str, cid: str, code: int, error_type: str | None) -> None:
    """Write and queue the SERVER span ``start_server`` began, sampled: ``head`` its route's
    (name, kind, shared attributes), then url.path, the correlation id, ``code`` as
    http.response.status_code (500 and above: status ERROR) and ``error_type`` when there was
    an error: the fields, attributes in their order, of ``server_span``'s span ended."""
    exporter = _exporter
    pending = exporter.pending
    size = len(pending)
    if size >= exporter.limit:
        exporter.dropped += 1
        return
    text = cid.encode("utf-8", "replace")
    n = len(text)
    parent = span.wire_parent
    if n == 32 and not parent and not error_type and not span.trace_state:
        # the usual request: a trace of its own, the engine's own 32-character id, no error: the
        # span in one pack (_SERVER_SHAPES)
        key = (head, path, code)
        pack, frame, before, after = _SERVER_SHAPES.get(key) or _server_shape(key)
        pending += (frame, pack(span.trace_field, 0x0812, span.wire_id, 0x39, span.start_ns, 0x41, _time_ns(),
                                before, text, after))  # one extend: whole spans, as the thread cuts them
        if size + 2 == exporter.batch:
            exporter.wake.set()
        return
    if n == 32:  # the engine's own correlation ids: the path's attribute and the id's prefix in one piece
        path_and_prefix = _PATH_CIDS.get(path) or _path_cid(path)
    else:
        path_and_prefix = (_PATHS.get(path) or _path_pair(path)) + (_CID_PREFIXES.get(n) or _cid_prefix(n))
    data = b"".join((
        span.trace_field,
        _IDS_TIMES(0x0812, span.wire_id, 0x0822, parent, 0x39, span.start_ns, 0x41, _time_ns()) if parent
        else _ID_TIMES(0x0812, span.wire_id, 0x39, span.start_ns, 0x41, _time_ns()),
        head, path_and_prefix, text,
        _SERVER_TAILS.get(code) or _server_tail(code),
        _pair("error.type", error_type) if error_type else b"",
        _REMOTE_PARENT if parent else _LOCAL_PARENT))
    n = len(data)
    pending.append(_FRAMES[n] if n < 4096 else _frame(n))
    pending.append(data)
    if size + 2 == exporter.batch:
        exporter.wake.set()


# (head, url.path, HTTP status) -> a SERVER span written in one pack (end_server): the struct of its
# fields (trace_field, id and times, head with url.path and the correlation id's prefix, the id,
# the tail by status with the flags), its frame, and the parts before and after the id.
# For a request with no parent, no trace state, a 32-character correlation id and no error,
# every length is known, so the frame is too (as _CALL_SHAPES).
_SERVER_SHAPES: dict[tuple[bytes, str, int], tuple[Any, bytes, bytes, bytes]] = {}


def _server_shape(key: tuple[bytes, str, int]) -> tuple[Any, bytes, bytes, bytes]:
    if len(_SERVER_SHAPES) > 4096:
        _SERVER_SHAPES.clear()
    head, path, code = key
    before = head + (_PATH_CIDS.get(path) or _path_cid(path))
    after = (_SERVER_TAILS.get(code) or _server_tail(code)) + _LOCAL_PARENT
    n = 18 + _ID_TIMES_SIZE + len(before) + 32 + len(after)
    frame = _FRAMES[n] if n < 4096 else _frame(n)
    found = _SERVER_SHAPES[key] = (struct.Struct(f"<18sHQBQBQ{len(before)}s32s{len(after)}s").pack, frame, before,
                                   after)
    return found


# http.response.status_code -> its attribute and the SERVER span's status (ERROR from 500): the
# status code's fields of a server span, once per code
_SERVER_TAILS: dict[int, bytes] = {}


def _server_tail(code: int) -> bytes:
    if len(_SERVER_TAILS) > 1024:
        _SERVER_TAILS.clear()
    attribute = (_CODES.get(code) or _status_code(code)) if code else b""
    found = _SERVER_TAILS[code] = attribute + _STATUS_FIELDS[ERROR if code >= 500 else UNSET]
    return found


def _path_pair(path: str) -> bytes:
    if len(_PATHS) > 4096:
        _PATHS.clear()
    found = _PATHS[path] = _pair("url.path", path)
    return found


_PATH_CIDS: dict[str, bytes] = {}  # url.path -> its attribute and the prefix of a 32-character correlation id


def _path_cid(path: str) -> bytes:
    if len(_PATH_CIDS) > 4096:
        _PATH_CIDS.clear()
    found = _PATH_CIDS[path] = (_PATHS.get(path) or _path_pair(path)) + _CID32
    return found


_CID = "interlace.correlation_id"
_CID_PREFIXES: dict[int, bytes] = {}  # a correlation id's length -> what its attribute's encoding starts with


def _cid_prefix(n: int) -> bytes:
    found = _CID_PREFIXES[n] = _string_prefix(_CID, n)
    return found
_PATHS: dict[str, bytes] = {}  # url.path -> its attribute, encoded (a route's paths repeat)
_CID32 = _cid_prefix(32)  # the engine's own correlation ids have 32 characters


def start_span(name: str, kind: int, shared: Mapping[str, Any],
               attributes: dict[str, Any] | None = None, head: bytes | None = None) -> Span | None:
    """A child of the current span (None when there is none: nothing to attach it to)."""
    parent = current.get()
    if parent is None:
        return None
    span = child_span(parent, name, kind, shared, head)
    if attributes:
        span.attributes = attributes
    return span


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits) when it is sampled, else None."""
    span = current.get()
    return span.trace_id_hex if span is not None else None


def inject(headers: dict[str, str]) -> None:
    """Put the current span's context in ``headers`` (a message handed on: a stored message),
    in place of any there; nothing when no span is current."""
    span = current.get()
    if span is None:
        return
    headers["traceparent"] = span.traceparent
    if span.trace_state:
        headers["tracestate"] = span.trace_state
    else:
        headers.pop("tracestate", None)


_TRACE_HEADERS = TRACE_HEADERS = frozenset({"traceparent", "tracestate"})


def propagate(span: Span, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` carrying ``span``'s context (``traceparent``, and ``tracestate`` when the
    caller sent one), in place of any given."""
    return with_context(headers, f"00-{span.trace_id}-{span.wire_id.to_bytes(8, 'little').hex()}-"
                                 f"{'01' if span.sampled else '00'}", span.trace_state)


def with_context(headers: list[tuple[str, str]], traceparent: str, trace_state: str) -> list[tuple[str, str]]:
    """``headers`` (not changed) with this ``traceparent`` and ``tracestate`` (when not empty),
    in place of any given."""
    for pair in headers:  # a loop, not a comprehension's frame: the usual list has no trace header
        if pair[0] in _TRACE_HEADERS:
            headers = [pair for pair in headers if pair[0] not in _TRACE_HEADERS]
            break
    if trace_state:
        return [*headers, ("traceparent", traceparent), ("tracestate", trace_state)]
    return [*headers, ("traceparent", traceparent)]


# -- handing spans to the export thread -----------------------------------------------------------

class _Exporter:
    """Finished spans, batched and sent by a thread (engine/span_export.py ``Sender``); spans
    beyond the queue's size are dropped and counted."""

    def __init__(self) -> None:
        # encoded spans, each as two pieces (ScopeSpans.spans tag and length, span): never replaced,
        # only appended to (the request path) and cut from the front (the thread), so that no span
        # is lost between the two
        self.pending: list[bytes] = []
        self.limit = 2 * 2048  # in pieces
        self.batch = 2 * 512
        self.dropped = 0
        self.delay = 5.0
        self.sender: Any = None
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()
        self.stopping = False

    def start(self, delay: float, limit: int, batch: int) -> None:
        from engine.span_export import Sender

        self.delay, self.limit, self.batch = delay, 2 * limit, 2 * min(batch, limit)
        self.stopping, self.dropped = False, 0
        self.sender = Sender()
        self.thread = threading.Thread(target=self._run, name="interlace-span-export", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            full = self.wake.wait(self.delay)
            self.wake.clear()
            self._flush(full)  # woken by a full batch: full batches; the delay passed: every span
        self._flush(False)

    def _flush(self, full_only: bool) -> None:
        """Send what is pending, a batch at most an export as the SDK's processor does (only
        full batches when ``full_only``: the rest waits for the next to fill, or the delay)."""
        pending, size, sender = self.pending, self.batch, self.sender
        while sender is not None and (len(pending) >= size or not full_only):
            # whole spans only: the request path appends a span's two pieces one after the other,
            # so the thread may come between them; it takes an even count, from the front (what
            # the request path appends meanwhile stays)
            batch = pending[:min(size, len(pending) & ~1)]
            if not batch:
                break
            del pending[:len(batch)]
            try:
                sender.send(batch)
            except Exception as exc:  # the thread goes on: the next batch may leave
                self.dropped += len(batch) // 2
                log.warning("span export failed: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        thread, sender = self.thread, self.sender
        if thread is None or sender is None:
            return
        self.stopping = True
        self.wake.set()
        thread.join(30)
        sender.shutdown()
        if self.dropped:
            log.warning("tracing: %d spans dropped (export queue full or exporter failing)", self.dropped)
        self.thread = self.sender = None


_exporter = _Exporter()
