"""HTTP endpoints: a pooled keep-alive client with timeouts, retry with backoff, a circuit
breaker per URL, and failover or round-robin over several URLs.

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

How one ``request()`` goes:

1. The URLs are tried in their order (failover) or starting from the next one in turn
   (round-robin); a URL whose breaker is open is skipped.
2. A connection failure (refused, reset, DNS, connect timeout) moves on to the next URL at
   once; when every URL failed, the whole round is retried after a backoff, up to
   ``retry.attempts`` rounds.  A read timeout is retried only with ``retry.on_timeout``
   (the backend may have acted on the request).  A reply whose status is in
   ``retry.on_status`` is retried the same way; once retries are exhausted that last reply
   is returned as it is, since what a 5xx means is the flow's business (the call step's
   ``expect_status`` turns unexpected statuses into a 502 ``backend-status`` problem).
   Independently of ``retry``, an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE)
   whose connection closes before any answer is sent once more on a fresh connection by the
   pool (RFC 9112, 9.3.1: a keep-alive connection the backend closed while idle); POST and
   PATCH never are.
3. A request body given as an async iterable is sent as it is read (chunked) and can be
   sent only once: after its first chunk was taken, nothing is retried.  If the body's own
   source fails (the caller went away, the body was over its limit), that error is raised,
   not a backend error.
4. Failures raise ``BackendUnreachable`` (502), ``BackendTimeout`` (504), or
   ``CircuitOpen`` (503) when every URL's breaker is open.  Messages name the endpoint;
   addresses (without credentials) go to ``FlowError.internal``, for the logs only.

The pool is ``connectors.aiohttp_transport.AiohttpTransport``, the httpx transport on
aiohttp's connection pool; the endpoint calls its lean ``exchange()`` path, which builds no
httpx objects per request (``benchmarks/http_client.py`` measures what that saves).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import aiohttp
import httpx

from connectors import observe
from connectors._tls import load_default_authorities
from connectors.aiohttp_transport import AiohttpTransport, Exchange, ReplyStream, client_timeout
from connectors.base import register_connector
from engine import metrics
from engine.errors import BackendError, BackendTimeout, BackendUnreachable, CircuitOpen
from engine.units import parse_duration

log = logging.getLogger("interlace.http")

# Headers that describe one connection, not the message: never handed to flows.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                        "upgrade", "proxy-authenticate"})

DEFAULT_CONNECT = "5s"
DEFAULT_READ = "30s"
DEFAULT_BACKOFF = "100ms"
DEFAULT_MAX_BACKOFF = "2s"
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_RESET = "30s"
DEFAULT_BREAKER_STATUSES = (502, 503, 504)
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_KEEPALIVE = "30s"


def _duration(description: str) -> dict[str, Any]:
    return {"type": ["string", "number"], "description": description + " A duration: seconds as a number, or "
                                                                       "with a unit: 250ms, 2s, 1m."}


def _statuses(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}, "uniqueItems": True,
            "description": description}


# ----------------------------------------------------------------------------- the reply


@dataclass
class HttpReply:
    """A backend's answer.  ``body`` holds it when it was read whole (a Content-Length up to
    256 KiB); otherwise ``stream`` yields it and ``body`` is None until ``read()``.  Header
    names are lower-case; hop-by-hop headers are removed.  Call ``aclose()`` when a streamed
    reply is dropped unread, so that its connection is not held until garbage collection."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None
    stream: AsyncIterator[bytes] | None = None
    _chunks: _ReplyChunks | None = field(default=None, repr=False, compare=False)

    async def read(self) -> bytes:
        """The whole body, reading the stream if there is one (once; the result is kept)."""
        if self.body is None:
            stream = self.stream
            self.body = b"".join([chunk async for chunk in stream]) if stream is not None else b""
            self.stream = None
        return self.body

    async def aclose(self) -> None:
        """Give up an unread stream (closes its connection); harmless otherwise."""
        self.stream = None
        if self._chunks is not None:
            await self._chunks.aclose()

    def header(self, name: str) -> str | None:
        """The first value of a header (``name`` in lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _ReplyChunks:
    """A streamed reply body as our errors: a backend that stalls or breaks off mid-answer
    raises BackendTimeout or BackendError naming the endpoint, never an httpx exception."""

    __slots__ = ("_endpoint", "_iterator", "_source", "_where")

    def __init__(self, source: ReplyStream, endpoint: str, where: str) -> None:
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


class Breaker:
    """A circuit breaker for one URL.

    Closed: calls pass; ``threshold`` consecutive failures open it.  Open: calls are refused
    without touching the backend.  After ``reset`` seconds it is half-open: one call (the
    probe) passes while the others are still refused; the probe's success closes the breaker,
    its failure opens it for another ``reset``.  A threshold of 0 turns it off."""

    REJECT, PASS, PROBE = 0, 1, 2
    __slots__ = ("failures", "opened_at", "probing", "reset", "threshold")

    def __init__(self, threshold: int, reset: float) -> None:
        self.threshold = threshold
        self.reset = reset
        self.failures = 0  # consecutive
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        if self.threshold <= 0:
            return "off"
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.reset else "open"

    def admit(self) -> int:
        """REJECT, PASS, or PROBE (the one call let through while half-open)."""
        if self.opened_at is None:
            return self.PASS
        if self.probing or time.monotonic() - self.opened_at < self.reset:
            return self.REJECT
        self.probing = True
        return self.PROBE

    def succeeded(self, ticket: int) -> bool:
        """Record a success; True when this closed the breaker."""
        if ticket == self.PROBE:
            self.probing = False
        self.failures = 0
        was_open = self.opened_at is not None
        self.opened_at = None
        return was_open

    def failed(self, ticket: int) -> bool:
        """Record a failure; True when this opened the breaker (or reopened it after a probe)."""
        self.failures += 1
        if ticket == self.PROBE:
            self.probing = False
        if self.threshold <= 0:
            return False
        if ticket == self.PROBE or (self.opened_at is None and self.failures >= self.threshold):
            self.opened_at = time.monotonic()
            return True
        return False

    def abandon(self, ticket: int) -> None:
        """The call ended without a verdict (cancelled, or its body's source failed)."""
        if ticket == self.PROBE:
            self.probing = False


@dataclass(slots=True)
class Target:
    """One base URL of an endpoint."""

    base: str  # scheme://host[:port][/base-path], no credentials, no trailing slash
    display: str  # the same, for health and logs
    breaker: Breaker
    headers: list[tuple[str, str]] = field(default_factory=list)  # the endpoint's defaults, plus its credentials
    header_names: frozenset[str] = frozenset()

    def headers_with(self, given: list[tuple[str, str]] | None) -> list[tuple[str, str]]:
        """The defaults, minus those the call gives itself, then the call's headers."""
        if not given:
            return self.headers
        if not self.headers:
            return given
        names = {k.lower() for k, _ in given}
        if names.isdisjoint(self.header_names):
            return self.headers + given
        return [h for h in self.headers if h[0] not in names] + given


class _Retry:
    __slots__ = ("attempts", "backoff", "max_backoff", "on_status", "on_timeout")

    def __init__(self, config: dict[str, Any]) -> None:
        self.attempts = int(config.get("attempts", 1))
        self.backoff = _setting_duration(config, "backoff", DEFAULT_BACKOFF, "retry")
        self.max_backoff = _setting_duration(config, "max_backoff", DEFAULT_MAX_BACKOFF, "retry")
        self.on_status = frozenset(int(s) for s in config.get("on_status", ()))
        self.on_timeout = bool(config.get("on_timeout", False))

    def delay(self, retry: int, retry_after: str | None) -> float:
        """Pause before retry number ``retry`` (1, 2, ...): exponential backoff with jitter
        (between half and all of ``backoff * 2**(retry-1)``, at most ``max_backoff``), so that
        the retries of many callers spread out; a Retry-After in seconds is honoured up to
        ``max_backoff``."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (retry - 1))
        pause = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None and retry_after.strip().isdigit():
            pause = max(pause, min(float(retry_after), self.max_backoff))
        return pause


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
    """A URL without its credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _setting_duration(config: dict[str, Any], key: str, default: str, section: str) -> float:
    try:
        return parse_duration(config.get(key, default))
    except ValueError as exc:
        raise ValueError(f"{section}.{key}: {exc}") from None


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


def _target(url: str, breaker: Breaker, headers: list[tuple[str, str]]) -> Target:
    """A checked base URL; credentials in it become a default Authorization header (Basic), so
    that they never appear in addresses and a call's own Authorization header replaces them."""
    display = _display(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{display if parts.hostname else repr(display)} is not an http:// or https:// URL")
    try:
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError:
        raise ValueError(f"{display!r}: the port is not a number from 0 to 65535") from None
    if parts.query or parts.fragment:
        raise ValueError(f"{display}: a base URL cannot have a query or fragment (calls give their own query)")
    if parts.username is not None:
        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        headers = [h for h in headers if h[0] != "authorization"] + [("authorization", f"Basic {token}")]
    base = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", "")).rstrip("/")
    return Target(base, display, breaker, headers, frozenset(k for k, _ in headers))


# ----------------------------------------------------------------------------- the endpoint


@register_connector("http")
class HttpEndpoint:
    """A named HTTP(S) backend (see the module docstring)."""

    SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "description": "An HTTP(S) backend: one URL, or several with failover or round-robin; pooled keep-alive "
                       "connections, timeouts, retry with backoff and a circuit breaker per URL.",
        "properties": {
            "url": {"type": "string", "minLength": 1,
                    "description": "Base URL (http:// or https://, may include a base path). A call's path is "
                                   "appended to it: url http://crm/api + path /customers/7 calls "
                                   "http://crm/api/customers/7. Give url or urls, not both."},
            "urls": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                     "description": "Several base URLs of the same service, used as strategy says. A URL that "
                                    "cannot be connected to, or whose breaker is open, is skipped for the next."},
            "strategy": {"enum": ["failover", "round-robin"],
                         "description": "With urls: failover (default) tries them in the order given; round-robin "
                                        "starts each call at the next URL in turn, spreading the load."},
            "timeout": {
                "type": "object", "additionalProperties": False,
                "description": "Time limits of one attempt: connect (opening a connection, or waiting for a "
                               "free pooled one; default 5s), read (longest wait for the next bytes of the answer; "
                               "default 30s), total (the whole attempt; default none). Exceeding one fails the "
                               "call with backend-timeout (504).",
                "properties": {
                    "connect": _duration("Opening a connection, including waiting for a free one when the pool "
                                         "is full (default 5s)."),
                    "read": _duration("Longest wait for the next bytes of the answer, headers or body (default "
                                      "30s)."),
                    "total": _duration("The whole attempt, from connecting to the last byte of a body read "
                                       "whole (default: no limit)."),
                },
            },
            "retry": {
                "type": "object", "additionalProperties": False,
                "description": "Retries with exponential backoff and jitter: attempts (in all; default 1, no "
                               "retry), backoff (first pause, doubled each time; default 100ms), max_backoff "
                               "(default 2s), on_status (reply statuses to retry, e.g. [502, 503]; when retries "
                               "run out the last reply is returned), on_timeout (retry read timeouts too; default "
                               "false). Connection failures (refused, reset, DNS, connect timeout) are always "
                               "retried; a request body streamed from the caller is never sent twice.",
                "properties": {
                    "attempts": {"type": "integer", "minimum": 1, "maximum": 10,
                                 "description": "Attempts in all, the first included (default 1: no retry). "
                                                "Each attempt tries every URL once."},
                    "backoff": _duration("Pause before the first retry, doubled before each next one; each "
                                         "pause is randomised between half and all of it (default 100ms)."),
                    "max_backoff": _duration("Longest pause between attempts (default 2s); also caps a "
                                             "Retry-After sent by the backend."),
                    "on_status": _statuses("Reply statuses retried like connection failures, e.g. [502, 503]. "
                                           "When retries run out the last such reply is returned to the flow "
                                           "as it is (default: none)."),
                    "on_timeout": {"type": "boolean",
                                   "description": "Retry read and total timeouts too (default false: the "
                                                  "backend may have acted on the request already)."},
                },
            },
            "breaker": {
                "type": "object", "additionalProperties": False,
                "description": "A circuit breaker per URL: after `failures` consecutive failures (default 5: "
                               "connection failures, timeouts, replies with a status in on_status, default [502, "
                               "503, 504]) the URL is not called for `reset` (default 30s); calls fail at once "
                               "with circuit-open (503) when no URL is left. Then one probe call is let through: "
                               "success closes the breaker, failure opens it again. Without this key there is no "
                               "breaker.",
                "properties": {
                    "failures": {"type": "integer", "minimum": 1,
                                 "description": "Consecutive failures (connection failures, timeouts, replies "
                                                "with a status in on_status) that open it (default 5)."},
                    "reset": _duration("How long it stays open before the probe (default 30s)."),
                    "on_status": _statuses("Reply statuses that count as failures (default [502, 503, 504])."),
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
                    "keepalive": _duration("How long an idle connection stays open for reuse (default 30s)."),
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

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        if ("url" in config) == ("urls" in config):
            raise ValueError("give url (one base URL) or urls (several), not both or neither")
        urls = [config["url"]] if "url" in config else list(config["urls"])
        if not urls:
            raise ValueError("urls: give at least one URL")
        breaker = config.get("breaker")
        threshold = int(breaker.get("failures", DEFAULT_BREAKER_FAILURES)) if breaker is not None else 0
        reset = _setting_duration(breaker or {}, "reset", DEFAULT_BREAKER_RESET, "breaker")
        self.breaker_statuses = frozenset(int(s) for s in (breaker or {}).get("on_status", DEFAULT_BREAKER_STATUSES))
        default_headers = [(str(k).lower(), str(v)) for k, v in (config.get("headers") or {}).items()]
        self.targets: tuple[Target, ...] = tuple(_target(str(url), Breaker(threshold, reset), default_headers)
                                                 for url in urls)
        if threshold > 0:
            for target in self.targets:
                metrics.breaker_known(name, target.display)
        self.round_robin = config.get("strategy", "failover") == "round-robin"
        self._next = 0

        timeout = config.get("timeout") or {}
        self.connect_timeout = _setting_duration(timeout, "connect", DEFAULT_CONNECT, "timeout")
        self.read_timeout = _setting_duration(timeout, "read", DEFAULT_READ, "timeout")
        self.total_timeout = _setting_duration(timeout, "total", "0", "timeout") if "total" in timeout else None
        self.retry = _Retry(config.get("retry") or {})
        pool = config.get("pool") or {}
        self.max_connections = int(pool.get("max_connections", DEFAULT_MAX_CONNECTIONS))
        self.keepalive = _setting_duration(pool, "keepalive", DEFAULT_KEEPALIVE, "pool")
        self.tls = _tls_context(config.get("tls"))

        self.transport: AiohttpTransport | None = None
        self._timeout: aiohttp.ClientTimeout | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        self._opened()

    def _opened(self) -> AiohttpTransport:
        if self.transport is None:
            if self.tls is None and any(t.base.startswith("https:") for t in self.targets):
                load_default_authorities()  # aiohttp's default context, if the server left it empty
            self._timeout = client_timeout(self.connect_timeout, self.read_timeout, self.total_timeout)
            self.transport = AiohttpTransport(max_connections=self.max_connections, keepalive_timeout=self.keepalive,
                                              default_timeout=self._timeout, tls=self.tls)
        return self.transport

    async def close(self) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            await transport.aclose()

    def health(self) -> dict[str, Any]:
        return {
            "kind": "http",
            "strategy": "round-robin" if self.round_robin else "failover",
            "urls": [{"url": t.display, "breaker": t.breaker.state, "consecutive_failures": t.breaker.failures}
                     for t in self.targets],
        }

    # --- calls -------------------------------------------------------------------------------

    def _in_order(self) -> tuple[Target, ...]:
        targets = self.targets
        if not self.round_robin or len(targets) == 1:
            return targets
        start = self._next % len(targets)
        self._next = start + 1
        return targets[start:] + targets[:start]

    async def request(self, method: str, path: str, *, headers: list[tuple[str, str]] | None = None,
                      body: bytes | AsyncIterable[bytes] | None = None,
                      query: list[tuple[str, str]] | None = None) -> HttpReply:
        """Call the backend: ``path`` (and ``query``) joined to a base URL.  See the module
        docstring for retries, failover, the breaker and the errors raised."""
        transport = self.transport or self._opened()
        if path and path[0] != "/":
            path = "/" + path
        if query:
            path = f"{path}{'&' if '?' in path else '?'}{urlencode(query)}"
        source: _OneShotBody | None = None
        data: bytes | AsyncIterable[bytes] | None = body
        if isinstance(body, (bytearray, memoryview)):
            data = bytes(body)
        elif body is not None and not isinstance(body, bytes):
            data = source = _OneShotBody(body)

        held: HttpReply | None = None  # the last reply with a status to retry
        error: BackendError | None = None  # the last failure
        tried = False
        retry = self.retry
        for attempt in range(retry.attempts):
            if attempt:
                if source is not None and source.started:
                    break
                pause = retry.delay(attempt, held.header("retry-after") if held is not None else None)
                reason = f"status {held.status}" if held is not None else error.internal if error else "?"
                log.warning("endpoint %r: attempt %d of %d failed (%s); retrying in %.0f ms", self.name, attempt,
                            retry.attempts, reason, pause * 1000)
                metrics.backend_retry(self.name)
                await asyncio.sleep(pause)
            for target in self._in_order():
                ticket = target.breaker.admit()
                if ticket == Breaker.REJECT:
                    continue
                if ticket == Breaker.PROBE:
                    metrics.breaker_changed(self.name, target.display, "half_open")
                tried = True
                seen = observe.Attempt(self.name, target.display, method, target.base + path)
                try:
                    answer = await transport.exchange(method, target.base + path,
                                                      seen.propagate(target.headers_with(headers)), data,
                                                      self._timeout)
                except httpx.TransportError as exc:
                    if source is not None and source.error is not None:
                        target.breaker.abandon(ticket)
                        seen.abandoned()
                        raise source.error from None
                    self._failed(target, ticket)
                    resendable = source is None or not source.started
                    error = self._error(target, exc)
                    seen.failed("timeout" if isinstance(error, BackendTimeout) else "unreachable", error)
                    if held is not None:
                        await held.aclose()
                        held = None
                    if resendable and (not isinstance(error, BackendTimeout) or isinstance(exc, httpx.ConnectTimeout)
                                       or retry.on_timeout):
                        continue
                    raise error from exc
                except BaseException:
                    target.breaker.abandon(ticket)  # cancelled: says nothing about the backend
                    seen.abandoned()
                    raise
                status = answer.status
                seen.answered(status)
                if status in self.breaker_statuses:
                    self._failed(target, ticket)
                elif target.breaker.succeeded(ticket):
                    log.warning("endpoint %r: circuit closed for %s", self.name, target.display)
                    metrics.breaker_changed(self.name, target.display, "closed")
                reply = self._reply(answer, target)
                if status not in retry.on_status or (source is not None and source.started):
                    if held is not None:
                        await held.aclose()
                    return reply
                if held is not None:
                    await held.aclose()
                held, error = reply, None
            if not tried:
                break
        if held is not None:
            return held
        if error is not None:
            raise error
        raise CircuitOpen(f"endpoint {self.name!r} is not being called for now: its circuit breaker is open",
                          internal=", ".join(f"{t.display}: {t.breaker.state}" for t in self.targets))

    def _failed(self, target: Target, ticket: int) -> None:
        if target.breaker.failed(ticket):
            log.warning("endpoint %r: circuit opened for %s after %d consecutive failures; next probe in %.1f s",
                        self.name, target.display, target.breaker.failures, target.breaker.reset)
            metrics.breaker_changed(self.name, target.display, "open")

    def _error(self, target: Target, exc: httpx.TransportError) -> BackendError:
        where = f"{target.display}: {exc}"
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeout(f"endpoint {self.name!r} timed out", internal=where)
        return BackendUnreachable(f"endpoint {self.name!r} is unreachable", internal=where)

    def _reply(self, answer: Exchange, target: Target) -> HttpReply:
        headers = [(name, value.decode("latin-1")) for key, value in answer.raw_headers
                   if (name := key.decode("latin-1").lower()) not in HOP_BY_HOP]
        if answer.stream is None:
            return HttpReply(answer.status, headers, answer.body)
        chunks = _ReplyChunks(answer.stream, self.name, target.display)
        return HttpReply(answer.status, headers, None, chunks, chunks)

