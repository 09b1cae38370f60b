"""The HTTP/1.1 connection, guarded: uvicorn's httptools protocol with limits on what a client
may make the engine hold before a request even reaches a flow.

uvicorn buffers a request head without bound (ten connections each sending a 50 MiB header
that never ends took the engine from 95 to 577 MiB) and keeps a connection that never sends
a byte open forever.  ``GuardedHttpToolsProtocol`` adds, per connection:

===========================  =========  ==============================================
limit                        default    past it
===========================  =========  ==============================================
``max_header_bytes``         32 KiB     431 problem+json, connection closed (request
                                        line and headers together, counted per read)
``max_headers``              100        431 problem+json, connection closed
``header_timeout``           10 s       408 problem+json, connection closed (from a
                                        request's first byte to the end of its headers)
``first_byte_timeout``       10 s       connection closed (a new connection that has
                                        sent nothing)
``max_connections``          4096       503 problem+json on the new connection, closed
===========================  =========  ==============================================

Between requests uvicorn's keep-alive timeout applies as before.  A request head that is not
HTTP (uvicorn's "Invalid HTTP request received." in text/plain) is a 400 problem+json.  Every
refusal is counted in ``interlace_http_refused_total{listener, reason}`` and never logged above
DEBUG: a flood of bad requests must not become a flood of log lines.

On a TLS listener (``protocol_class(..., tls=True)``) each connection's client certificate is
read once, when the handshake ends, and every request of the connection carries it in
``scope["extensions"]["tls"]`` (engine/tls.py); on a plain listener nothing of it runs.  With
OCSP checks (engine/ocsp.py) the certificate's verdict is taken then too: a cached one at once,
else the connection's reading waits for the lookup (its first-byte timeout starts after it).
A refused certificate's connection answers its first request with the refusal's problem+json
and closes; nothing of it is parsed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from engine import metrics
from engine.errors import PROBLEM_BASE
from engine.ocsp import Refusal
from engine.tls import TLS_KEY, FacadeContext, connection_peer

log = logging.getLogger("interlace.http.guard")

DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_FIRST_BYTE_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 4096


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    first_byte_timeout: float = DEFAULT_FIRST_BYTE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS


CLIENT_KEY = "interlace.client"  # scope["extensions"] key: the request's uvicorn cycle


def client_gone(scope: MutableMapping[str, Any]) -> bool:
    """Whether the client of this request has closed its connection (served by this protocol)."""
    cycle = scope.get("extensions", {}).get(CLIENT_KEY)
    return bool(cycle is not None and cycle.disconnected)


def response_started(scope: MutableMapping[str, Any]) -> bool | None:
    """Whether the answer's headers went out; None when the server is not this protocol."""
    cycle = scope.get("extensions", {}).get(CLIENT_KEY)
    return None if cycle is None else bool(cycle.response_started)


def abort(scope: MutableMapping[str, Any]) -> bool:
    """Close the request's connection now, without uvicorn logging the unfinished answer (the
    client sees a truncated answer, never a complete-looking one); False when not served here."""
    cycle = scope.get("extensions", {}).get(CLIENT_KEY)
    if cycle is None:
        return False
    cycle.transport.close()
    cycle.disconnected = True
    return True


def cycle_of(scope: MutableMapping[str, Any], send: Any) -> Any:
    """The request's uvicorn cycle when ``send`` is the cycle's own (nothing between the app and
    this protocol wraps it, such as a middleware watching the answer); else None."""
    cycle = scope.get("extensions", _NO_EXTENSIONS).get(CLIENT_KEY)
    return cycle if cycle is not None and getattr(send, "__self__", None) is cycle else None


_NO_EXTENSIONS: dict[str, Any] = {}
_BIG_BODY = 64 * 1024  # from this size the body goes out beside the head, not copied into one buffer


def take_body(receive: Any) -> bytes | None:
    """The request's body when ``receive`` is the engine's server's own (a uvicorn cycle's) and
    the whole body has arrived: what ``receive()`` would answer, taken without its coroutine
    and its event; None otherwise (then call ``receive()``)."""
    cycle = getattr(receive, "__self__", None)
    if type(cycle) is not RequestResponseCycle or cycle.more_body or cycle.disconnected \
            or cycle.response_complete or cycle.waiting_for_100_continue:
        return None
    body = bytes(cycle.body)
    cycle.body = bytearray()
    cycle.message_event.clear()
    if cycle.flow.read_paused:  # a body above uvicorn's high-water mark paused reading
        cycle.flow.resume_reading()
    return body


def write_answer(cycle: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """Write a whole answer (head and body) in one write to the client, as uvicorn's
    ``RequestResponseCycle.send`` would in two ASGI messages: its default headers (``date``)
    first, ``connection: close`` when the connection is not kept alive, no body for HEAD, then
    the cycle marked complete and uvicorn told (``on_response``: keep-alive, the next pipelined
    request).  ``headers`` must be lowercase names and values already checked for what cannot
    be sent (engine/front.py ``_header``), with a ``content-length`` of ``len(body)`` and no
    ``connection`` or ``transfer-encoding``.  False when the answer must go through ``send``
    (the client is gone, the transport asks the writer to wait, an access log is on, the
    answer has started): then nothing was written."""
    if cycle.response_started or cycle.disconnected or cycle.flow.write_paused or cycle.access_log:
        return False
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = False
    cycle.expected_content_length = 0
    transport = cycle.transport
    _write_whole(transport, status, cycle.default_headers, [header_lines(headers)], cycle.keep_alive,
                 b"" if cycle.scope["method"] == "HEAD" else body)
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        transport.close()
    cycle.on_response()
    return True


def header_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    """Header fields as uvicorn writes them: ``name: value`` and CRLF each."""
    content: list[bytes] = []
    for name, value in headers:
        content += (name, b": ", value, b"\r\n")
    return b"".join(content)


# the server's default headers (the date, refreshed by uvicorn each tick in a new list) and their lines
_DEFAULT_LINES: list[Any] = [None, b""]


def _write_whole(transport: asyncio.Transport, status: int, default_headers: list[tuple[bytes, bytes]],
                 lines: list[bytes], keep_alive: bool, body: bytes) -> None:
    """Head and body in one write, as uvicorn's send would write them in two: the status line, the
    default headers, ``lines`` (the answer's header lines, ``header_lines``), ``connection: close``
    when the connection is not kept alive."""
    defaults = _DEFAULT_LINES
    if defaults[0] is not default_headers:
        defaults[0], defaults[1] = default_headers, header_lines(default_headers)
    content = [STATUS_LINE[status], defaults[1], *lines, b"\r\n" if keep_alive else b"connection: close\r\n\r\n"]
    if not body:
        transport.write(b"".join(content))
    elif len(body) < _BIG_BODY:
        content.append(body)
        transport.write(b"".join(content))
    else:
        transport.writelines([b"".join(content), body])


# the fields the protocol itself reads
_READ_AT_HEAD_END = frozenset({b"expect", b"connection", b"transfer-encoding"})


def _head_size(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """A request head's size as sent: "METHOD target HTTP/1.1\\r\\n" (the method about as long as
    the version), "name: value\\r\\n" each."""
    size = 20 + len(url)
    for name, value in headers:
        size += len(name) + len(value) + 4
    return size


# the methods' names as the parser gives them, decoded once
_METHOD_NAMES = {name.encode("ascii"): name for name in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}

# the largest body a request answered in the protocol (below) waits for: past it the app reads the
# body as it comes (engine/front.py STREAM_THRESHOLD)
_QUICK_BODY = 256 * 1024


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a head that broke a limit."""


def problem_bytes(status: int, code: str, title: str, detail: str, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 answer with an RFC 9457 body, closing the connection."""
    body = json.dumps({"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail}).encode()
    return b"".join([
        STATUS_LINE[status], b"content-type: application/problem+json\r\n",
        b"retry-after: %d\r\n" % retry_after if retry_after is not None else b"",
        b"content-length: ", str(len(body)).encode(), b"\r\n", b"connection: close\r\n\r\n", body,
    ])


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``HttpLimits`` (see the module docstring).

    ``protocol_class(limits)`` makes the subclass uvicorn instantiates per connection."""

    limits: HttpLimits = HttpLimits()
    listener = "facade"
    tls = False  # the facade serves TLS: each connection's peer certificate goes to its requests
    _tls_extension: dict[str, Any] | None = None
    _tls_refusal: Refusal | None = None  # what OCSP says of its client certificate (engine/ocsp.py)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0
        self._header_count = 0  # a trailer's fields count on from the head's
        self._reading = 0  # the size of the read being parsed
        limits = self.limits  # a class attribute: read once here, not for every piece of every head
        self._max_headers = limits.max_headers
        self._max_header_bytes = limits.max_header_bytes
        self._refusal: tuple[int, str, str, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._got_bytes = False
        self._running: Any = None  # the cycle whose request the app is serving
        # the facade's answers without a task (engine/drain.py DrainGuard.quick_paths): a request whose
        # flow may answer it so waits here for its body, with no cycle, no task, no ASGI scope
        self._quick_paths: dict[bytes, Any] | None = getattr(self.app, "quick_paths", None)
        self._pending: tuple[Any, str, str, bytes] | None = None  # route, method, path, query
        self._pending_body: list[bytes] = []
        self._pending_size = 0
        self._connection_header = False  # the request's head has a Connection header

    def _count(self, reason: str) -> None:
        metrics.HTTP_REFUSED.labels(self.listener, reason).inc()

    # --- the connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._count("max-connections")
            log.debug("refused a connection: %d open (max_connections)", len(self.connections) - 1)
            transport.write(problem_bytes(503, "too-many-connections", "Too many connections",
                                          f"the engine holds its limit of {self.limits.max_connections} "
                                          "connections; retry shortly"))
            transport.close()
            return
        if self.tls and self._peer_checked(transport):
            return  # reading waits for the client certificate's OCSP answer
        self._arm(self.limits.first_byte_timeout, self._first_byte_timed_out)

    def _peer_checked(self, transport: asyncio.Transport) -> bool:
        """The handshake is done: read the client's certificate once per connection and take its
        OCSP verdict; True when the verdict is still to come (reading is paused until it does)."""
        ssl_object = transport.get_extra_info("ssl_object")
        self._tls_extension, peer = connection_peer(ssl_object)
        if peer is None:
            return False
        context = ssl_object.context
        checker = context.ocsp if isinstance(context, FacadeContext) else None
        if checker is None:
            return False
        verdict = checker.verdict(peer)
        if verdict is None or isinstance(verdict, Refusal):
            self._tls_refusal = verdict
            return False
        self.flow.pause_reading()
        verdict.add_done_callback(self._verdict_came)
        return True

    def _verdict_came(self, verdict: asyncio.Future[Refusal | None]) -> None:
        if self.transport.is_closing():
            return
        self._tls_refusal = verdict.result()
        self.flow.resume_reading()
        self._arm(self.limits.first_byte_timeout, self._first_byte_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        # uvicorn marks only the last request it parsed as disconnected; with pipelined requests
        # that is a queued one, and the one being served wrote to a closed transport (a
        # RuntimeError into the flow).  Every request of the connection learns the client left.
        running = self._running
        if running is not None and not running.response_complete:
            running.disconnected = True
            running.message_event.set()
        if self.pipeline:
            metrics.CLIENT_DISCONNECTS.labels("queued").inc(len(self.pipeline))
            for cycle, _ in self.pipeline:
                cycle.disconnected = True
            self.pipeline.clear()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        self._running = cycle
        if self.config.reset_contextvars:
            super()._start_asgi_task(cycle, app)
            return
        task = self.loop.create_task(cycle.run_asgi(app))  # uvicorn's, one frame less
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        if delay > 0:
            self._head_timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _first_byte_timed_out(self) -> None:
        self._head_timer = None
        if not self._got_bytes and not self.transport.is_closing():
            self._count("first-byte-timeout")
            self.transport.close()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._count("header-timeout")
            self._refuse(408, "header-timeout", "Request timeout",
                         f"the request's headers did not arrive within {self.limits.header_timeout:g} s")

    def _refuse(self, status: int, code: str, title: str, detail: str, retry_after: int | None = None) -> None:
        log.debug("refused a request head: %s", code)
        self._in_head = False
        self.transport.write(problem_bytes(status, code, title, detail, retry_after))
        self.transport.close()

    # --- reading --------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused already: nothing more is parsed or kept
        if not self._got_bytes:
            self._got_bytes = True
            self._disarm()
            refusal = self._tls_refusal
            if refusal is not None:  # its client certificate is refused (OCSP): so is every request
                self._count(refusal.code)
                self._refuse(refusal.status, refusal.code, refusal.title, refusal.detail, refusal.retry_after)
                return
        self._idle_since = None  # busy: the keep-alive timer, if it fires now, closes nothing
        self._reading = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                self._count("bad-request")
                self.send_400_response(str(exc) or "malformed request")
            return
        if self._in_head:
            # counted per read: the read that began this head may hold the end of the one before
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._too_large()
            elif self._head_timer is None:
                # a head still incomplete after the read it began in: its timeout runs from now
                # (that read came microseconds ago).  A head that came whole, as nearly every
                # one does, never arms a timer: no TimerHandle per request.
                self._arm(self.limits.header_timeout, self._head_timed_out)

    def _too_large(self) -> None:
        self._count("header-too-large")
        self._refuse(431, "header-too-large", "Request header fields too large",
                     f"the request line and headers exceed {self.limits.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        # uvicorn's (HttpToolsProtocol.on_message_begin) but the ASGI scope, made in _start_cycle
        # only for a request that goes to the app: one answered here (below) needs none
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._connection_header = False
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        if self._head_timer is not None:  # the header timeout is armed after the read, only if this
            self._disarm()                # head is still incomplete

    # on_url and on_header run for every piece of every request head: each does uvicorn's work
    # itself (HttpToolsProtocol.on_url, .on_header) rather than through super(), one frame less
    def on_url(self, url: bytes) -> None:
        url = self.url + url  # HttpToolsProtocol.on_url
        if len(url) > self._max_header_bytes:
            self._count("header-too-large")
            self._refusal = (414, "uri-too-long", "URI too long",
                             f"the request target exceeds {self.limits.max_header_bytes} bytes")
            raise _Refused
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        if self._in_head:  # as sent: lower-cased, sized and read at the head's end (on_headers_complete)
            headers.append((name, value))
            if len(headers) > self._max_headers:
                self._too_many_headers()
            return
        # a trailer field (after a chunked body): as uvicorn takes it, counted on from the head's
        self._header_count += 1
        if self._header_count > self._max_headers:
            self._too_many_headers()
        headers.append((name.lower(), value))

    def _too_many_headers(self) -> None:
        self._count("too-many-headers")
        self._refusal = (431, "too-many-headers", "Request header fields too large",
                         f"the request has more than {self.limits.max_headers} header fields")
        raise _Refused

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._disarm()
        # the head's fields lower-cased, as uvicorn's on_header makes them, in one loop rather than
        # in one call each
        url = self.url
        headers: list[tuple[bytes, bytes]] = []
        append = headers.append
        for name, value in self.headers:
            name = name.lower()
            if name in _READ_AT_HEAD_END:
                self._read_header(name, value)
            append((name, value))
        self.headers = headers
        self._header_count = len(headers)
        # the head is no larger than the reads it came in (the one that began it counted whole):
        # only past the limit is its own size needed, exact for a head that came whole in one read
        if self._head_bytes + self._reading > self._max_header_bytes and _head_size(url, headers) > \
                self._max_header_bytes:
            self._count("header-too-large")
            self._refusal = (431, "header-too-large", "Request header fields too large",
                             f"the request line and headers exceed {self.limits.max_header_bytes} bytes")
            raise _Refused
        paths = self._quick_paths
        if paths is not None:
            raw_path, _, query = url.partition(b"?")
            route = paths.get(raw_path)
            if route is not None and self._quick_request(route, query):
                return
        self._start_cycle()

    def _read_header(self, name: bytes, value: bytes) -> None:
        if name == b"expect":
            if value.lower() == b"100-continue":
                self.expect_100_continue = True
        elif name == b"connection":
            self._connection_header = True
        elif value.strip().lower() != b"chunked":
            # "gzip, chunked": the parser undoes the chunking only, and the app was handed the
            # still-coded bytes as the body; a coding not understood is a 501 (RFC 9112, 6.1)
            self._count("bad-transfer-encoding")
            self._refusal = (501, "transfer-coding-not-implemented", "Transfer coding not implemented",
                             "only the chunked transfer coding is understood here; send the body as it is, "
                             "with Content-Length or Transfer-Encoding: chunked (a Content-Encoding for gzip)")
            raise _Refused

    def _start_cycle(self) -> None:
        """uvicorn's ``HttpToolsProtocol.on_headers_complete``, done here (one frame less), with the
        request's own connection state in its scope for the app (client_gone, abort above)."""
        parser = self.parser
        scope = self.scope = {  # as uvicorn's on_message_begin makes it
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
        http_version = parser.get_http_version()
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root_path = self.root_path
        scope["path"] = root_path + path
        scope["raw_path"] = root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed_url.query or b""
        app = self.app
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        existing = self.cycle
        # positional, in RequestResponseCycle.__init__'s order: keywords cost a dict per call
        cycle = self.cycle = RequestResponseCycle(
            scope, self.transport, self.flow, self.logger, self.access_logger, self.access_log,
            self.server_state.default_headers, asyncio.Event(), self.expect_100_continue,
            http_version != "1.0" and parser.should_keep_alive(), self.on_response_complete)
        extensions: dict[str, Any] = {CLIENT_KEY: cycle}
        if self._tls_extension is not None:
            extensions[TLS_KEY] = self._tls_extension
        scope["extensions"] = extensions
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, app)
        else:  # pipelined behind a request still answering: queued
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))

    # --- answers without a task -----------------------------------------------------------------
    # A request whose flow can answer it at once (a cache hit in memory: engine/front.py
    # Facade.quick) is answered here when its body has come, with what the app would write,
    # count and log; one it cannot answer so (a miss) gets its cycle and task then, as it would
    # have at the end of its head, with its body already there.

    def _quick_request(self, route: Any, query: bytes) -> bool:
        """Whether the request whose head just ended, on ``route``'s path (the raw path, as the
        route's: a static ASCII one), waits for its body here."""
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.pipeline or self.expect_100_continue \
                or self.access_log or self.flow.write_paused or self.root_path or self.parser.should_upgrade():
            return False  # pipelined behind an answer not yet written, or what uvicorn alone handles
        method = self.parser.get_method()
        method_name = _METHOD_NAMES.get(method) or method.decode("ascii")
        guard = self.app
        # (bytes.find, not `in`: `b"#" in query` raises and catches a TypeError inside CPython first)
        if query.find(b"#") >= 0 or guard.cutting or not guard.facade.quick(method_name, route):
            return False
        self._pending = (route, method_name, route.path, query)
        self._pending_size = 0
        return True

    # on_body and on_message_complete: uvicorn's (HttpToolsProtocol's) done here, one frame less
    def on_body(self, body: bytes) -> None:
        if self._pending is not None:
            self._pending_body.append(body)
            self._pending_size += len(body)
            if self._pending_size > _QUICK_BODY:  # a large body streams to the app as it comes
                self._to_pending_cycle(complete=False)
            return
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        pending = self._pending
        if pending is None:
            cycle = self.cycle
            if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
                return
            cycle.more_body = False
            cycle.message_event.set()
            return
        self._pending = None
        parts = self._pending_body
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pending_body = []
        extensions = {TLS_KEY: self._tls_extension} if self._tls_extension is not None else _NO_EXTENSIONS
        if self.transport.is_closing() or not self.app.facade.answer_now(
                *pending, self.headers, body, extensions, self.client, self._write_quick):
            self._to_cycle(body, complete=True)

    def _to_pending_cycle(self, complete: bool) -> None:
        """The waiting request goes to the app after all, with the body that has come so far."""
        self._pending = None
        body = b"".join(self._pending_body)
        self._pending_body = []
        self._to_cycle(body, complete)

    def _to_cycle(self, body: bytes, complete: bool) -> None:
        self._start_cycle()
        if body:
            self.on_body(body)
        if complete:
            self.on_message_complete()

    def _write_quick(self, status: int, lines: bytes, cid: str, more_lines: bytes, body: bytes) -> None:
        """The answer of a request answered here (engine/front.py Facade.answer_now: its header
        lines before the request id, the id, the lines after it), as write_answer writes one
        (keep-alive as uvicorn decides: never over HTTP/1.0).  llhttp keeps an HTTP/1.0
        connection alive only when asked to in a Connection header, so without one the version
        need not be asked (the parser makes a string of it each time)."""
        parser = self.parser
        keep_alive = parser.should_keep_alive() and (not self._connection_header or parser.get_http_version() != "1.0")
        _write_whole(self.transport, status, self.server_state.default_headers,
                     [lines, b"x-request-id: ", cid.encode(), b"\r\n", more_lines], keep_alive, body)
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()

    def shutdown(self) -> None:
        if self._pending is not None:  # its body still coming: it finishes as a request in flight does
            self._to_pending_cycle(complete=False)
        super().shutdown()

    # --- keep-alive, without a timer per request ------------------------------------------------
    # uvicorn arms a timer when an answer is complete and cancels it on the next read: a timer
    # made and cancelled per request.  Here one timer per connection runs while it is open: when
    # it fires it closes a connection idle for the keep-alive timeout, else it is set again for
    # what is left of it (or, busy, not until the next answer is complete).

    _idle_since: float | None = None  # when the last answer was complete and nothing came since

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1  # uvicorn's, with the timer above
        if self.transport.is_closing():
            return
        flow = self.flow
        if flow.read_paused:
            flow.resume_reading()
        if self.pipeline:  # the next pipelined request
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        loop = self.loop
        self._idle_since = loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        idle = self._idle_since
        if idle is None:
            return  # busy: set again when its answer is complete
        left = idle + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not HTTP, as problem+json."""
        detail = f"the request is not valid HTTP/1.1: {msg}" if msg != "Invalid HTTP request received." \
            else "the request is not valid HTTP/1.1"
        self.transport.write(problem_bytes(400, "bad-request", "Bad request", detail))
        self.transport.close()


def protocol_class(limits: HttpLimits, listener: str = "facade", tls: bool = False) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``Config(http=...)`` with these limits (``tls``: the
    listener serves TLS and hands each connection's peer certificate to its requests)."""
    attributes = {"limits": limits, "listener": listener, "tls": tls}
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), attributes)
