"""An httpx transport on aiohttp's connection pool.

httpx stays the client API: ``httpx.AsyncClient(transport=AiohttpTransport())`` sends
``httpx.Request`` objects and gets ``httpx.Response`` objects and httpx's exception types.
Underneath, one ``aiohttp.ClientSession`` on one ``TCPConnector`` holds the keep-alive pool:
httpcore's pool costs about 2 ms of CPU per request with 50 requests in flight
(encode/httpx#3215), aiohttp's about a tenth of that (``benchmarks/http_client.py``).

Two ways in, one pool, the same behaviour and the same exceptions:

- ``handle_async_request(httpx.Request) -> httpx.Response``: the httpx transport contract.
- ``exchange(method, url, headers, body, limits) -> Exchange``: the lean path the HTTP
  endpoint uses.  Building ``httpx.Request``/``httpx.Response`` objects (URL parsing, header
  containers) costs about as much CPU per request as aiohttp's whole exchange, so the endpoint
  hands aiohttp plain strings and tuples and gets plain values back.

Replies with a Content-Length up to ``eager_read_limit`` (and replies that cannot have a
body) are read whole here, in one call; larger or chunked ones come back as a stream that
gives the connection back to the pool when read to the end or closed.  Bodies are passed on
as they came: no decompression.  Like any HTTP/1.1 client (RFC 9112, section 9.3.1), the
pool sends an idempotent request (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) once more on a new
connection when its connection closes before any answer, which is what a keep-alive
connection closed by the backend while idle looks like; a request body streamed from an
iterator is never sent twice.  Every failure is raised as an httpx exception:

==========================================  ==========================
aiohttp                                     httpx
==========================================  ==========================
connect timeout, no free pooled connection  ``ConnectTimeout``
no byte within the read timeout, total      ``ReadTimeout``
connection refused, DNS, TLS (untrusted)    ``ConnectError``
reset or closed before the answer           ``RemoteProtocolError``
answer broken off or not HTTP               ``RemoteProtocolError``
anything else from aiohttp                  ``TransportError``
==========================================  ==========================
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import ClassVar

import aiohttp
import httpx
from aiohttp import hdrs
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict
from yarl import URL

# Replies up to this size (with a Content-Length) are read whole; others stream.
EAGER_READ_LIMIT = 256 * 1024
STREAM_CHUNK = 64 * 1024
# Request headers the pool owns: framing and connection management are per hop.
_POOL_OWNED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
                         "te", "trailer", "upgrade"})
_NO_BODY_STATUS = frozenset({204, 304})
_KEPT_URLS = 512  # distinct request URLs whose parsed form a transport keeps


def client_timeout(connect: float | None, read: float | None, total: float | None) -> aiohttp.ClientTimeout:
    """aiohttp's timeout for httpx-style limits: ``connect`` bounds both waiting for a pooled
    connection and opening a new one; ``read`` bounds each wait for bytes of the answer."""
    return aiohttp.ClientTimeout(total=total, connect=connect, sock_connect=connect, sock_read=read)


def translate(exc: BaseException, request: httpx.Request | None = None) -> httpx.TransportError:
    """The httpx exception for an aiohttp (or asyncio timeout) failure, with a message that
    names no URL: callers put the endpoint's name and a credential-free address around it."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout("timed out connecting (or waiting for a pooled connection)", request=request)
    if isinstance(exc, TimeoutError):  # SocketTimeoutError, ServerTimeoutError, the total timeout
        return httpx.ReadTimeout("timed out waiting for the answer", request=request)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        problem = exc.certificate_error
        reason = getattr(problem, "verify_message", None) or type(problem).__name__
        return httpx.ConnectError(f"the backend's TLS certificate is not trusted: {reason}", request=request)
    if isinstance(exc, aiohttp.ClientSSLError):
        return httpx.ConnectError(f"the TLS handshake failed: {getattr(exc.os_error, 'reason', None) or 'refused'}",
                                  request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        return httpx.ConnectError(f"cannot connect: {reason}", request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError("the connection closed before an answer came", request=request)
    if isinstance(exc, aiohttp.ClientOSError):
        reason = exc.strerror or "connection error"
        return httpx.RemoteProtocolError(f"the connection failed: {reason}", request=request)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError("the answer was broken off", request=request)
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(f"the answer is not valid HTTP: {exc.message}", request=request)
    return httpx.TransportError(f"HTTP client error: {type(exc).__name__}", request=request)


class ReplyStream(httpx.AsyncByteStream):
    """A streamed reply body.  The connection goes back to the pool once the body was read to
    the end; closing it earlier (or a failure) closes the connection instead."""

    __slots__ = ("_done", "_response")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(STREAM_CHUNK):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise translate(exc) from exc
        else:
            self._done = True
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._done:
            self._response.release()
        else:
            self._response.close()


@dataclass(slots=True)
class Exchange:
    """One request's answer on the lean path: ``body`` when read whole, else ``stream``."""

    status: int
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes | None
    stream: httpx.AsyncByteStream | None


class _HttpxRequestBody:
    """An httpx request stream handed to aiohttp as an async iterable of bytes."""

    __slots__ = ("_stream",)

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk


class _Request(aiohttp.ClientRequest):
    """aiohttp's request with the session's skipped automatic headers worked out once per set of
    skipped names instead of once per request: aiohttp's own ``update_auto_headers`` sorts the
    names into a new ``CIMultiDict`` and tests every automatic header against it, for every
    request of a session that skips any (this one skips all four, so nothing is left to add).
    Same headers out."""

    # skipped names -> (them as aiohttp keeps them, the automatic headers still to add)
    _skipped: ClassVar[dict[frozenset[str], tuple[CIMultiDict[None], tuple[tuple[str, str], ...]]]] = {}

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        if not isinstance(skip_auto_headers, frozenset):
            super().update_auto_headers(skip_auto_headers)
            return
        known = self._skipped.get(skip_auto_headers)
        if known is None:
            skipped = CIMultiDict((h, None) for h in sorted(skip_auto_headers))
            automatic = [*self.DEFAULT_HEADERS.items(), (hdrs.USER_AGENT, SERVER_SOFTWARE)]
            known = self._skipped[skip_auto_headers] = (
                skipped, tuple((name, value) for name, value in automatic if name not in skipped))
        self._skip_auto_headers, adding = known
        if adding:
            headers = self.headers
            for name, value in adding:
                if name not in headers:
                    headers[name] = value


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` backed by one pooled ``aiohttp.ClientSession``.

    The session is created on first use (it needs the running event loop) and closed by
    ``aclose()``; a closed transport opens a fresh pool when used again."""

    def __init__(self, *, max_connections: int = 100, keepalive_timeout: float = 30.0,
                 eager_read_limit: int = EAGER_READ_LIMIT, default_timeout: aiohttp.ClientTimeout | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.max_connections = max_connections
        self.tls = tls  # None: the system's trusted authorities, host names checked
        self.keepalive_timeout = keepalive_timeout
        self.eager_read_limit = eager_read_limit
        self.default_timeout = default_timeout or client_timeout(5.0, 30.0, None)
        self._session: aiohttp.ClientSession | None = None
        # httpx timeout dicts seen so far -> aiohttp timeouts (one object per distinct setting)
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._urls: dict[str, URL] = {}  # _url()'s

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0,
                                             keepalive_timeout=self.keepalive_timeout,
                                             ssl=self.tls if self.tls is not None else True)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # a mediator passes bodies on as they are
                cookie_jar=aiohttp.DummyCookieJar(),  # cookies belong to the callers, never to a shared pool
                # send only the headers the caller gave (and Host, Content-Length or chunked framing)
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                raise_for_status=False,
                request_class=_Request,
            )
        return self._session

    async def exchange(self, method: str, url: str, headers: Iterable[tuple[str, str]],
                       body: bytes | AsyncIterable[bytes] | None, limits: aiohttp.ClientTimeout | None = None,
                       ) -> Exchange:
        """Send one request on the pool and return its answer (see the module's docstring).

        ``headers`` go out as given except framing and connection headers, which the pool
        owns.  ``body`` is bytes, an async iterable of bytes (sent chunked), or None.
        Raises the httpx exceptions of the table above; an exception raised by a streamed
        ``body`` itself is raised as aiohttp wraps it (the caller, who owns the body, can tell)."""
        session = self.session
        try:
            # encoded=True: the URL goes out as given (the endpoint has encoded it); without it yarl
            # decodes %2E%2E back to '..' and resolves it, climbing out of the base path
            response = await session.request(
                method, self._url(url), headers=[(k, v) for k, v in headers if k.lower() not in _POOL_OWNED],
                data=body, timeout=limits or self.default_timeout, allow_redirects=False, compress=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise translate(exc) from exc
        length = response.content_length
        if (length is not None and length <= self.eager_read_limit) or method == "HEAD" \
                or response.status in _NO_BODY_STATUS:
            try:
                data = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise translate(exc) from exc  # read() has closed the connection
            response.release()
            return Exchange(response.status, response.raw_headers, data, None)
        return Exchange(response.status, response.raw_headers, None, ReplyStream(response))

    def _url(self, url: str) -> URL:
        """The yarl URL of ``url`` (encoded: see exchange), kept for the next call to it: an
        endpoint calls the same few URLs (a SOAP service always its one) over and over."""
        found = self._urls.get(url)
        if found is None:
            if len(self._urls) >= _KEPT_URLS:  # paths with ids in them: start again rather than grow
                self._urls.clear()
            found = self._urls[url] = URL(url, encoded=True)
        return found

    def _timeout(self, spec: dict[str, float | None] | None) -> aiohttp.ClientTimeout:
        if not spec:
            return self.default_timeout
        key = (spec.get("connect"), spec.get("read"), spec.get("pool"), spec.get("total"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool, total = key
            # aiohttp bounds waiting for a pooled connection and opening one together
            both = None if connect is None or pool is None else pool + connect
            timeout = aiohttp.ClientTimeout(total=total, connect=both, sock_connect=connect, sock_read=read)
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        stream = request.stream
        body: bytes | AsyncIterable[bytes] | None
        if isinstance(stream, httpx.ByteStream):
            body = request.content or None
        elif isinstance(stream, httpx.AsyncByteStream):
            body = _HttpxRequestBody(stream)
        else:
            raise TypeError("AiohttpTransport needs an async request body (httpx.AsyncClient gives one)")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        url = request.url
        if url.userinfo:  # httpx.AsyncClient has turned it into an Authorization header already
            url = url.copy_with(userinfo=b"")
        try:
            answer = await self.exchange(request.method, str(url), headers, body,
                                         self._timeout(request.extensions.get("timeout")))
        except httpx.TransportError as exc:
            exc.request = request
            raise
        if answer.body is not None:
            return httpx.Response(answer.status, headers=answer.raw_headers, stream=httpx.ByteStream(answer.body),
                                  request=request,
                                  extensions={"http_version": b"HTTP/1.1"})
        return httpx.Response(answer.status, headers=answer.raw_headers, stream=answer.stream, request=request,
                              extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
