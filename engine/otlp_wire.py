"""OTLP's trace request (``ExportTraceServiceRequest``) written straight from the worker's span
tuples, in protobuf's wire format: what engine/span_export.py sends.

Why by hand: measured in the export process, the SDK's way (a ``ReadableSpan`` per span, then
its encoder) took ~70 µs a span on the shared benchmark machine, more than the whole request it
describes; these few functions take ~10 µs, and the attributes a step or route shares (one dict
object, so pickled once per batch) are encoded once per batch.  The output is what the SDK's
encoder writes for the same span, field for field (tests/unit/test_tracing.py decodes both with
opentelemetry-proto and compares them).

Field numbers are opentelemetry-proto's (trace/v1/trace.proto, common/v1/common.proto).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any

_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack
_FIXED32 = struct.Struct("<I").pack
# Span.flags: the SDK always says whether the parent is remote (HAS_IS_REMOTE), and it is
# remote for a server or consumer span continuing a caller's traceparent (IS_REMOTE)
_LOCAL_PARENT = b"\x85\x01" + _FIXED32(0x100)
_REMOTE_PARENT = b"\x85\x01" + _FIXED32(0x300)
_REMOTE_KINDS = frozenset({2, 5})  # SERVER, CONSUMER


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# every varint of one or two bytes, made once: lengths and small numbers are nearly all of them
_SHORT = tuple(_varint(n) for n in range(1 << 14))


def varint(n: int) -> bytes:
    return _SHORT[n] if n < 16384 else _varint(n)


def _delimited(tag: bytes, payload: bytes) -> bytes:
    n = len(payload)
    return tag + (_SHORT[n] if n < 16384 else _varint(n)) + payload


def _text(tag: bytes, value: str) -> bytes:
    return _delimited(tag, value.encode("utf-8", "replace"))


# attribute keys and span names come from a small set (the engine's own keys, the flows' routes
# and step kinds): each encoded once
_KEYS: dict[str, bytes] = {}
_NAMES: dict[str, bytes] = {}


def _remembered(cache: dict[str, bytes], tag: bytes, value: str) -> bytes:
    encoded = cache.get(value)
    if encoded is None:
        if len(cache) > 4096:
            cache.clear()
        encoded = cache[value] = _text(tag, value)
    return encoded


def any_value(value: Any) -> bytes:
    """An ``AnyValue``: string 1, bool 2, int 3, double 4, array 5 (the attribute types OTel allows)."""
    if isinstance(value, str):
        return _text(b"\x0a", value)
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + varint(value & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement in a varint
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, (list, tuple)):
        return _delimited(b"\x2a", b"".join(_delimited(b"\x0a", any_value(v)) for v in value))
    return _text(b"\x0a", str(value))


def attributes(values: Mapping[str, Any], tag: bytes = b"\x4a") -> bytes:
    """Each ``KeyValue`` of ``values`` as a repeated field (``tag``: Span.attributes 9 by default)."""
    keys = _KEYS
    return b"".join(_delimited(tag, (keys.get(key) or _remembered(keys, b"\x0a", key)) +
                               _delimited(b"\x12", any_value(value)))
                    for key, value in values.items() if value is not None)


# a span's own attributes that are numbers (status codes, attempts) repeat: each pair encoded once
_NUMBERS: dict[tuple[str, int], bytes] = {}


def _own(values: Mapping[str, Any]) -> bytes:
    out = []
    numbers, keys = _NUMBERS, _KEYS
    for key, value in values.items():
        if type(value) is int:
            pair = numbers.get((key, value))
            if pair is None:
                if len(numbers) > 4096:
                    numbers.clear()
                pair = numbers[(key, value)] = attributes({key: value})
            out.append(pair)
        elif type(value) is str:
            text = value.encode("utf-8", "replace")
            n = len(text)
            any_text = b"\x0a" + (_SHORT[n] if n < 16384 else _varint(n)) + text
            out.append(_delimited(b"\x4a", (keys.get(key) or _remembered(keys, b"\x0a", key)) +
                                  _delimited(b"\x12", any_text)))
        elif value is not None:
            out.append(attributes({key: value}))
    return b"".join(out)


_TIMES = struct.Struct("<BQBQ").pack  # start_time_unix_nano 7 and end_time_unix_nano 8, both fixed64
_STATUS = {0: b"\x7a\x00", 1: b"\x7a\x02\x18\x01", 2: b"\x7a\x02\x18\x02"}  # Status, without a message


def span(record: tuple[Any, ...], shared: bytes) -> bytes:
    """One ``Span`` from the worker's tuple (engine/tracing.py ``Span.end``); ``shared``: its shared
    attributes, already encoded."""
    name, kind, trace_id, span_id, parent_id, trace_state, start, end, _, own, status, message = record
    parts = [b"\x0a\x10", bytes.fromhex(trace_id), b"\x12\x08", span_id.to_bytes(8, "big")]
    if trace_state:
        parts.append(_text(b"\x1a", trace_state))
    if parent_id:
        parts += (b"\x22\x08", parent_id.to_bytes(8, "big"))
    parts += (_NAMES.get(name) or _remembered(_NAMES, b"\x2a", name), b"\x30", _SHORT[kind],
              _TIMES(0x39, start, 0x41, end), shared)
    if own:
        parts.append(_own(own))
    if status == 2 and message:
        parts.append(_delimited(b"\x7a", _text(b"\x12", message) + b"\x18\x02"))
    else:
        parts.append(_STATUS[status])
    parts.append(_REMOTE_PARENT if parent_id and kind in _REMOTE_KINDS else _LOCAL_PARENT)
    return b"".join(parts)


def resource_and_scope(resource: Mapping[str, Any], scope: str) -> tuple[bytes, bytes]:
    """The encoded ``Resource`` (ResourceSpans field 1) and ``InstrumentationScope`` (ScopeSpans field 1)."""
    return _delimited(b"\x0a", attributes(resource, b"\x0a")), _delimited(b"\x0a", _text(b"\x0a", scope))


def request(head: tuple[bytes, bytes], records: Iterable[tuple[Any, ...]]) -> bytes:
    """The ``ExportTraceServiceRequest`` of one batch: one resource, one scope, every span."""
    resource, scope = head
    memo: dict[int, bytes] = {}  # id of a shared attribute dict -> its encoding, for this batch
    spans = []
    for record in records:
        shared = record[8]
        encoded = memo.get(id(shared))
        if encoded is None:
            encoded = memo[id(shared)] = attributes(shared)
        spans.append(_delimited(b"\x12", span(record, encoded)))
    scope_spans = _delimited(b"\x12", scope + b"".join(spans))
    return _delimited(b"\x0a", resource + scope_spans)
