"""Correlation ids and the log lines that carry them (JSON for collectors, text for a terminal)."""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from engine import tracing

correlation: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="-")

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def correlation_id(headers: dict[str, str]) -> str:
    """The gateway's X-Request-ID, else the W3C trace id of traceparent, else a new id.

    An incoming id that could smuggle text into logs or headers (spaces, newlines, length)
    is replaced, not trusted.
    """
    given = headers.get("x-request-id")
    if given and _SAFE_ID.match(given):
        return given
    parent = headers.get("traceparent")
    if parent:
        match = _TRACEPARENT.match(parent.strip())
        if match:
            return match.group(1)
    return new_id()


# A new id is this process's random prefix and a counter: unique like a uuid4, a fifth of its cost.
_ID_PREFIX = ""
_id_counter = itertools.count()


def _seed_ids() -> None:
    global _ID_PREFIX, _id_counter
    _ID_PREFIX = os.urandom(8).hex()
    _id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


_seed_ids()
os.register_at_fork(after_in_child=_seed_ids)  # forked workers must not share a prefix


def new_id() -> str:
    """A 32-hex-digit id, unique across processes (random prefix) and requests (counter)."""
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


class CorrelationFilter(logging.Filter):
    """Puts the current request's correlation id (and trace id, when traced) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "correlation_id"):
            record.correlation_id = correlation.get()
        if tracing.ENABLED and not hasattr(record, "trace_id"):
            record.trace_id = tracing.current_trace_id()
        return True


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: each could start a
# forged line (or move a terminal's cursor) in a text log.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``), so that a
    logged value stays on its own line: a request's path or body cannot forge a log line."""
    return _CONTROLS.sub(_escape_control, text) if _CONTROLS.search(text) else text


class _SecondCache:
    """A time format's text up to the second, made again only when the second changes: the
    request line made ``time.strftime`` once per request (a few µs each)."""

    __slots__ = ("second", "text")

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def get(self, created: float, make: Callable[[int], str]) -> str:
        second = int(created)
        if second != self.second:
            self.text = make(second)
            self.second = second
        return self.text


class TextFormatter(logging.Formatter):
    """The text log format, one line per record: control characters in the message (which
    holds request values) are escaped, and so are a traceback's and a stack's, which follow the
    message on the same line (``\\n`` between their lines): an exception's message can carry
    request data too, and a reader splitting the log on newlines must never see a forged line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seconds = _SecondCache()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None or self.default_msec_format is None:
            return super().formatTime(record, datefmt)
        # the default format (the local time, then ",mmm"), made once a second
        text = self._seconds.get(record.created,
                                 lambda second: time.strftime(self.default_time_format, self.converter(second)))
        return self.default_msec_format % (text, record.msecs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)  # message, then "\n" + traceback, then "\n" + stack
        if not record.exc_text and not record.stack_info:
            return line
        head = self.formatMessage(record)  # already escaped; what follows it is not
        return head + escape_controls(line[len(head):]) if line.startswith(head) else escape_controls(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, as Fluent Bit's and Fluentd's json parsers read it.

    Keys: ``time`` (RFC 3339, UTC, milliseconds: ``deploy/logging/fluent-bit-parsers.conf``
    parses it), ``level``, ``logger``, ``pid`` (the worker), ``message``, ``correlation_id``, ``trace_id`` when the
    request is traced, ``flow`` when a flow wrote it, ``exception`` for errors, and whatever
    structured ``fields`` the record carries (the request line: route, status, duration...).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seconds = _SecondCache()

    def format(self, record: logging.LogRecord) -> str:
        second = self._seconds.get(record.created, lambda s: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)))
        entry: dict[str, Any] = {
            "time": f"{second}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "correlation_id": getattr(record, "correlation_id", "-"),
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            entry["trace_id"] = trace_id
        flow = getattr(record, "flow", None)
        if flow:
            entry["flow"] = flow
        fields = getattr(record, "fields", None)
        if fields:
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()  # a third of json.dumps' cost per line


def parse_levels(text: str) -> dict[str, str]:
    """``interlace.request=warning,interlace.http=debug`` as {logger: level}; a clear error otherwise."""
    levels: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, level = part.partition("=")
        if not sep or not name.strip() or level.strip().upper() not in logging.getLevelNamesMapping():
            raise ValueError(f"log level {part!r}: write LOGGER=LEVEL (debug, info, warning, error), "
                             f"e.g. interlace.request=warning")
        levels[name.strip()] = level.strip().upper()
    return levels


def setup_logging(level: str = "info", fmt: str = "text", levels: dict[str, str] | None = None) -> None:
    """Logging to standard error: ``fmt`` json (one object per line) or text (for a terminal);
    ``levels`` per logger on top of the root ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CorrelationFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s [%(correlation_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # start-up lines: the engine logs its own
    # the HTTP client logs every request at INFO: the flows' own log lines say what matters
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name, value in (levels or {}).items():
        logging.getLogger(name).setLevel(value)
