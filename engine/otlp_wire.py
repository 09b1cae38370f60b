"""OTLP's trace request (``ExportTraceServiceRequest``) written straight from the worker's span
tuples, in protobuf's wire format: what engine/span_export.py sends.

Why by hand: measured in the export path, the SDK's way (a ``ReadableSpan`` per span, then
its encoder) took ~70 µs a span on the shared benchmark machine, more than the whole request it
describes; these few functions take ~5 µs (~22,000 instructions, callgrind), and the attributes a
step or route shares (one dict object) are encoded once per batch.  The output is what the SDK's
encoder writes for the same span, field for field (tests/unit/test_tracing.py decodes both with
opentelemetry-proto and compares them).

Field numbers are opentelemetry-proto's (trace/v1/trace.proto, common/v1/common.proto).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
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
# so do these strings (a call's URL, a route's path): each pair encoded once; others (a
# correlation id) are new on every span
_REPEATING = frozenset({"url.full", "url.path"})
_PAIRS: dict[tuple[str, str], bytes] = {}


def _own(values: Mapping[str, Any]) -> bytes:
    """A span's own attributes.  A string's ``KeyValue`` is written as one join of its parts, the
    lengths worked out from the text's (the usual value: a URL, a path, a correlation id)."""
    out: list[bytes] = []
    short = _SHORT
    for key, value in values.items():
        if type(value) is str:
            if key in _REPEATING:
                pair = _PAIRS.get((key, value))
                if pair is None:
                    if len(_PAIRS) > 4096:
                        _PAIRS.clear()
                    pair = _PAIRS[(key, value)] = attributes({key: value})
                out.append(pair)
                continue
            text = value.encode("utf-8", "replace")
            n = len(text)
            if n < 16000:
                k = _KEYS.get(key) or _remembered(_KEYS, b"\x0a", key)
                any_length = n + 1 + len(short[n])  # AnyValue: string_value 1
                pair_length = len(k) + any_length + 1 + len(short[any_length])  # KeyValue: key 1, value 2
                out += (b"\x4a", short[pair_length] if pair_length < 16384 else _varint(pair_length), k, b"\x12",
                        short[any_length], b"\x0a", short[n], text)
                continue
            out.append(attributes({key: value}))
        elif type(value) is int:
            pair = _NUMBERS.get((key, value))
            if pair is None:
                if len(_NUMBERS) > 4096:
                    _NUMBERS.clear()
                pair = _NUMBERS[(key, value)] = attributes({key: value})
            out.append(pair)
        elif value is not None:
            out.append(attributes({key: value}))
    return b"".join(out)


_TIMES = struct.Struct("<BQBQ").pack  # start_time_unix_nano 7 and end_time_unix_nano 8, both fixed64
_SPAN_ID = struct.Struct(">HQ").pack  # the tag and length of span_id 2 (0x12 0x08), then the id, big-endian
_PARENT_ID = struct.Struct(">HQ").pack  # parent_span_id 4 (0x22 0x08)
_IDS = struct.Struct(">HQHQ").pack  # span_id and parent_span_id together (no trace_state between them)
_STATUS = {0: b"\x7a\x00", 1: b"\x7a\x02\x18\x01", 2: b"\x7a\x02\x18\x02"}  # Status, without a message
# (name, kind) -> name 5 and kind 6, encoded once: a flow's routes and step kinds, a small set
_NAME_KIND: dict[tuple[str, int], bytes] = {}
# (status, remote parent) -> the span's last fields: status 15 without a message, then flags 16
_TAILS = {(status, remote): _STATUS[status] + (_REMOTE_PARENT if remote else _LOCAL_PARENT)
          for status in _STATUS for remote in (False, True)}


def _name_kind(name: str, kind: int) -> bytes:
    if len(_NAME_KIND) > 4096:
        _NAME_KIND.clear()
    encoded = _NAME_KIND[(name, kind)] = _text(b"\x2a", name) + b"\x30" + _SHORT[kind]
    return encoded


def span(record: tuple[Any, ...], shared: bytes) -> bytes:
    """One ``Span`` from a span tuple (name, kind, trace id, span id, parent id, trace state, start,
    end, shared attributes, own attributes, status, status message); ``shared``: its shared
    attributes, already encoded.  Fields in the order of their numbers, as the SDK writes them.
    (The request path encodes its spans itself, engine/tracing.py ``Span.end``: the same fields.)"""
    name, kind, trace_id, span_id, parent_id, trace_state, start, end, _, own, status, message = record
    if trace_state:
        ids = _SPAN_ID(0x1208, span_id) + _text(b"\x1a", trace_state)
        if parent_id:
            ids += _PARENT_ID(0x2208, parent_id)
    elif parent_id:
        ids = _IDS(0x1208, span_id, 0x2208, parent_id)
    else:
        ids = _SPAN_ID(0x1208, span_id)
    if status == 2 and message:
        tail = (status_with(message)
                + (_REMOTE_PARENT if parent_id and kind in _REMOTE_KINDS else _LOCAL_PARENT))
    else:
        tail = _TAILS[(status, bool(parent_id) and kind in _REMOTE_KINDS)]
    return b"".join((b"\x0a\x10", bytes.fromhex(trace_id), ids, _NAME_KIND.get((name, kind)) or _name_kind(name, kind),
                     _TIMES(0x39, start, 0x41, end), shared, _own(own) if own else b"", tail))


# -- what engine/tracing.py's spans encode themselves with ------------------------------------------
# A span's fields may come in any order (protobuf merges them; repeated ones keep their order):
# a request's span is written as [trace id and state][span and parent ids][name, kind and shared
# attributes][times][own attributes][status][flags], the first and third made once per trace and
# per route or endpoint, so that ending a span is one join of a few ready byte strings.

STATUS_FIELDS = (b"\x7a\x00", b"\x7a\x02\x18\x01", b"\x7a\x02\x18\x02")  # UNSET, OK, ERROR without a message
SPAN_ID = _SPAN_ID
IDS = _IDS
TIMES = _TIMES
LOCAL_PARENT = _LOCAL_PARENT
REMOTE_PARENT = _REMOTE_PARENT
REMOTE_KINDS = _REMOTE_KINDS


def trace_field(trace: bytes, trace_state: str) -> bytes:
    """trace_id 1 (16 bytes) and, when there is one, trace_state 3: what every span of a trace shares."""
    return b"\x0a\x10" + trace + (_text(b"\x1a", trace_state) if trace_state else b"")


def status_with(message: str) -> bytes:
    """status 15: ERROR with its message."""
    return _delimited(b"\x7a", _text(b"\x12", message) + b"\x18\x02")


def head(name: str, kind: int, shared: Mapping[str, Any]) -> bytes:
    """name 5, kind 6 and the shared attributes 9: what every span of a route or endpoint has alike."""
    return _text(b"\x2a", name) + b"\x30" + _SHORT[kind] + attributes(shared)


# (name, kind, id of the shared attributes) -> (those attributes, their head): the head of a span
# whose maker did not give it one
_HEADS: dict[tuple[str, int, int], tuple[Mapping[str, Any], bytes]] = {}


def head_of(name: str, kind: int, shared: Mapping[str, Any]) -> bytes:
    key = (name, kind, id(shared))
    found = _HEADS.get(key)
    if found is None or found[0] is not shared:  # the id of attributes gone (a reload), reused
        if len(_HEADS) > 4096:
            _HEADS.clear()
        found = _HEADS[key] = (shared, head(name, kind, shared))
    return found[1]


def own(values: Mapping[str, Any]) -> bytes:
    """Attributes 9 of one span alone."""
    return _own(values)


def pair(key: str, value: Any) -> bytes:
    """One attribute (``KeyValue``, Span.attributes 9), encoded."""
    return attributes({key: value})


CODES: dict[int, bytes] = {}  # http.response.status_code -> its attribute, encoded


def status_code(code: int) -> bytes:
    """``http.response.status_code``, encoded once per status."""
    found = CODES.get(code)
    if found is None:
        if len(CODES) > 1024:
            CODES.clear()
        found = CODES[code] = attributes({"http.response.status_code": code})
    return found


# the key part of a string attribute of each length: tag 9, the pair's length, the key, value 2's
# tag and length, AnyValue's string 1 tag and length; the text follows
_STRING_PREFIXES: dict[tuple[str, int], bytes] = {}


def string_prefix(key: str, n: int) -> bytes:
    """What comes before an ``n``-byte string value of attribute ``key`` (n < 16000)."""
    found = _STRING_PREFIXES.get((key, n))
    if found is None:
        if len(_STRING_PREFIXES) > 4096:
            _STRING_PREFIXES.clear()
        k = _KEYS.get(key) or _remembered(_KEYS, b"\x0a", key)
        any_length = n + 1 + len(_SHORT[n])
        pair_length = len(k) + any_length + 1 + len(_SHORT[any_length])
        found = _STRING_PREFIXES[(key, n)] = b"".join((b"\x4a", varint(pair_length), k, b"\x12", _SHORT[any_length],
                                                       b"\x0a", _SHORT[n]))
    return found


def resource_and_scope(resource: Mapping[str, Any], scope: str) -> tuple[bytes, bytes]:
    """The encoded ``Resource`` (ResourceSpans field 1) and ``InstrumentationScope`` (ScopeSpans field 1)."""
    return _delimited(b"\x0a", attributes(resource, b"\x0a")), _delimited(b"\x0a", _text(b"\x0a", scope))


SHORT = _SHORT


def request(head: tuple[bytes, bytes], records: Sequence[bytes | tuple[Any, ...]]) -> bytes:
    """The ``ExportTraceServiceRequest`` of one batch: one resource, one scope, every span: the
    pieces engine/tracing.py ``Span.end`` leaves (each span framed as ScopeSpans.spans already),
    or span tuples as ``span`` takes them."""
    resource, scope = head
    if records and not isinstance(records[0], tuple):
        # the spans joined first, their length read once: summing the pieces' lengths one by one
        # took 2.5 times what the second copy of the batch's bytes takes (callgrind)
        joined = b"".join(records)  # type: ignore[arg-type]
        scope_length = len(scope) + len(joined)
        resource_length = len(resource) + 1 + len(varint(scope_length)) + scope_length
        return b"".join((b"\x0a", varint(resource_length), resource, b"\x12", varint(scope_length), scope, joined))
    memo: dict[int, bytes] = {}  # id of a shared attribute dict -> its encoding, for this batch
    spans = [scope]
    short = _SHORT
    for record in records:
        assert isinstance(record, tuple)
        shared = record[8]
        encoded = memo.get(id(shared))
        if encoded is None:
            encoded = memo[id(shared)] = attributes(shared)
        one = span(record, encoded)
        n = len(one)
        spans += (b"\x12", short[n] if n < 16384 else _varint(n), one)  # ScopeSpans.spans 2
    scope_spans = _delimited(b"\x12", b"".join(spans))
    return _delimited(b"\x0a", resource + scope_spans)
