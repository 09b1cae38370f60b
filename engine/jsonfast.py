"""The engine's JSON codec, with errors a caller can act on.

orjson, chosen by measurement (``benchmarks/codecs.py``, docs/performance.md): loads + dumps of
the benchmark's bodies take 4-6x less time than with the standard library (1 KiB: 8 us against
47 us; 100 KiB: 0.74 ms against 3.2 ms).

What ``loads`` accepts and refuses:

* Refused, as MalformedBody (400) with line and column: syntax errors, an empty body, invalid
  UTF-8, lone UTF-16 surrogate escapes, ``NaN``/``Infinity`` and numbers too large for a double,
  and nesting deeper than 1024 arrays or objects (orjson stops there without recursing, so a
  hostile ``[[[[...`` a million deep costs microseconds and never a RecursionError).
* Accepted: a UTF-8 byte order mark (RFC 8259 lets a parser ignore it; some clients send one).
* Integers beyond the 64-bit range are read as floats (as JavaScript does), so such an
  identifier loses digits: send it as a string.

``dumps`` writes compact UTF-8 (no spaces, non-ASCII as is). orjson itself stops at 254 levels,
at integers beyond 64 bits and at non-string keys; a value it cannot write (e.g. a 1000-deep
document that ``loads`` accepted, or a big integer computed by a flow) is written by a slower
iterative encoder instead, so anything the engine read it can write back. Keys that are not
strings are written as their text (``3`` -> ``"3"``, ``None`` -> ``"null"``); bytes as UTF-8
text, sets as arrays, other objects as their ``str()``. A value that contains itself is a
FlowError (500), never a hang.
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.errors import FlowError, MalformedBody

# non-string keys are rare; OPT_NON_STR_KEYS would slow every dump by ~1 us, so they go to the
# iterative encoder instead
_KEY_OPTIONS = orjson.OPT_NON_STR_KEYS
_UTF8_BOM = b"\xef\xbb\xbf"


def loads(data: bytes | str) -> Any:
    """Parse a JSON body; anything malformed is MalformedBody with the line, column and reason."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if isinstance(data, bytes) and data.startswith(_UTF8_BOM):  # checked here: costs nothing on good bodies
            return loads(data[3:])
        line, column, reason = _locate(exc, data)
        raise MalformedBody(f"malformed JSON at line {line}, column {column}: {reason}",
                            extra={"line": line, "column": column}) from None


def dumps(value: Any) -> bytes:
    """Compact JSON bytes of any value the engine holds (see the module notes)."""
    try:
        return orjson.dumps(value, default=_fallback)
    except orjson.JSONEncodeError:
        return _dumps_iteratively(value)


# orjson's wording, made to say what the sender should change
_REWORDED = {
    "depth limit exceeded": "arrays and objects nested deeper than 1024 levels",
    "input data is empty": "the body is empty",
    "Input is a zero-length, empty document": "the body is empty",
}


def _locate(exc: orjson.JSONDecodeError, data: bytes | str) -> tuple[int, int, str]:
    """Line, column (both from 1) and reason of a decoding error."""
    if exc.msg.startswith("str is not valid UTF-8"):
        # orjson gives no position for this one: find the first bad byte (error path only)
        raw = data if isinstance(data, bytes) else data.encode("utf-8", errors="surrogatepass")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            before = raw[:bad.start]
            line = before.count(b"\n") + 1
            column = len(before) - (before.rfind(b"\n") + 1) + 1
            return line, column, f"invalid UTF-8 (byte 0x{raw[bad.start]:02x} at offset {bad.start})"
        return exc.lineno, exc.colno, "invalid UTF-8"
    text = exc.doc or ""
    # orjson stops at the "I" of "-Infinity" (after the sign), at the first letter otherwise
    for constant, start in (("-Infinity", exc.pos - 1), ("NaN", exc.pos), ("Infinity", exc.pos)):
        if start >= 0 and text.startswith(constant, start):
            return exc.lineno, exc.colno, f"{constant} is not a JSON value (JSON has no NaN or Infinity)"
    return exc.lineno, exc.colno, _REWORDED.get(exc.msg, exc.msg)


def _fallback(value: Any) -> Any:
    # values a flow can hold that JSON has no type for: written as the nearest JSON value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, (set, frozenset)):
        return list(value)
    return str(value)


class _Literal(bytes):
    """Output bytes queued on the encoder's stack, as opposed to a value still to encode."""


class _Leave:
    """Marks the end of a container on the encoder's stack (for the cycle check)."""

    __slots__ = ("ident",)

    def __init__(self, ident: int) -> None:
        self.ident = ident


_OPEN_ARRAY, _CLOSE_ARRAY = _Literal(b"["), _Literal(b"]")
_OPEN_OBJECT, _CLOSE_OBJECT = _Literal(b"{"), _Literal(b"}")
_CONTAINERS = (dict, list, tuple)


def _key(key: Any) -> bytes:
    # the same key text as orjson's OPT_NON_STR_KEYS
    if isinstance(key, str):
        text = key
    elif isinstance(key, bool) or key is None:
        text = "true" if key is True else "false" if key is False else "null"
    else:
        text = str(key)
    return orjson.dumps(text)


def _leaf(value: Any) -> bytes:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()  # exact at any size: a Python int prints as a JSON number
    try:
        return orjson.dumps(value, default=_fallback, option=_KEY_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise FlowError("the payload cannot be written as JSON", internal=f"{type(value).__name__}: {exc}") from None


def _dumps_iteratively(value: Any) -> bytes:
    """A JSON encoder with an explicit stack: any depth, any integer; refuses cycles."""
    out: list[bytes] = []
    stack: list[Any] = [value]
    open_containers: set[int] = set()  # ids of the containers being written: a repeat is a cycle
    while stack:
        item = stack.pop()
        if type(item) is _Literal:
            out.append(item)
        elif type(item) is _Leave:
            open_containers.discard(item.ident)
        elif isinstance(item, _CONTAINERS):
            if id(item) in open_containers:
                raise FlowError("the payload cannot be written as JSON: it contains itself")
            open_containers.add(id(item))
            stack.append(_Leave(id(item)))
            if isinstance(item, dict):
                out.append(_OPEN_OBJECT)
                stack.append(_CLOSE_OBJECT)
                entries = list(item.items())
                for index in range(len(entries) - 1, -1, -1):
                    key, child = entries[index]
                    stack.append(child)
                    stack.append(_Literal((b"," if index else b"") + _key(key) + b":"))
            else:
                out.append(_OPEN_ARRAY)
                stack.append(_CLOSE_ARRAY)
                for index in range(len(item) - 1, -1, -1):
                    stack.append(item[index])
                    if index:
                        stack.append(_Literal(b","))
        else:
            out.append(_leaf(item))
    return b"".join(out)
