"""Tracing with OpenTelemetry, configured by the standard ``OTEL_*`` environment variables.

Off unless asked for: tracing starts when ``OTEL_TRACES_EXPORTER`` is ``otlp`` or ``console``,
or when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` keep it off.  Off, nothing of OpenTelemetry is imported and the
compiler puts no span around any step, so it costs nothing.

On, each worker exports its spans in batches (``OTEL_BSP_*``) over OTLP:
``OTEL_EXPORTER_OTLP_PROTOCOL`` (or ``..._TRACES_PROTOCOL``) ``http/protobuf`` (the default)
or ``grpc``; endpoint, headers, timeout, compression and certificates from the exporters' own
``OTEL_EXPORTER_OTLP_*`` variables.  Sampling is the SDK's: ``OTEL_TRACES_SAMPLER``
(default ``parentbased_always_on``: a request follows the gateway's decision in its
``traceparent``) and ``OTEL_TRACES_SAMPLER_ARG``.  The service is named by
``OTEL_SERVICE_NAME`` (default ``interlace``) and ``OTEL_RESOURCE_ATTRIBUTES``.

The spans of a request: one SERVER span per request, continuing the caller's
``traceparent``/``tracestate``; under it one span per step that does work (engine/instrument.py);
under a call step one CLIENT span per attempt at the backend, whose context goes to the backend
in ``traceparent`` (connectors/http.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("interlace.tracing")

ENABLED = False
_tracer: Tracer | None = None
_provider: TracerProvider | None = None

PROTOCOLS = ("http/protobuf", "grpc")


class TracingConfigError(ValueError):
    """An OTEL_* variable this engine cannot follow."""


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


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Set up tracing in this process as the environment says; True when it is on.

    Call it in each worker (after a fork): the batch exporter runs a thread of its own."""
    global ENABLED, _tracer, _provider
    env = os.environ if env is None else env
    if not wanted(env):
        ENABLED, _tracer = False, None
        return False
    exporters = [e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if e.strip()]
    unknown = sorted(set(exporters) - {"otlp", "console"})
    if unknown:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: unknown exporter {', '.join(unknown)}; "
                                 f"use otlp, console or none")

    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or "interlace"})
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER(_ARG)
    for name in exporters:
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif protocol(env) == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            exporter = GrpcExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            exporter = HttpExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if _provider is not None:
        _provider.shutdown()
    _provider = provider
    if not _provider_set():
        trace.set_tracer_provider(provider)  # for libraries that ask the global one
    _tracer = provider.get_tracer("interlace")
    ENABLED = True
    log.info("tracing on: %s spans over %s", ",".join(exporters), protocol(env) if "otlp" in exporters else "-")
    return True


def _provider_set() -> bool:
    # the global provider can be set once per process; the engine keeps its own reference
    from opentelemetry import trace

    return not type(trace.get_tracer_provider()).__name__.startswith("Proxy")


def tracer() -> Tracer:
    if _tracer is None:
        raise RuntimeError("tracing is off; check tracing.ENABLED first")
    return _tracer


def shutdown() -> None:
    """Export what is buffered and stop (on the way out of a worker)."""
    global ENABLED, _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    ENABLED, _tracer, _provider = False, None, None


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits) when it is being recorded, else None."""
    if not ENABLED:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid and context.trace_flags.sampled else None


def trace_id_of(span: Span) -> str | None:
    context = span.get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid and context.trace_flags.sampled else None


def inject_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with the current span's ``traceparent``/``tracestate`` in place of any given."""
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    if not carrier:
        return headers
    return [(k, v) for k, v in headers if k not in carrier] + list(carrier.items())


def extract_context(headers: Mapping[str, str]) -> Any:
    """The caller's trace context from ``traceparent``/``tracestate`` (W3C), for a server span."""
    from opentelemetry.propagate import extract

    return extract(headers)
