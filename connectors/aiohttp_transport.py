"""An httpx transport on aiohttp's connection pool.

httpx stays the client API (``httpx.Request`` in, ``httpx.Response`` out, httpx's exception
types), but the pool underneath is aiohttp's: httpcore's pool costs about 2 ms of CPU per
request with 50 requests in flight (encode/httpx#3215), aiohttp's about 0.1 ms.

Small bodies with a Content-Length are read whole here, in one call; larger or chunked
bodies come back as a stream that releases the connection when read to the end or closed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

# Replies up to this size (with a Content-Length) are read whole; others stream.
EAGER_READ_LIMIT = 256 * 1024
_SKIP_REQUEST_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection"})


class _ReplyStream(httpx.AsyncByteStream):
    """A streamed reply body; gives the connection back to the pool when done."""

    def __init__(self, response: aiohttp.ClientResponse, chunk_size: int = 64 * 1024) -> None:
        self._response = response
        self._chunk_size = chunk_size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(self._chunk_size):
                yield chunk
        except aiohttp.ClientPayloadError as exc:
            raise httpx.RemoteProtocolError(f"the backend broke off its answer: {exc}") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx.ReadTimeout("the backend stopped sending its answer") from exc
        finally:
            self._response.release()

    async def aclose(self) -> None:
        self._response.release()


class _RequestBody:
    """An httpx request stream handed to aiohttp as an async iterable of bytes."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` backed by one pooled ``aiohttp.ClientSession``."""

    def __init__(self, *, max_connections: int = 100, keepalive_timeout: float = 30.0,
                 eager_read_limit: int = EAGER_READ_LIMIT) -> None:
        self.max_connections = max_connections
        self.keepalive_timeout = keepalive_timeout
        self.eager_read_limit = eager_read_limit
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0,
                                         keepalive_timeout=self.keepalive_timeout, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # a mediator passes bodies on as they are
            cookie_jar=aiohttp.DummyCookieJar(),  # cookies belong to the callers, not to a shared pool
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            raise_for_status=False,
        )
        return self._session

    def _timeout(self, spec: dict[str, float | None]) -> aiohttp.ClientTimeout:
        key = (spec.get("connect"), spec.get("read"), spec.get("pool"), spec.get("total"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=key[3], connect=key[2], sock_connect=key[0], sock_read=key[1])
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                   if k.lower() not in _SKIP_REQUEST_HEADERS]
        stream = request.stream
        data: Any = (request.content or None) if isinstance(stream, httpx.ByteStream) \
            else _RequestBody(stream)  # type: ignore[arg-type]  # async requests carry async streams
        timeout = self._timeout(request.extensions.get("timeout", {}))
        try:
            response = await session.request(request.method, str(request.url), headers=headers, data=data,
                                             timeout=timeout, allow_redirects=False, compress=None)
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting timed out: {exc}", request=request) from exc
        except (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise httpx.ReadTimeout("the backend did not answer in time", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(f"cannot connect: {exc.os_error}", request=request) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise httpx.RemoteProtocolError(f"the backend closed the connection: {exc}", request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(f"HTTP client error: {exc}", request=request) from exc

        length = response.content_length
        if length is not None and length <= self.eager_read_limit:
            try:
                body = await response.read()
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                response.release()
                raise httpx.ReadTimeout("the backend did not finish its answer in time", request=request) from exc
            except aiohttp.ClientError as exc:
                response.release()
                raise httpx.RemoteProtocolError(f"the backend broke off its answer: {exc}", request=request) from exc
            response.release()
            return httpx.Response(response.status, headers=response.raw_headers, stream=httpx.ByteStream(body),
                                  request=request, extensions={"http_version": b"HTTP/1.1", "body": body})
        return httpx.Response(response.status, headers=response.raw_headers, stream=_ReplyStream(response),
                              request=request, extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
