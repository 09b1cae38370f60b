"""Correlation ids and the log lines that carry them (JSON for collectors, text for a terminal)."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import os
import re
import sys
import time
import weakref
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
    return _ID_PREFIX + (next(_id_counter) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big").hex()  # a third of :016x


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
    if text.isprintable():  # no control character (each is unprintable): half the regex's cost
        return text
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


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(correlation_id)s] %(message)s"
REQUEST_MESSAGE = "%s %s %d %.1f ms"  # the request line's message: method, path, status, duration
# "%03d" of the milliseconds, made once, for the text request line
_MILLISECONDS = [f"{ms:03d}" for ms in range(1000)]


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

    def request_line(self, name: str, created: float, cid: str, args: tuple[Any, ...],
                     fields: Callable[..., dict[str, Any]], fields_args: tuple[Any, ...] = ()) -> str | None:
        """The request line as ``format`` would write its record, made without one; None when
        this formatter is not the engine's default text format (then the record is made).
        ``fields(*fields_args)`` are the structured fields, which this format does not write."""
        if self._fmt != TEXT_FORMAT or self.datefmt is not None or type(self) is not TextFormatter \
                or self.default_msec_format != "%s,%03d" or self.converter is not time.localtime:
            return None
        # _SecondCache.get written out and the milliseconds from a table: the call, its bound method
        # and the "%03d" cost more than the rest of the line (the same text, character for character)
        seconds = self._seconds
        second = int(created)
        if second != seconds.second:
            seconds.text = self._local_second(second)
            seconds.second = second
        msecs = int((created - second) * 1000)
        milliseconds = _MILLISECONDS[msecs] if 0 <= msecs < 1000 else f"{msecs:03d}"
        message = REQUEST_MESSAGE % args
        if not message.isprintable():  # escape_controls' own first test, without its call
            message = escape_controls(message)
        return f"{seconds.text},{milliseconds} INFO    {name} [{cid}] {message}"

    def _local_second(self, second: int) -> str:
        return time.strftime(self.default_time_format, time.localtime(second))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)  # message, then "\n" + traceback, then "\n" + stack
        if not record.exc_text and not record.stack_info:
            return line
        head = self.formatMessage(record)  # already escaped; what follows it is not
        return head + escape_controls(line[len(head):]) if line.startswith(head) else escape_controls(line)


def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


_PID = [os.getpid()]  # this process's id for the JSON request line, again in a forked worker
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


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
        second = self._seconds.get(record.created, _utc_second)
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

    def request_line(self, name: str, created: float, cid: str, args: tuple[Any, ...],
                     fields: Callable[..., dict[str, Any]], fields_args: tuple[Any, ...] = ()) -> str | None:
        """The request line as ``format`` would write its record (``fields(*fields_args)``: its
        structured fields), made without one."""
        if type(self) is not JsonFormatter:
            return None
        second = self._seconds.get(created, _utc_second)
        entry: dict[str, Any] = {
            "time": f"{second}.{int((created - int(created)) * 1000):03d}Z",
            "level": "info",
            "logger": name,
            "pid": _PID[0] if logging.logProcesses else None,  # os.getpid() is a system call
            "correlation_id": cid,
            "message": REQUEST_MESSAGE % args,
        }
        # the request's trace id comes with its fields (its span is no longer current here)
        for key, value in fields(*fields_args).items():
            entry.setdefault(key, value)
        return orjson.dumps(entry, default=str).decode()


class EngineHandler(logging.StreamHandler):
    """The engine's handler (standard error, set up by ``setup_logging``).

    When it is the only handler a request line would reach (no user handler, no filter on the
    way: ``direct_handler``), the front hands it the line's values and it formats them itself
    (``request_line``), with no ``LogRecord`` and no walk through ``Logger.handle``; the lines
    of one turn of the event loop are written together at its end, one write instead of one per
    request.  Any record that does go through ``logging`` writes the lines waiting before it,
    so the log stays in order; ``flush()`` (at exit, ``logging.shutdown``) writes them too.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.correlation = CorrelationFilter()
        self.addFilter(self.correlation)
        self._waiting: list[str] = []

    def request_line(self, name: str, created: float, cid: str, args: tuple[Any, ...],
                     fields: Callable[..., dict[str, Any]], fields_args: tuple[Any, ...] = ()) -> bool:
        """Write the request line (made by the formatter's ``request_line``); False when the
        formatter cannot make it (the caller then logs a record)."""
        formatter = self.formatter
        make = getattr(formatter, "request_line", None)
        line = make(name, created, cid, args, fields, fields_args) if make is not None else None
        if line is None:
            return False
        waiting = self._waiting
        waiting.append(line)
        if len(waiting) == 1:
            try:
                asyncio.get_running_loop().call_soon(self._write_waiting)
            except RuntimeError:  # no event loop: now
                self._write_waiting()
        return True

    def _write_waiting(self) -> None:
        waiting = self._waiting
        if not waiting:
            return
        text = self.terminator.join(waiting) + self.terminator
        waiting.clear()
        self.acquire()
        try:
            self.stream.write(text)
            self.flush_stream()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "request lines", "levelno": logging.ERROR}))
        finally:
            self.release()

    def flush_stream(self) -> None:
        stream = self.stream
        if stream and hasattr(stream, "flush"):
            stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        if self._waiting:
            self._write_waiting()
        super().emit(record)

    def flush(self) -> None:
        if self._waiting:
            self._write_waiting()
        super().flush()

    def forget_waiting(self) -> None:
        """In a forked child: the parent's waiting lines are the parent's to write."""
        self._waiting.clear()


def direct_handler(logger: logging.Logger) -> EngineHandler | None:
    """The engine's handler when it is the only one a record of ``logger`` at INFO reaches, and
    nothing on the way could filter or change the record (a filter on the logger, one on the
    handler besides the engine's own); None otherwise (a user's handler, pytest's caplog)."""
    if logger.filters:
        return None
    found: EngineHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None or type(handler) is not EngineHandler:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if found is None or found.level > logging.INFO:
        return None
    filters = found.filters
    if len(filters) != 1 or filters[0] is not found.correlation:  # != [found.correlation], without a list
        return None
    return found


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
    handler = EngineHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(TEXT_FORMAT))
    _HANDLERS.add(handler)
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


_HANDLERS: weakref.WeakSet[EngineHandler] = weakref.WeakSet()


def _after_fork() -> None:
    for handler in _HANDLERS:
        handler.forget_waiting()


os.register_at_fork(after_in_child=_after_fork)
