"""The export process of a worker's spans: ``python -m engine.span_export``, started by
engine/tracing.py with the worker's environment.

It reads batches of finished spans from standard input (a 4-byte length, then a pickle of span
tuples, written by the worker's export thread), builds the SDK's ``ReadableSpan`` of each and
sends them with the SDK's exporter chosen by ``OTEL_TRACES_EXPORTER`` and
``OTEL_EXPORTER_OTLP_PROTOCOL`` (OTLP over HTTP/protobuf or gRPC, or the console), which reads
its endpoint, headers, timeout, compression and certificates from the ``OTEL_EXPORTER_OTLP_*``
variables and retries as the OTLP specification says.  End of input: the last batch is sent
and the process exits.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
from typing import Any, BinaryIO

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from engine.tracing import exporters, protocol

SCOPE = InstrumentationScope("interlace")
KINDS = {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT}
STATUS = {0: StatusCode.UNSET, 1: StatusCode.OK, 2: StatusCode.ERROR}


def build_exporters() -> list[SpanExporter]:
    chosen: list[SpanExporter] = []
    for name in exporters(os.environ):
        if name == "console":
            chosen.append(ConsoleSpanExporter())
        elif protocol(os.environ) == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            chosen.append(GrpcExporter())
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            chosen.append(HttpExporter())
    return chosen


def readable(span: tuple[Any, ...], resource: Resource) -> ReadableSpan:
    name, kind, trace_id, span_id, parent_id, trace_state, start, end, attributes, status, message = span
    state = TraceState.from_header([trace_state]) if trace_state else TraceState()
    flags = TraceFlags(TraceFlags.SAMPLED)
    parent = SpanContext(trace_id, parent_id, is_remote=kind == 2, trace_flags=flags, trace_state=state) \
        if parent_id else None
    return ReadableSpan(
        name=name, context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags, trace_state=state),
        parent=parent, resource=resource, attributes=attributes, kind=KINDS.get(kind, SpanKind.INTERNAL),
        status=Status(STATUS[status], message or None) if status == 2 else Status(STATUS[status]),
        start_time=start, end_time=end, instrumentation_scope=SCOPE)


def read_batches(stream: BinaryIO) -> Any:
    while True:
        head = stream.read(4)
        if len(head) < 4:
            return
        (size,) = struct.unpack(">I", head)
        yield pickle.loads(stream.read(size))


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when this ends: at end of input
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or "interlace"})
    chosen = build_exporters()
    for batch in read_batches(sys.stdin.buffer):
        spans = [readable(span, resource) for span in batch]
        for exporter in chosen:
            exporter.export(spans)
    for exporter in chosen:
        exporter.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
