"""The http connector's HTTP/1.1 client: httptools' response parser on asyncio protocols,
one keep-alive pool per endpoint.

Why not aiohttp's ``ClientSession`` (which the rest of the engine still uses, and which this
client replaced only under the http endpoint's ``exchange()``): a mediator's call is the
simplest request there is, already encoded, and aiohttp spends most of its work per request on
generality the call never uses (a ``ClientRequest`` and ``ClientResponse`` with their
multidicts, a yarl URL, cookie and auth hooks, a timer context and a ``TimerHandle`` per read,
traces, redirects).  Measured with ``benchmarks/http_client.py --callgrind`` (the same echo
backend, 1 KiB bodies, 50 in flight): see docs/performance.md and the commit that brought it.

What it does, and how (the same contract as ``AiohttpTransport.exchange``, the same
``Exchange`` and the same httpx exceptions, so the connector cannot tell them apart):

- http:// and https:// (TLS with the endpoint's context, the server name checked), no proxy
  (the engine's HTTP endpoints never use one).
- Request bodies as bytes (``Content-Length``) or an async iterable (chunked, sent as read,
  with the transport's write flow control); headers as given, minus the framing and
  connection headers the pool owns; ``Host`` unless the caller gave one.
- Replies: ``Content-Length``, chunked, or read until the connection closes; a reply whose
  length is known and at most ``eager_read_limit`` (or that has no body: HEAD, 204, 304) is
  read whole, any other comes back as a stream that gives the connection back when read to
  its end (closing it earlier closes the connection); reading pauses while a stream's reader
  is behind.  1xx interim answers are skipped.
- Keep-alive: a connection goes back to the pool when its answer ended and neither side said
  ``Connection: close``; idle ones are reused last-in first-out and closed after
  ``keepalive_timeout``; ``max_connections`` bounds the open ones over all origins (more
  calls wait, the wait bounded by the connect timeout).
- An idempotent request (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) whose connection closes or
  resets before any byte of an answer is sent once more on a new connection (RFC 9112,
  9.3.1: a kept-alive connection the backend closed while it was idle); a body streamed
  from an iterator never is.
- Time limits as one deadline per attempt: ``connect`` (waiting for a pooled connection and
  opening one), ``read`` (the longest wait for the next bytes of the answer) and ``total``;
  one timer per attempt, moved on only when it fires early (not one per read).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any, Final, cast
from urllib.parse import urlsplit

import httpx
from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from connectors.aiohttp_transport import EAGER_READ_LIMIT, Exchange

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Request headers the pool owns: framing and connection management are per hop.
POOL_OWNED: Final = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                               "proxy-connection", "te", "trailer", "upgrade"})
# Methods that send no Content-Length: 0 when they carry no body (as aiohttp does).
_BODILESS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_NO_BODY_STATUS: Final = frozenset({204, 304})
_PAUSE_AT: Final = 256 * 1024  # bytes a stream's reader may fall behind before reading pauses
_RESUME_AT: Final = 64 * 1024
_KEPT_ADDRESSES: Final = 512  # distinct URLs whose parsed form the pool keeps


class Limits:
    """The time limits of one attempt in seconds (None: no limit)."""

    __slots__ = ("connect", "read", "total")

    def __init__(self, connect: float | None, read: float | None, total: float | None) -> None:
        self.connect = connect
        self.read = read
        self.total = total


class _Address:
    """One request URL, parsed once: where to connect and what goes on the request line."""

    __slots__ = ("host", "host_header", "origin", "port", "secure", "target")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise httpx.UnsupportedProtocol("only http:// and https:// URLs are sent")
        self.secure = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.secure else 80)
        self.origin = (self.secure, self.host, self.port)
        self.host_header = parts.netloc.rpartition("@")[2]
        target = parts.path or "/"
        self.target = f"{target}?{parts.query}" if parts.query else target


class _Stale(Exception):
    """The connection closed (or reset) before any byte of the answer: the request may be resent."""

    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.error = error


class _Connection(asyncio.Protocol):
    """One connection to one origin; one exchange at a time (no pipelining)."""

    def __init__(self, pool: Http1Pool, origin: tuple[bool, str, int]) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.lost = False
        self.used = 0  # answers read to their end on this connection
        self.idle_since = 0.0
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.counted = False  # in the pool's count of open connections (once it is handed out)
        self._answer_reset()

    def _answer_reset(self) -> None:
        self.busy = False
        self.waiter: asyncio.Future[Any] | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.length: int | None = None
        self.chunked = False
        self.eager = True
        self.head = False  # the request was HEAD: its answer has no body whatever its headers say
        self.received = False
        self.headed = False  # the answer's head has come
        self.complete = False
        self.keep_alive = True
        self.stream: _ReplyStream | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.read_limit: float | None = None
        self.deadline: float | None = None
        self.last_read = 0.0

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one without being its subclass

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes nobody asked for (after a HEAD's answer, or unsolicited)
            self.close()
            return
        self.received = True
        self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the answer is not valid HTTP: an unrequested protocol switch"))
            self.close()
        except HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"the answer is not valid HTTP: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost settles the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.drained is not None and not self.drained.done():
            self.drained.set_exception(ConnectionResetError("the connection closed"))
        if self.busy and not self.complete:
            if not self.received:
                reason = "the connection closed before an answer came" if exc is None else \
                    f"the connection failed: {getattr(exc, 'strerror', None) or exc}"
                self._fail(_Stale(httpx.RemoteProtocolError(reason)))
            elif self.headed and self.length is None and not self.chunked and not self.head:
                self.on_message_complete()  # a body delimited by the connection's end (RFC 9112, 6.3)
            else:
                self._fail(httpx.RemoteProtocolError("the answer was broken off"))
        self.pool._lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # --- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(name) == 14 and name.lower() == b"content-length":
            try:
                self.length = int(value)
            except ValueError:
                pass  # the parser refuses it
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            self.chunked = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100, 103): the real one follows
            self.headers = []
            self.length = None
            self.chunked = False
            return
        self.status = status
        self.headed = True
        length = self.length
        if self.head or status in _NO_BODY_STATUS:
            if self.head:
                # llhttp would wait for the body its headers announce: this answer ends here
                self.keep_alive = self.parser.should_keep_alive()
                self.parser = HttpResponseParser(self)
                self.on_message_complete()
            return
        if length is not None and length <= self.pool.eager_read_limit:
            return
        self.eager = False
        self.stream = _ReplyStream(self)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, chunk: bytes) -> None:
        stream = self.stream
        if stream is None:
            self.body.append(chunk)
        else:
            stream.feed(chunk)

    def on_message_complete(self) -> None:
        if not self.headed:  # the end of an interim answer
            return
        if self.complete:
            return
        self.complete = True
        if not self.head:
            self.keep_alive = self.parser.should_keep_alive()
        self._stop_timer()
        if self.stream is not None:
            self.stream.finish()
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the exchange -----------------------------------------------------------------------

    async def send(self, method: str, address: _Address, headers: Iterable[tuple[str, str]],
                   body: bytes | AsyncIterable[bytes] | None, limits: Limits,
                   deadline: float | None) -> Exchange:
        transport = self.transport
        assert transport is not None
        lines = [f"{method} {address.target} HTTP/1.1"]
        host = False
        for name, value in headers:
            lowered = name.lower()
            if lowered in POOL_OWNED:
                continue
            if lowered == "host":
                host = True
            lines.append(f"{name}: {value}")
        if not host:
            lines.append(f"Host: {address.host_header}")
        streamed = body is not None and not isinstance(body, bytes)
        if streamed:
            lines.append("Transfer-Encoding: chunked")
        elif body:
            lines.append(f"Content-Length: {len(body)}")  # type: ignore[arg-type]
        elif method not in _BODILESS:
            lines.append("Content-Length: 0")
        text = "\r\n".join(lines) + "\r\n\r\n"
        # one line break per line and no other: a CR or LF in a name or value would split the head
        if text.count("\n") != len(lines) + 1 or text.count("\r") != len(lines) + 1:
            self.pool._give_back(self)
            raise ValueError("a request header's name or value has a line break (CR or LF); a header cannot "
                             "carry one")
        head = text.encode("utf-8")
        loop = self.loop
        self.busy = True
        self.head = method == "HEAD"
        waiter = self.waiter = loop.create_future()
        self.deadline = deadline
        if not streamed:
            if body:
                if len(body) < 16384:  # type: ignore[arg-type]
                    transport.write(head + body)  # type: ignore[operator]
                else:
                    transport.write(head)
                    transport.write(body)  # type: ignore[arg-type]
            else:
                transport.write(head)
        else:
            transport.write(head)
            self._arm(loop.time())  # the total limit bounds sending the body too
            await self._send_chunks(body, waiter)  # type: ignore[arg-type]
            self._stop_timer()
        now = loop.time()
        self.last_read = now
        self.read_limit = limits.read
        self._arm(now)
        try:
            await waiter
        except BaseException:
            self._stop_timer()
            self.close()
            raise
        if self.stream is not None:
            return Exchange(self.status, tuple(self.headers), None, self.stream)
        answer = Exchange(self.status, tuple(self.headers), b"".join(self.body), None)
        self.release()
        return answer

    async def _send_chunks(self, body: AsyncIterable[bytes], waiter: asyncio.Future[Any]) -> None:
        transport = self.transport
        assert transport is not None
        try:
            async for chunk in body:
                if waiter.done() or self.lost:  # answered (or gone) before the body ended
                    break
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                if self.write_paused:
                    self.drained = self.loop.create_future()
                    await self.drained
            else:
                if not self.lost:
                    transport.write(b"0\r\n\r\n")
                    return
        except ConnectionResetError:
            pass  # the answer, if any, says more; else connection_lost has failed the waiter
        except BaseException as exc:
            self.close()
            if isinstance(exc, Exception):
                raise httpx.WriteError("the request body's source failed") from exc
            raise
        self.keep_alive = False  # the body was not sent whole: the connection cannot be reused

    def _arm(self, now: float) -> None:
        at = self.deadline
        if self.read_limit is not None:
            at = now + self.read_limit if at is None else min(at, now + self.read_limit)
        if at is not None:
            self.timer = self.loop.call_at(at, self._timed_out)

    def _stop_timer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()

    def _timed_out(self) -> None:
        self.timer = None
        if self.complete or not self.busy:
            return
        now = self.loop.time()
        deadline, limit = self.deadline, self.read_limit
        expired = deadline is not None and now >= deadline
        if not expired and limit is not None:
            reading = self.waiter is not None and not self.waiter.done()
            stream = self.stream
            if stream is not None:
                reading = stream.waiting  # a reader behind is not a backend too slow
            quiet = now - self.last_read
            if reading and quiet >= limit - 1e-3:
                expired = True
            elif not reading:
                self.last_read = now
        if not expired:
            self._arm(self.last_read if limit is not None else now)
            return
        self._fail(httpx.ReadTimeout("timed out waiting for the answer"))
        self.close()

    def _fail(self, error: BaseException) -> None:
        self._stop_timer()
        stream = self.stream
        if stream is not None:
            stream.fail(error.error if isinstance(error, _Stale) else error)
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def release(self) -> None:
        """The answer is over: back to the pool when the connection can carry another."""
        self._stop_timer()
        reusable = self.complete and self.keep_alive and not self.lost
        self._answer_reset()
        if reusable:
            self.used += 1
            self.pool._give_back(self)
        else:
            self.close()

    def close(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            # every caller that still awaits the answer has been given its error already: this one
            # is unawaited (the request body's source failed while it was sent), and an exception
            # set on it by connection_lost would be reported as never retrieved
            waiter.cancel()
        if self.transport is not None and not self.lost:
            self.transport.close()
            self.lost = True
            self.pool._lost(self)


class _ReplyStream(httpx.AsyncByteStream):
    """A streamed reply body: the connection goes back to the pool once read to the end;
    closing it earlier (or a failure) closes the connection instead."""

    __slots__ = ("_buffered", "_chunks", "_closed", "_connection", "_done", "_error", "_paused", "_read",
                 "_waiter")

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._read = False  # read to its end
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._closed = False

    @property
    def waiting(self) -> bool:
        return self._waiter is not None

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > _PAUSE_AT and not self._paused and self._connection.transport is not None:
            self._paused = True
            self._connection.transport.pause_reading()
        self._wake()

    def finish(self) -> None:
        self._done = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                if self._chunks:
                    chunk = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
                    self._chunks.clear()
                    self._buffered = 0
                    if self._paused:
                        self._paused = False
                        transport = self._connection.transport
                        if transport is not None and not self._connection.lost:
                            transport.resume_reading()
                    yield chunk
                    continue
                if self._error is not None:
                    raise self._error
                if self._done:
                    self._read = True
                    return
                waiter = self._waiter = self._connection.loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        connection = self._connection
        if self._read:
            connection.release()
        else:
            connection._stop_timer()
            connection.close()


class Http1Pool:
    """The keep-alive pool of one endpoint, with ``exchange()`` as ``AiohttpTransport`` has it.

    Made inside the running loop (on first use by the connector); ``aclose()`` closes every
    connection, and a closed pool is not used again (the connector makes a new one)."""

    def __init__(self, *, max_connections: int = 100, keepalive_timeout: float = 30.0,
                 eager_read_limit: int = EAGER_READ_LIMIT, default_limits: Limits | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.max_connections = max_connections
        self.keepalive_timeout = keepalive_timeout
        self.eager_read_limit = eager_read_limit
        self.default_limits = default_limits or Limits(5.0, 30.0, None)
        self.tls = tls
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._open = 0  # connections open or opening
        self._waiters: deque[tuple[tuple[bool, str, int], asyncio.Future[_Connection | None]]] = deque()
        self._addresses: dict[str, _Address] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    async def exchange(self, method: str, url: str, headers: Iterable[tuple[str, str]],
                       body: bytes | AsyncIterable[bytes] | None, limits: Limits | None = None) -> Exchange:
        """Send one request and return its answer (the module's docstring says how)."""
        address = self._addresses.get(url)
        if address is None:
            if len(self._addresses) >= _KEPT_ADDRESSES:  # paths with ids in them: start again rather than grow
                self._addresses.clear()
            address = self._addresses[url] = _Address(url)
        if limits is None:
            limits = self.default_limits
        deadline = self.loop.time() + limits.total if limits.total is not None else None
        resend = method in IDEMPOTENT and not (body is not None and not isinstance(body, bytes))
        fresh = False
        while True:
            connection = None if fresh else self._pooled(address.origin)
            if connection is None:
                connection = await self._connection(address, limits, deadline)
            try:
                return await connection.send(method, address, headers, body, limits, deadline)
            except _Stale as stale:
                if not resend:
                    raise stale.error from None
                resend = False
                fresh = True

    # --- the pool ---------------------------------------------------------------------------

    def _pooled(self, origin: tuple[bool, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        oldest = self.loop.time() - self.keepalive_timeout
        while idle:
            connection = idle.pop()
            if connection.lost or (connection.transport is not None and connection.transport.is_closing()):
                continue
            if connection.idle_since < oldest:
                connection.close()
                continue
            return connection
        return None

    async def _connection(self, address: _Address, limits: Limits, deadline: float | None) -> _Connection:
        """A new connection (or one handed over by a call that finished), within the connect limit."""
        budget = limits.connect
        if deadline is not None:
            left = deadline - self.loop.time()
            budget = left if budget is None else min(budget, left)
        try:
            async with asyncio.timeout(budget):
                while self._open >= self.max_connections:
                    if not self._close_an_idle_one():
                        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
                        self._waiters.append((address.origin, waiter))
                        try:
                            handed = await waiter
                        except BaseException:
                            self._forget(waiter)
                            raise
                        if handed is not None:
                            return handed
                self._open += 1
                try:
                    return await self._open_connection(address)
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
        except TimeoutError:
            if deadline is not None and self.loop.time() >= deadline:
                raise httpx.ReadTimeout("timed out waiting for the answer") from None
            raise httpx.ConnectTimeout("timed out connecting (or waiting for a pooled connection)") from None

    async def _open_connection(self, address: _Address) -> _Connection:
        context = None
        if address.secure:
            context = self.tls or default_tls_context()
        try:
            _, connection = await self.loop.create_connection(
                lambda: _Connection(self, address.origin), address.host, address.port, ssl=context,
                server_hostname=address.host if context is not None else None)
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or type(exc).__name__
            raise httpx.ConnectError(f"the backend's TLS certificate is not trusted: {reason}") from exc
        except ssl.SSLError as exc:
            raise httpx.ConnectError(f"the TLS handshake failed: {exc.reason or 'refused'}") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect: {exc.strerror or type(exc).__name__}") from exc
        connection.counted = True  # its place was taken by _connection; closing it gives the place back
        if connection.lost:  # closed before it was handed out
            connection.counted = False
            raise httpx.ConnectError("cannot connect: the connection closed at once")
        return connection

    def _give_back(self, connection: _Connection) -> None:
        """A finished connection: to a caller waiting for one to its origin, else the idle list."""
        if self.closed:
            connection.close()
            return
        for index, (origin, waiter) in enumerate(self._waiters):
            if origin == connection.origin and not waiter.done():
                del self._waiters[index]
                waiter.set_result(connection)
                return
        if self._waiters:  # callers wait for another origin: make room for them
            connection.close()
            return
        if self.keepalive_timeout <= 0:  # no keep-alive
            connection.close()
            return
        connection.idle_since = self.loop.time()
        self._idle.setdefault(connection.origin, []).append(connection)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.keepalive_timeout, self._sweep)

    def _lost(self, connection: _Connection) -> None:
        """A connection closed (by either side): its place in the pool is free."""
        if not connection.counted:
            return
        connection.counted = False
        self._open -= 1
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # it may open a connection now
                return

    def _forget(self, waiter: asyncio.Future[_Connection | None]) -> None:
        """A caller stopped waiting (its connect limit, or cancelled): what it was given goes on."""
        for index, (_, known) in enumerate(self._waiters):
            if known is waiter:
                del self._waiters[index]
                return
        if not waiter.done() or waiter.cancelled() or waiter.exception() is not None:
            return
        handed = waiter.result()
        if handed is not None:
            self._give_back(handed)  # a connection handed over as the wait ended: to the next caller
        else:
            self._wake()  # a free place: to the next caller
    def _close_an_idle_one(self) -> bool:
        for idle in self._idle.values():
            while idle:
                idle.pop(0).close()
                return True
        return False

    def _sweep(self) -> None:
        self._sweeper = None
        oldest = self.loop.time() - self.keepalive_timeout
        left = False
        for idle in list(self._idle.values()):
            for connection in [c for c in idle if c.idle_since < oldest]:
                connection.close()
            left = left or bool(idle)
        if left and not self.closed:
            self._sweeper = self.loop.call_later(self.keepalive_timeout / 2, self._sweep)

    async def aclose(self) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in list(self._idle.values()):
            for connection in list(idle):
                connection.close()
        self._idle.clear()
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(httpx.ConnectError("the pool was closed"))


_DEFAULT_TLS: list[ssl.SSLContext] = []


def default_tls_context() -> ssl.SSLContext:
    """The system's certificate authorities, host names checked: made on the first https://
    connection of a pool without its own TLS settings (reading the authorities costs ~40 ms)."""
    if not _DEFAULT_TLS:
        _DEFAULT_TLS.append(ssl.create_default_context())
    return _DEFAULT_TLS[0]
