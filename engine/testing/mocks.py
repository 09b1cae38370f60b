"""Mocked endpoints: the real HTTP endpoint (retries, failover, breaker, timeouts as
configured) on a transport that answers from the suite's rules instead of the network."""

from __future__ import annotations

import asyncio
import fnmatch
import mimetypes
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from connectors.aiohttp_transport import Exchange
from connectors.http import HttpEndpoint
from engine import jsonfast
from engine.expressions import Expr, compile_condition
from engine.message import Message
from engine.model import Location
from engine.units import parse_duration


@dataclass
class MockCall:
    method: str
    path: str  # after the endpoint's base URL, without the query
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def message(self) -> Message:
        return Message(body=self.body, content_type=self.headers.get("content-type"), headers=self.headers)


@dataclass
class Rule:
    spec: Any
    location: Location
    condition: Expr | None
    served: int = 0

    def matches(self, call: MockCall) -> bool:
        match = self.spec.get("match") or {}
        if "method" in match and str(match["method"]).upper() != call.method:
            return False
        if "path" in match and not fnmatch.fnmatchcase(call.path, str(match["path"])):
            return False
        for key, value in (match.get("query") or {}).items():
            if call.query.get(str(key)) != str(value):
                return False
        for key, value in (match.get("headers") or {}).items():
            if call.headers.get(str(key).lower()) != str(value):
                return False
        return self.condition is None or self.condition.is_true(call.message())


def body_of(spec: Any, base: Path) -> tuple[bytes, str | None]:
    """The body a request, response or expectation spells out, with its default content type."""
    content_type = spec.get("content_type")
    if "json" in spec:
        return jsonfast.dumps(spec["json"]), content_type or "application/json"
    if "xml" in spec:
        return str(spec["xml"]).encode(), content_type or "application/xml"
    if "text" in spec:
        return str(spec["text"]).encode(), content_type or "text/plain; charset=utf-8"
    if "file" in spec:
        path = base / str(spec["file"])
        guessed = mimetypes.guess_type(path.name)[0]
        return path.read_bytes(), content_type or guessed or "application/octet-stream"
    return b"", content_type


@dataclass
class MockTransport:
    """Stands in for the endpoint's connection pool; records every call."""

    endpoint: HttpEndpoint
    rules: list[Rule]
    base_dir: Path
    calls: list[MockCall] = field(default_factory=list)
    unmatched: list[MockCall] = field(default_factory=list)

    def _relative(self, url: str) -> tuple[str, dict[str, str]]:
        for target in self.endpoint.connector.endpoints:
            if url.startswith(target.base):
                url = url[len(target.base):]
                break
        parts = urlsplit(url if url.startswith("/") else "/" + url)
        return parts.path or "/", dict(parse_qsl(parts.query, keep_blank_values=True))

    async def exchange(self, method: str, url: str, headers: Any, body: bytes | AsyncIterable[bytes] | None,
                       limits: Any = None) -> Exchange:
        if body is not None and not isinstance(body, bytes):
            body = b"".join([chunk async for chunk in body])
        path, query = self._relative(url)
        call = MockCall(method.upper(), path, query, {str(k).lower(): str(v) for k, v in headers}, body or b"")
        self.calls.append(call)
        for rule in self.rules:
            if rule.matches(call):
                return await self._serve(rule)
        self.unmatched.append(call)
        raise httpx.ConnectError("no mock matched this call")

    async def _serve(self, rule: Rule) -> Exchange:
        spec = rule.spec
        if "fail" in spec:
            if spec["fail"] == "timeout":
                raise httpx.ReadTimeout("mocked: the backend did not answer in time")
            raise httpx.ConnectError("mocked: connection refused")
        answers = spec["respond"] if isinstance(spec["respond"], list) else [spec["respond"]]
        answer = answers[min(rule.served, len(answers) - 1)]
        rule.served += 1
        if "delay" in answer:
            delay = parse_duration(answer["delay"])
            connector = self.endpoint.connector
            limit = min(t for t in (connector.read_timeout, connector.total_timeout) if t is not None)
            if delay >= limit:
                # a real backend this slow would hit the endpoint's timeout: say so without waiting
                raise httpx.ReadTimeout("mocked: the answer came later than the read timeout")
            await asyncio.sleep(delay)
        body, content_type = body_of(answer, self.base_dir)
        headers = [(str(k).lower().encode(), str(v).encode()) for k, v in (answer.get("headers") or {}).items()]
        if content_type and not any(k == b"content-type" for k, _ in headers):
            headers.append((b"content-type", content_type.encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        return Exchange(int(answer.get("status", 200)), tuple(headers), body, None)

    async def aclose(self) -> None:
        return None


def make_rule(spec: Any, location: Location, namespaces: dict[str, str]) -> Rule:
    condition = None
    body = (spec.get("match") or {}).get("body")
    if body is not None:
        condition = compile_condition(body)
        if namespaces:
            condition = Expr(condition.source, namespaces)
    return Rule(spec, location, condition)


class MockFactory:
    """``endpoint_factory`` for compile_project: real endpoints on mock transports."""

    def __init__(self, rules: dict[str, list[Rule]], base_dir: Path) -> None:
        self.rules = rules
        self.base_dir = base_dir
        self.transports: dict[str, MockTransport] = {}

    def __call__(self, name: str, kind: str, config: dict[str, Any]) -> Any:
        if kind == "soap":  # an http endpoint that writes and reads envelopes: mocked the same way
            from connectors.base import EndpointContext
            from connectors.resilience import build_endpoint

            soap = build_endpoint(name, kind, config, EndpointContext(self.base_dir))
            soap.retry.backoff = soap.retry.max_backoff = 0.0
            mocked = MockTransport(soap, self.rules.get(name, []), self.base_dir)  # type: ignore[arg-type]
            soap.connector.transport = mocked  # type: ignore[attr-defined]
            self.transports[name] = mocked
            return soap
        if kind != "http":
            if self.rules.get(name):
                raise ValueError(f"endpoint {name!r}: only http endpoints can be mocked so far; a {kind} endpoint "
                                 f"without mocks runs for real (e.g. an embedded SQLite file)")
            from connectors.base import EndpointContext
            from connectors.resilience import build_endpoint

            return build_endpoint(name, kind, config, EndpointContext(self.base_dir))
        endpoint = HttpEndpoint(name, config)
        endpoint.retry.backoff = endpoint.retry.max_backoff = 0.0  # retries in tests do not wait
        transport = MockTransport(endpoint, self.rules.get(name, []), self.base_dir)
        endpoint.connector.transport = transport  # type: ignore[assignment]  # same exchange() interface
        self.transports[name] = transport
        return endpoint
