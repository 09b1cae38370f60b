"""HTTP endpoints: a pooled keep-alive client, one base URL or several.

In a flow file::

    endpoints:
      orders-api:
        http:
          urls: [http://orders-a:8080/api, http://orders-b:8080/api]
          strategy: failover
          timeout: {connect: 1s, read: 5s, total: 8s}
          retry: {attempts: 3, backoff: 100ms, max_backoff: 2s, on_status: [502, 503]}
          breaker: {failures: 5, reset: 30s}
          pool: {max_connections: 100, keepalive: 30s}
          headers: {X-Api-Key: "${secret.ORDERS_KEY}"}

The kind has one operation, ``request`` (its default): ``call: {endpoint, method, path, query,
headers, body | xml, expect_status}``.  Failover over the URLs, retries, the breaker per URL
and ``deadline`` are the shared layer's (``connectors.resilience``); this module makes one
attempt on one URL:

- A connection failure (refused, reset, DNS) raises ``BackendUnreachable`` (502), a connect
  timeout ``BackendTimeout(reached=False)``, a read or total timeout ``BackendTimeout`` (504).
  Messages name the endpoint; addresses (without credentials) go to ``FlowError.internal``.
- Independently of ``retry``, an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE) whose
  connection closes before any answer is sent once more on a fresh connection by the pool
  (RFC 9112, 9.3.1: a keep-alive connection the backend closed while idle); POST and PATCH
  never are.
- A request body given as an async iterable is sent as it is read (chunked) and can be sent
  only once: after its first chunk was taken the request is not ``replayable()``.  If the
  body's own source fails (the caller went away, the body was over its limit), that error is
  raised, not a backend error.

The pool is ``connectors._http1.Http1Pool``, an HTTP/1.1 client on httptools' response parser
with the ``exchange()`` of ``connectors.aiohttp_transport.AiohttpTransport`` (kept as an httpx
transport on aiohttp's pool for ``httpx.AsyncClient`` users): a fifth of aiohttp's CPU per call
(``benchmarks/http_client.py``).  A call of a plain endpoint (one URL, no retry) is compiled
into one coroutine (``connectors/_http_call.py``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import httpx
from yarl import URL

from connectors._http1 import Http1Pool, Limits
from connectors._http_request import REQUEST_OPERATION, compile_render, compile_request
from connectors._tls import load_default_authorities
from connectors.aiohttp_transport import Exchange
from connectors.base import (
    Connector,
    EndpointContext,
    Invocation,
    Invoke,
    Operation,
    Reply,
    Request,
    register_connector,
)
from connectors.resilience import Endpoint, duration_schema, setting_duration
from engine.errors import BackendError, BackendTimeout, BackendUnreachable
from engine.urls import check_path, requote

if TYPE_CHECKING:
    from engine.compiler import CompileContext
from engine.redact import url_for_display

log = logging.getLogger("interlace.http")

# Headers that describe one connection, not the message: never handed to flows.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                        "upgrade", "proxy-authenticate"})

DEFAULT_CONNECT = "5s"
DEFAULT_READ = "30s"
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_KEEPALIVE = "30s"

# A backend's answer: the shared Reply (status, lower-case headers without hop-by-hop ones,
# body read whole up to 256 KiB, else a stream).
HttpReply = Reply


class _ReplyChunks:
    """A streamed reply body as our errors: a backend that stalls or breaks off mid-answer
    raises BackendTimeout or BackendError naming the endpoint, never an httpx exception."""

    __slots__ = ("_endpoint", "_iterator", "_source", "_where")

    def __init__(self, source: httpx.AsyncByteStream, endpoint: str, where: str) -> None:
        self._source = source
        self._iterator: AsyncIterator[bytes] | None = None
        self._endpoint = endpoint
        self._where = where

    def __aiter__(self) -> _ReplyChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._iterator is None:
            self._iterator = self._source.__aiter__()
        try:
            return await self._iterator.__anext__()
        except httpx.TimeoutException as exc:
            raise BackendTimeout(f"endpoint {self._endpoint!r} stopped sending its answer in time",
                                 internal=f"{self._where}: {exc}") from exc
        except httpx.TransportError as exc:
            raise BackendError(f"endpoint {self._endpoint!r} broke off its answer",
                               internal=f"{self._where}: {exc}") from exc

    async def aclose(self) -> None:
        if self._iterator is not None and hasattr(self._iterator, "aclose"):
            await self._iterator.aclose()
        await self._source.aclose()



# ----------------------------------------------------------------------------- the parts


@dataclass(slots=True)
class Target:
    """One base URL of an endpoint."""

    base: str  # scheme://host[:port][/base-path], no credentials, no trailing slash
    display: str  # the same, for health and logs
    headers: list[tuple[str, str]] = field(default_factory=list)  # the endpoint's defaults, plus its credentials
    header_names: frozenset[str] = frozenset()

    def headers_with(self, given: list[tuple[str, str]] | None,
                     forwarded: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
        """The headers of one call, by precedence: the call's own (``given``: the flow's step and
        set headers) over the endpoint's defaults (its credentials among them) over ``forwarded``
        (copied from the caller), which never replace either."""
        if forwarded:
            taken = self.header_names.union(k for k, _ in given) if given else self.header_names
            if taken:
                forwarded = [h for h in forwarded if h[0] not in taken]
        if not given:
            return forwarded + self.headers if forwarded else self.headers
        own = self.headers
        if own:
            names = {k for k, _ in given}
            if not names.isdisjoint(self.header_names):
                own = [h for h in own if h[0] not in names]
        return [*(forwarded or ()), *own, *given]



class _OneShotBody:
    """A streamed request body: remembers whether sending it has begun (then it cannot be
    sent again) and keeps an error raised by its own source, so that a failing caller is
    not reported as a failing backend."""

    __slots__ = ("_iterator", "error", "started")

    def __init__(self, source: AsyncIterable[bytes]) -> None:
        self._iterator = source.__aiter__()
        self.started = False
        self.error: BaseException | None = None

    def __aiter__(self) -> _OneShotBody:
        return self

    async def __anext__(self) -> bytes:
        self.started = True
        try:
            return await self._iterator.__anext__()
        except StopAsyncIteration:
            raise
        except Exception as exc:
            self.error = exc
            raise


def _display(url: str) -> str:
    """A URL without its credentials (engine.redact decides how every URL is shown)."""
    try:
        parts = urlsplit(url_for_display(url))
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url_for_display(url)
    if not parts.scheme or not host:
        return url_for_display(url)
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"



def checked_path(path: str) -> str:
    """An encoded URL path (engine/urls.py builds it from the template) made ready to join to a
    base URL: a leading '/', what is never valid in a URL encoded, and a '.' or '..' segment
    refused (400): the call stays under the base."""
    if path and path[0] != "/":
        path = "/" + path
    path = requote(path)
    check_path(path)
    return path


class HttpRequest(Request):
    """One HTTP request: ``path`` (with its query) is joined to a target's base URL."""

    __slots__ = ("body", "forwarded", "headers", "method", "path", "query", "source")

    def __init__(self, method: str, path: str, headers: list[tuple[str, str]] | None = None,
                 body: bytes | AsyncIterable[bytes] | None = None, query: list[tuple[str, str]] | None = None,
                 transaction: Any = None, forwarded: list[tuple[str, str]] | None = None,
                 checked: bool = False) -> None:
        super().__init__("request", transaction)
        self.query = query
        self.forwarded = forwarded  # copied from the caller: never replaces the endpoint's or the call's
        if not checked:  # checked: the path is checked_path()'s, done once at load for a literal path
            path = checked_path(path)
        if query:
            path = f"{path}{'&' if '?' in path else '?'}{urlencode(query)}"
        self.method = method
        self.path = path
        self.headers = headers
        self.source: _OneShotBody | None = None
        if isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        elif body is not None and not isinstance(body, bytes):
            body = self.source = _OneShotBody(body)
        self.body: bytes | _OneShotBody | None = body

    def replayable(self) -> bool:
        return self.source is None or not self.source.started

    def view(self) -> dict[str, Any]:
        return {"operation": "request", "method": self.method, "path": self.path}

    def span_name(self) -> str:
        return self.method

    def location(self, target: str) -> str:
        return target.rstrip("/") + self.path


def _tls_context(config: dict[str, Any] | None) -> ssl.SSLContext | None:
    """The TLS context of the ``tls`` settings (None: aiohttp's default, the system's authorities)."""
    if not config:
        return None
    ca_file, cert_file, key_file = config.get("ca_file"), config.get("cert_file"), config.get("key_file")
    if key_file and not cert_file:
        raise ValueError("tls.key_file needs tls.cert_file")
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"tls.ca_file: cannot read certificate authorities from {ca_file!r}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    if config.get("verify", True) is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"tls.cert_file: cannot load the client certificate {cert_file!r}"
                             f"{f' with key {key_file!r}' if key_file else ''}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    return context


def _target(url: str, headers: list[tuple[str, str]]) -> Target:
    """A checked base URL; credentials in it become a default Authorization header (Basic), so
    that they never appear in addresses and a call's own Authorization header replaces them."""
    display = _display(url)
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed [ipv6
        raise ValueError(f"{display!r} is not a valid URL (an IPv6 address goes in brackets: http://[::1]:8080)") \
            from None
    try:
        hostname = parts.hostname
    except ValueError:  # an unclosed [ipv6
        hostname = None
    if parts.scheme not in ("http", "https") or not hostname:
        raise ValueError(f"{display!r} is not an http:// or https:// URL"
                         f"{' (its credentials are not shown)' if '@' in url else ''}")
    try:
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError:
        raise ValueError(f"{display!r}: the port is not a number from 0 to 65535") from None
    if parts.query or parts.fragment:
        raise ValueError(f"{display}: a base URL cannot have a query or fragment (calls give their own query)")
    if parts.username is not None:
        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        headers = [h for h in headers if h[0] != "authorization"] + [("authorization", f"Basic {token}")]
    # normalised once (an international host name in IDNA, the path percent-encoded): the pool
    # sends base + path as it is, without re-encoding or resolving dot segments per call
    base = str(URL(urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", "")))).rstrip("/")
    return Target(base, display, headers, frozenset(k for k, _ in headers))



@register_connector("http")
class HttpConnector(Connector):
    """A named HTTP(S) backend (see the module docstring)."""

    SUMMARY: ClassVar[str] = ("An HTTP(S) backend: one URL, or several with failover or round-robin; pooled "
                              "keep-alive connections, timeouts, retry with backoff and a circuit breaker per URL.")
    SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "description": SUMMARY,
        "properties": {
            "url": {"type": "string", "minLength": 1,
                    "description": "Base URL (http:// or https://, may include a base path). A call's path is "
                                   "appended to it: url http://crm/api + path /customers/7 calls "
                                   "http://crm/api/customers/7. Give url or urls, not both."},
            "urls": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                     "description": "Several base URLs of the same service, used as strategy says. A URL that "
                                    "cannot be connected to, or whose breaker is open, is skipped for the next."},
            "timeout": {
                "type": "object", "additionalProperties": False,
                "description": "Time limits of one attempt: connect (opening a connection, or waiting for a "
                               "free pooled one; default 5s), read (longest wait for the next bytes of the answer; "
                               "default 30s), total (the whole attempt; default none). Exceeding one fails the "
                               "call with backend-timeout (504).",
                "properties": {
                    "connect": duration_schema("Opening a connection, including waiting for a free one when the pool "
                                         "is full (default 5s)."),
                    "read": duration_schema("Longest wait for the next bytes of the answer, headers or body (default "
                                      "30s)."),
                    "total": duration_schema("The whole attempt, from connecting to the last byte of a body read "
                                       "whole (default: no limit)."),
                },
            },
            "pool": {
                "type": "object", "additionalProperties": False,
                "description": "The endpoint's connection pool, kept alive and reused across calls: "
                               "max_connections (over all URLs; default 100), keepalive (how long an idle "
                               "connection stays open; default 30s).",
                "properties": {
                    "max_connections": {"type": "integer", "minimum": 1,
                                        "description": "Open connections at most, over all URLs (default 100); "
                                                       "more calls in flight wait for one (see timeout.connect)."},
                    "keepalive": duration_schema("How long an idle connection stays open for reuse (default 30s)."),
                },
            },
            "tls": {
                "type": "object", "additionalProperties": False,
                "description": "TLS settings of https:// URLs: ca_file (trust these authorities instead of the "
                               "system's), cert_file and key_file (a client certificate, for mutual TLS), verify "
                               "(default true). Files are read when the flows load.",
                "properties": {
                    "ca_file": {"type": "string", "minLength": 1,
                                "description": "PEM file of the certificate authorities to trust, e.g. a mounted "
                                               "Secret; replaces the system's list."},
                    "cert_file": {"type": "string", "minLength": 1,
                                  "description": "PEM file of the client certificate to present (mutual TLS)."},
                    "key_file": {"type": "string", "minLength": 1,
                                 "description": "PEM file of the client certificate's private key (default: read "
                                                "from cert_file)."},
                    "verify": {"type": "boolean",
                               "description": "Check the backend's certificate and host name (default true). "
                                              "false lets anyone on the path read and change the traffic: for "
                                              "tests only."},
                },
            },
            "headers": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "Headers added to every call, e.g. X-Api-Key: ${secret.CRM_KEY}. A header "
                                       "of the same name given by the call replaces it."},
        },
        # url or urls, not both (said without oneOf, which the reference generator reads as short forms)
        "anyOf": [{"required": ["url"]}, {"required": ["urls"]}],
        "not": {"required": ["url", "urls"]},
    }

    OPERATIONS: ClassVar[dict[str, Operation]] = {"request": REQUEST_OPERATION}
    DEFAULT_OPERATION: ClassVar[str | None] = "request"

    def __init__(self, name: str, config: dict[str, Any], context: EndpointContext | None = None) -> None:
        super().__init__(name, config, context)
        if ("url" in config) == ("urls" in config):
            raise ValueError("give url (one base URL) or urls (several), not both or neither")
        urls = [config["url"]] if "url" in config else list(config["urls"])
        if not urls:
            raise ValueError("urls: give at least one URL")
        default_headers = [(str(k).lower(), str(v)) for k, v in (config.get("headers") or {}).items()]
        self.endpoints: tuple[Target, ...] = tuple(_target(str(url), default_headers) for url in urls)
        self.targets = tuple(t.display for t in self.endpoints)

        timeout = config.get("timeout") or {}
        self.connect_timeout = setting_duration(timeout, "connect", DEFAULT_CONNECT, "timeout")
        self.read_timeout = setting_duration(timeout, "read", DEFAULT_READ, "timeout")
        self.total_timeout = setting_duration(timeout, "total", None, "timeout")
        pool = config.get("pool") or {}
        self.max_connections = int(pool.get("max_connections", DEFAULT_MAX_CONNECTIONS))
        self.keepalive = setting_duration(pool, "keepalive", DEFAULT_KEEPALIVE, "pool") or 0.0
        self.tls = _tls_context(config.get("tls"))

        self.transport: Http1Pool | None = None
        self._limits = Limits(self.connect_timeout, self.read_timeout, self.total_timeout)

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        self._opened()

    def _opened(self) -> Http1Pool:
        if self.transport is None:
            if self.tls is None and any(t.base.startswith("https:") for t in self.endpoints):
                load_default_authorities()  # aiohttp's default context, if the server left it empty
            self.transport = Http1Pool(max_connections=self.max_connections, keepalive_timeout=self.keepalive,
                                       default_limits=self._limits, tls=self.tls)
        return self.transport

    async def close(self) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            await transport.aclose()

    async def check(self) -> None:
        """Ready when a TCP connection to one of the URLs opens (only for ``required: true``)."""
        failures = []
        for target in self.endpoints:
            parts = urlsplit(target.base)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                async with asyncio.timeout(self.connect_timeout or 5.0):
                    _, writer = await asyncio.open_connection(parts.hostname, port)
                writer.close()
                return
            except (OSError, TimeoutError) as exc:
                failures.append(f"{target.display}: {exc or type(exc).__name__}")
        raise BackendUnreachable(f"endpoint {self.name!r} is unreachable", internal="; ".join(failures))

    # --- calls -------------------------------------------------------------------------------

    def prepare(self, operation: str, config: dict[str, Any], ctx: CompileContext, invoke: Invoke) -> Invocation:
        return compile_request(self.name, config, ctx, invoke)

    async def attempt(self, request: Request, target: int) -> Reply:
        assert isinstance(request, HttpRequest)
        transport = self.transport or self._opened()
        base = self.endpoints[target]
        headers = base.headers_with(request.headers, request.forwarded)
        if request.observation is not None:
            headers = request.observation.propagate(headers)  # the attempt's trace context, to the backend
        try:
            answer = await transport.exchange(request.method, base.base + request.path, headers, request.body,
                                              self._limits)
        except httpx.TransportError as exc:
            error = self.failure(exc, base, request)
            source = request.source
            raise error from (None if source is not None and error is source.error else exc)
        return self._reply(answer, base)

    def failure(self, exc: httpx.TransportError, base: Target, request: HttpRequest) -> BaseException:
        """What a failed exchange is raised as: the request body's own failure as itself, else
        BackendTimeout or BackendUnreachable naming the endpoint (the address only internal)."""
        source = request.source
        if source is not None and source.error is not None:
            return source.error
        where = f"{base.display}: {exc}"
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeout(f"endpoint {self.name!r} timed out", internal=where,
                                  reached=not isinstance(exc, httpx.ConnectTimeout))
        return BackendUnreachable(f"endpoint {self.name!r} is unreachable", internal=where)

    def _reply(self, answer: Exchange, target: Target) -> Reply:
        names = _REPLY_NAMES
        headers = []
        for key, value in answer.raw_headers:
            name = names.get(key, _UNSEEN)
            if name is _UNSEEN:
                name = _reply_name(key)
            if name is not None:
                headers.append((name, value.decode("latin-1")))
        if answer.stream is None:
            return Reply(answer.status, headers, answer.body)
        chunks = _ReplyChunks(answer.stream, self.name, target.display)
        return Reply(answer.status, headers, None, chunks, closer=chunks)


# a reply header's name as sent -> its lower-case text, None for a hop-by-hop one: backends send
# the same few names over and over (bounded: past 4096 names each is decoded as it comes)
_REPLY_NAMES: dict[bytes, str | None] = {}
_UNSEEN = ""


def _reply_name(key: bytes) -> str | None:
    name = key.decode("latin-1").lower()
    kept = None if name in HOP_BY_HOP else name
    if len(_REPLY_NAMES) < 4096:
        _REPLY_NAMES[key] = kept
    return kept


class HttpEndpoint(Endpoint):
    """An http endpoint with the shared resilience layer, and ``request()`` for Python callers::

        endpoint = HttpEndpoint("orders", {"url": "http://127.0.0.1:8080", "retry": {"attempts": 3}})
        reply = await endpoint.request("GET", "/orders/7")
    """

    connector: HttpConnector

    def __init__(self, name: str, config: dict[str, Any], context: EndpointContext | None = None) -> None:
        super().__init__(name, HttpConnector(name, config, context), config, "http")

    def prepare(self, operation: str, config: dict[str, Any], ctx: CompileContext) -> Invocation:
        """One step's request; on a plain endpoint (one URL, no retry) a call compiled into one
        coroutine (connectors/_http_call.py)."""
        if not self.plain():
            return super().prepare(operation, config, ctx)
        from connectors._http_call import FoldedCall

        render, accept = compile_render(config, ctx)
        return FoldedCall(self, render, accept)

    def plain(self) -> bool:
        """Whether a call is one attempt on the one URL (whatever its breaker and deadline)."""
        return len(self.breakers) == 1 and self.retry.attempts == 1

    async def request(self, method: str, path: str, *, headers: list[tuple[str, str]] | None = None,
                      body: bytes | AsyncIterable[bytes] | None = None,
                      query: list[tuple[str, str]] | None = None,
                      forwarded: list[tuple[str, str]] | None = None) -> Reply:
        """Call the backend: ``path`` (and ``query``) joined to a base URL.  ``headers`` replace
        the endpoint's of the same name whatever their case; ``forwarded`` ones (copied from a caller)
        never do."""
        # names in lower case, as a flow's calls give them: the precedence compares names as they are
        if headers:
            headers = [(k.lower(), v) for k, v in headers]
        if forwarded:
            forwarded = [(k.lower(), v) for k, v in forwarded]
        return await self.invoke(HttpRequest(method, path, headers, body, query, forwarded=forwarded))

    @property
    def transport(self) -> Http1Pool | None:
        return self.connector.transport


HttpConnector.ENDPOINT_CLASS = HttpEndpoint  # type: ignore[attr-defined]  # build_endpoint builds this class
