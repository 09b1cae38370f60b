"""Mocked endpoints: the real HTTP endpoint (retries, failover, breaker, timeouts as
configured) on a transport that answers from the suite's rules instead of the network.
Every other kind is mocked one level up, at the connector's ``attempt``
(``engine.testing.operation_mocks``), with the same rules, matching and checks."""

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
from engine.paths import OutsideFolder, inside
from engine.units import parse_duration


@dataclass
class MockCall:
    method: str
    path: str  # after the endpoint's base URL, without the query
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    operation: str | None = None  # the connector operation (other kinds than http)
    view: dict[str, Any] = field(default_factory=dict)  # the request's view(): what rules match on

    def message(self) -> Message:
        return Message(body=self.body, content_type=self.headers.get("content-type"), headers=self.headers)

    def describe(self) -> str:
        """The call in a few words, for a failure's message."""
        if self.operation is None or (self.method and self.operation == "request"):
            return f"{self.method} {self.path}"
        fields = {k: v for k, v in self.view.items() if k not in ("operation", "body", "method", "path")}
        text = jsonfast.dumps(fields).decode()
        return f"{self.operation} {text if len(text) <= 160 else text[:157] + '...'}"


_WILDCARDS = frozenset("*?[")


def fits(expected: Any, actual: Any) -> bool:
    """Whether a recorded field holds what a rule or an expectation names: objects by their
    keys given, lists item by item (a list of rows: any row), text with * and ? wildcards,
    scalars equal or equal as text (a parameter read from the path is text)."""
    if isinstance(expected, dict):
        if isinstance(actual, list):
            return any(fits(expected, item) for item in actual)
        return isinstance(actual, dict) and all(k in actual and fits(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(
            fits(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, str) and isinstance(actual, str) and _WILDCARDS & set(expected):
        return fnmatch.fnmatchcase(actual, expected)
    if expected == actual and isinstance(expected, bool) == isinstance(actual, bool):
        return True
    return not isinstance(expected, bool) and not isinstance(actual, bool) and actual is not None \
        and str(expected) == str(actual)


HTTP_MATCH = ("method", "path", "query", "headers", "body")


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
        if "operation" in match and call.operation != str(match["operation"]):
            return False
        for key, value in match.items():  # the other kinds' fields of the request's view
            if key not in HTTP_MATCH and key != "operation" and (key not in call.view or not fits(value,
                                                                                                   call.view[key])):
                return False
        return self.condition is None or self.condition.is_true(call.message())


class BodyFileError(ValueError):
    """A ``file:`` body that names a file outside the folder, or none that can be read."""


def body_of(spec: Any, base: Path) -> tuple[bytes, str | None]:
    """The body a request, response or expectation spells out, with its default content type.
    A ``file`` lies inside ``base`` (engine.paths): the designer's try-it read any file the
    engine could (../../etc/..., /etc/...) and showed it, and a missing one was a 500."""
    content_type = spec.get("content_type")
    if "json" in spec:
        return jsonfast.dumps(spec["json"]), content_type or "application/json"
    if "xml" in spec:
        return str(spec["xml"]).encode(), content_type or "application/xml"
    if "text" in spec:
        return str(spec["text"]).encode(), content_type or "text/plain; charset=utf-8"
    if "file" in spec:
        try:
            path = inside(base, str(spec["file"]))
            data = path.read_bytes()
        except OutsideFolder as exc:
            raise BodyFileError(f"file: {exc}") from None
        except OSError as exc:
            raise BodyFileError(f"file: {str(spec['file'])!r} cannot be read ({exc.strerror or type(exc).__name__})") \
                from None
        guessed = mimetypes.guess_type(path.name)[0]
        return data, content_type or guessed or "application/octet-stream"
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
    """``endpoint_factory`` for compile_project: real endpoints, their network replaced by the
    suite's rules.  http endpoints get a mock transport; other kinds with rules a mock of
    their ``attempt`` (soap included: its rules speak of operations, envelopes and faults).
    An endpoint that needs no server (an SQLite file, a local folder) the suite does not mock
    runs for real, its calls recorded; one that needs a server fails each call, naming it."""

    def __init__(self, rules: dict[str, list[Rule]], base_dir: Path) -> None:
        self.rules = rules
        self.base_dir = base_dir
        # per endpoint name, what recorded its calls: .calls, .unmatched
        self.transports: dict[str, Any] = {}

    def __call__(self, name: str, kind: str, config: dict[str, Any]) -> Any:
        if kind != "http":
            from connectors.base import EndpointContext
            from connectors.resilience import build_endpoint
            from engine.testing.operation_mocks import mocked_endpoint, recorded_endpoint

            built = build_endpoint(name, kind, config, EndpointContext(self.base_dir))
            rules = self.rules.get(name)
            connector = built.connector
            # a store without operations (redis: what cache and throttle keep) is used as it is
            runs_for_real = not rules and (not connector.needs_server() or not connector.operations())
            self.transports[name] = recorded_endpoint(built) if runs_for_real \
                else mocked_endpoint(built, rules or [], self.base_dir)
            return built
        endpoint = HttpEndpoint(name, config)
        endpoint.retry.backoff = endpoint.retry.max_backoff = 0.0  # retries in tests do not wait
        transport = MockTransport(endpoint, self.rules.get(name, []), self.base_dir)
        endpoint.connector.transport = transport  # type: ignore[assignment]  # same exchange() interface
        self.transports[name] = transport
        return endpoint
