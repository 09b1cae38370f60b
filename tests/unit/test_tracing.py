"""The engine's sampling decisions are the SDK's, for every built-in OTEL_TRACES_SAMPLER."""

from __future__ import annotations

import random

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from engine import tracing

SAMPLERS = ["always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio"]


@pytest.mark.parametrize("name", SAMPLERS)
def test_fast_decisions_match_the_sdks_sampler(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.3")
    sdk = TracerProvider().sampler
    fast = tracing._fast_sampler({"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": "0.3"})
    assert fast is not None
    monkeypatch.setattr(tracing, "_fast", fast)
    chooser = random.Random(7)
    for _ in range(300):
        trace_id = chooser.getrandbits(128) or 1
        parent = None if chooser.random() < 0.4 else (chooser.getrandbits(64) or 1, chooser.random() < 0.5)
        context = None
        if parent is not None:
            flags = TraceFlags(TraceFlags.SAMPLED if parent[1] else 0)
            context = trace.set_span_in_context(NonRecordingSpan(SpanContext(trace_id, parent[0], True, flags)))
        expected = sdk.should_sample(context, trace_id, "GET /x", SpanKind.SERVER, {}).decision.is_sampled()
        assert tracing._should_sample(trace_id, parent, "GET /x", {}) == expected


def test_a_span_carries_its_context_to_backends() -> None:
    span = tracing.Span("GET", tracing.CLIENT, 0x4BF92F3577B34DA6A3CE929D0E0E4736, 1, True, {}, "gw=1")
    headers = tracing.propagate(span, [("traceparent", "00-old-old-01"), ("accept", "*/*")])
    parent = f"00-4bf92f3577b34da6a3ce929d0e0e4736-{span.span_id:016x}-01"
    assert headers == [("accept", "*/*"), ("traceparent", parent), ("tracestate", "gw=1")]
