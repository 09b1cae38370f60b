"""HTTP endpoints: pooled keep-alive client, timeouts, retry with backoff, circuit breaker,
failover and round-robin over several URLs.

The client API is httpx (``httpx.Request``/``httpx.Response``) on the aiohttp-backed
transport of ``connectors.aiohttp_transport``.  Requests go straight to the transport: the
``httpx.AsyncClient`` layer (auth flows, redirects, cookies, event hooks) costs about five
times the transport's own overhead per request and a mediator uses none of it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import httpx

from connectors.aiohttp_transport import AiohttpTransport
from connectors.base import register_connector
from engine.errors import BackendTimeout, BackendUnreachable, CircuitOpen
from engine.units import parse_duration

log = logging.getLogger("interlace.http")

DURATION = {"type": ["string", "number"], "description": "A duration: seconds, or e.g. 250ms, 2s."}
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                        "upgrade", "proxy-authenticate"})


@dataclass
class HttpReply:
    """A backend's answer: the whole body when small, else a stream."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None
    stream: AsyncIterator[bytes] | None = None
    _response: httpx.Response | None = field(default=None, repr=False)

    async def read(self) -> bytes:
        if self.body is None:
            chunks = []
            if self.stream is not None:
                async for chunk in self.stream:
                    chunks.append(chunk)
            self.body = b"".join(chunks)
            self.stream = None
        return self.body

    async def aclose(self) -> None:
        if self._response is not None:
            await self._response.aclose()


class Breaker:
    """Opens after ``threshold`` consecutive failures; after ``reset`` seconds lets one probe through."""

    __slots__ = ("failures", "opened_at", "probing", "reset", "threshold")

    def __init__(self, threshold: int, reset: float) -> None:
        self.threshold = threshold
        self.reset = reset
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.reset else "open"

    def allow(self) -> bool:
        """May a request go through now?  In half-open state only one probe at a time."""
        if self.opened_at is None or self.threshold <= 0:
            return True
        if time.monotonic() - self.opened_at < self.reset or self.probing:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def failure(self) -> None:
        self.failures += 1
        self.probing = False
        if self.threshold > 0 and (self.failures >= self.threshold or self.opened_at is not None):
            self.opened_at = time.monotonic()


@dataclass
class Target:
    base: str  # scheme://host:port/base-path, no trailing slash
    display: str  # the URL without credentials, for messages
    breaker: Breaker


def _display(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class _Retry:
    def __init__(self, config: dict[str, Any]) -> None:
        self.attempts = int(config.get("attempts", 1))
        self.backoff = parse_duration(config.get("backoff", "100ms"))
        self.max_backoff = parse_duration(config.get("max_backoff", "2s"))
        self.on_status = frozenset(int(s) for s in config.get("on_status", []))
        self.on_timeout = bool(config.get("on_timeout", False))

    def delay(self, attempt: int) -> float:
        # exponential backoff with full jitter, so that retries of many callers spread out
        return float(random.uniform(0, min(self.max_backoff, self.backoff * (2 ** attempt))))


@register_connector("http")
class HttpEndpoint:
    SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "description": "An HTTP(S) backend: one URL, or several with failover or round-robin.",
        "properties": {
            "url": {"type": "string", "description": "Base URL; a call's path is appended to it."},
            "urls": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                     "description": "Several base URLs for the same service."},
            "strategy": {"enum": ["failover", "round-robin"],
                         "description": "With urls: try them in order (failover, default) or rotate (round-robin); "
                                        "either way an unreachable one is skipped."},
            "timeout": {
                "type": "object", "additionalProperties": False,
                "description": "Time limits of one attempt (defaults: connect 5s, read 30s, no total).",
                "properties": {"connect": {**DURATION, "description": "Connecting, including waiting for a "
                                                                       "free pooled connection."},
                               "read": {**DURATION, "description": "Between two reads of the answer."},
                               "total": {**DURATION, "description": "The whole attempt."}},
            },
            "retry": {
                "type": "object", "additionalProperties": False,
                "description": "Retry with exponential backoff and jitter on connection errors (never once a "
                               "streamed body has started to go).",
                "properties": {
                    "attempts": {"type": "integer", "minimum": 1, "maximum": 10,
                                 "description": "Attempts in all (default 1: no retry)."},
                    "backoff": {**DURATION, "description": "Pause before the first retry (default 100ms), doubled "
                                                           "each time."},
                    "max_backoff": {**DURATION, "description": "Longest pause (default 2s)."},
                    "on_status": {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599},
                                  "description": "Statuses that are retried too, e.g. [502, 503]."},
                    "on_timeout": {"type": "boolean",
                                   "description": "Retry read timeouts too (default false: the backend may have "
                                                  "acted on the request)."},
                },
            },
            "breaker": {
                "type": "object", "additionalProperties": False,
                "description": "Circuit breaker per URL: after `failures` consecutive failures calls fail at once "
                               "(503 circuit-open) for `reset`, then one probe decides.",
                "properties": {"failures": {"type": "integer", "minimum": 1},
                               "reset": {**DURATION, "description": "Pause before the probe (default 30s)."}},
            },
            "pool": {
                "type": "object", "additionalProperties": False,
                "description": "Connection pool (kept alive between calls).",
                "properties": {"max_connections": {"type": "integer", "minimum": 1,
                                                   "description": "Open connections at most (default 100)."},
                               "keepalive": {**DURATION, "description": "Idle time before a pooled connection "
                                                                        "closes (default 30s)."}},
            },
            "headers": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "Headers added to every call (e.g. an API key from ${secret.NAME})."},
        },
        "oneOf": [{"required": ["url"], "not": {"required": ["urls"]}},
                  {"required": ["urls"], "not": {"required": ["url"]}}],
    }

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        urls = [config["url"]] if "url" in config else list(config.get("urls", []))
        if not urls:
            raise ValueError("give url or urls")
        breaker = config.get("breaker") or {}
        threshold = int(breaker.get("failures", 0))
        reset = parse_duration(breaker.get("reset", "30s"))
        self.targets: list[Target] = []
        for url in urls:
            parts = urlsplit(str(url))
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{_display(str(url)) or url!r} is not an http(s) URL")
            self.targets.append(Target(str(url).rstrip("/"), _display(str(url)), Breaker(threshold, reset)))
        self.round_robin = config.get("strategy") == "round-robin"
        timeout = config.get("timeout") or {}
        connect = parse_duration(timeout.get("connect", "5s"))
        read = parse_duration(timeout.get("read", "30s"))
        total = parse_duration(timeout["total"]) if "total" in timeout else None
        self.timeout_extension = {"timeout": {"connect": connect, "read": read, "write": read, "pool": connect,
                                              "total": total}}
        self.retry = _Retry(config.get("retry") or {})
        pool = config.get("pool") or {}
        self.max_connections = int(pool.get("max_connections", 100))
        self.keepalive = parse_duration(pool.get("keepalive", "30s"))
        self.default_headers = [(str(k).lower(), str(v)) for k, v in (config.get("headers") or {}).items()]
        self.transport: AiohttpTransport | None = None
        self._next = 0

    async def open(self) -> None:
        if self.transport is None:
            self.transport = AiohttpTransport(max_connections=self.max_connections, keepalive_timeout=self.keepalive)

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.aclose()
            self.transport = None

    def health(self) -> dict[str, Any]:
        return {"kind": "http", "strategy": "round-robin" if self.round_robin else "failover",
                "urls": [{"url": t.display, "breaker": t.breaker.state, "failures": t.breaker.failures}
                         for t in self.targets]}

    def _order(self) -> list[Target]:
        if len(self.targets) == 1:
            return self.targets
        if self.round_robin:
            start = self._next % len(self.targets)
            self._next += 1
            return self.targets[start:] + self.targets[:start]
        return self.targets

    async def request(self, method: str, path: str, *, headers: list[tuple[str, str]] | None = None,
                      body: bytes | AsyncIterable[bytes] | None = None,
                      query: list[tuple[str, str]] | None = None) -> HttpReply:
        if self.transport is None:
            await self.open()
        assert self.transport is not None
        replayable = body is None or isinstance(body, bytes)
        attempts = self.retry.attempts if replayable else 1
        all_headers = self.default_headers + (headers or []) if self.default_headers else (headers or [])
        suffix = path if not query else f"{path}?{urlencode(query)}"
        last_error: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.retry.delay(attempt - 1))
            tried_any = False
            for target in self._order():
                if not target.breaker.allow():
                    continue
                tried_any = True
                try:
                    response = await self._send(target, method, suffix, all_headers, body)
                except httpx.TimeoutException as exc:
                    target.breaker.failure()
                    last_error = BackendTimeout(f"endpoint {self.name!r} timed out",
                                                internal=f"{target.display}: {exc}")
                    if isinstance(exc, httpx.ConnectTimeout) and replayable:
                        continue  # nothing was sent: the next URL may answer
                    if not self.retry.on_timeout:
                        raise last_error from exc
                    break
                except httpx.TransportError as exc:
                    target.breaker.failure()
                    last_error = BackendUnreachable(f"endpoint {self.name!r} is unreachable",
                                                    internal=f"{target.display}: {exc}")
                    if not replayable:
                        raise last_error from exc
                    continue
                if response.status_code in self.retry.on_status:
                    target.breaker.failure()
                    if attempt + 1 < attempts:
                        await response.aclose()
                        last_error = None
                        break
                else:
                    target.breaker.success()
                return self._reply(response)
            if not tried_any and last_error is None:
                raise CircuitOpen(f"endpoint {self.name!r}: circuit open, not calling it for now")
            if not tried_any:
                break
        assert last_error is not None
        raise last_error

    async def _send(self, target: Target, method: str, suffix: str, headers: list[tuple[str, str]],
                    body: bytes | AsyncIterable[bytes] | None) -> httpx.Response:
        assert self.transport is not None
        request = httpx.Request(method, target.base + suffix, headers=headers, content=body,
                                extensions=self.timeout_extension)
        return await self.transport.handle_async_request(request)

    @staticmethod
    def _reply(response: httpx.Response) -> HttpReply:
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers.raw
                   if k.decode("latin-1").lower() not in HOP_BY_HOP]
        body = response.extensions.get("body")
        if body is not None:  # read whole by the transport
            return HttpReply(response.status_code, headers, body, None, None)
        return HttpReply(response.status_code, headers, None, response.aiter_raw(), response)
