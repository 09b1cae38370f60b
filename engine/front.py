"""The facade: an ASGI app that routes HTTP requests to compiled flows and answers.

It speaks ASGI directly on the hot path (no per-request Request/Response objects) and uses
Starlette's path compiler for route templates.  The routing table is swapped whole on reload:
requests in flight finish on the flows they started with.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import compile_path

from engine import jsonfast, telemetry
from engine.compiler import CompiledFlow, CompiledProject
from engine.errors import FlowError, MethodNotAllowed, NotFound, PayloadTooLarge, UnsupportedMediaType
from engine.message import Message, kind_of
from engine.observability import correlation, correlation_id

log = logging.getLogger("interlace.front")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Bodies up to this size (with a Content-Length) are read whole; larger or chunked ones stream.
STREAM_THRESHOLD = 256 * 1024
DEFAULT_MAX_BODY = 10 * 1024 * 1024

# Never copied from a message's headers to the client: hop-by-hop, or set by the server itself.
RESPONSE_SKIP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
    "content-length", "content-type", "date", "server", "x-request-id",
})


@dataclass
class Route:
    flow: CompiledFlow
    methods: frozenset[str]
    regex: Any
    convertors: dict[str, Any]
    max_body: int
    accepts: str | None  # the declared request content type, if any
    template: str = ""  # the path as the flow declares it: the route's label in metrics and spans


@dataclass
class RoutingTable:
    project: CompiledProject
    static: dict[str, list[Route]] = field(default_factory=dict)
    templated: list[Route] = field(default_factory=list)

    @classmethod
    def build(cls, project: CompiledProject, max_body: int = DEFAULT_MAX_BODY) -> RoutingTable:
        table = cls(project)
        for flow in project.flows:
            source = flow.source
            if source is None:
                continue
            # a path without {parameters} is looked up in a dict: no regex to compile
            regex, _, convertors = compile_path(source.path) if "{" in source.path else (None, "", {})
            request = source.request or {}
            route = Route(flow, frozenset(source.methods), regex, convertors,
                          flow.max_body or max_body, request.get("content_type"), source.path)
            if convertors:
                table.templated.append(route)
            else:
                table.static.setdefault(source.path, []).append(route)
        for service in project.soap_services:  # one route per SOAP path, for all its operations' flows
            route = Route(service, frozenset(service.source.methods), None, {}, service.max_body or max_body, None)
            table.static.setdefault(service.path, []).append(route)
        return table

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        candidates = self.static.get(path)
        if candidates:
            for route in candidates:
                if method in route.methods:
                    return route, {}
        allowed: set[str] = {m for r in candidates or () for m in r.methods}
        for route in self.templated:
            found = route.regex.match(path)
            if found:
                if method in route.methods:
                    params = {k: str(route.convertors[k].convert(v)) for k, v in found.groupdict().items()}
                    return route, params
                allowed |= route.methods
        if allowed:
            raise MethodNotAllowed(f"{method} is not served on {path}; allowed: {', '.join(sorted(allowed))}",
                                   extra={"allowed": sorted(allowed)})
        raise NotFound(f"no flow serves {path}")


def problem(exc: FlowError, instance: str, cid: str) -> tuple[int, bytes]:
    """An RFC 9457 problem document: what went wrong, never how (no stack, no secrets)."""
    body: dict[str, Any] = {
        "type": exc.type_uri, "title": exc.title, "status": exc.status, "detail": exc.detail,
        "instance": instance, "correlation_id": cid,
    }
    for key, value in exc.extra.items():
        body.setdefault(key, value)
    return exc.status, jsonfast.dumps(body)


@dataclass
class RequestTrace:
    flow: str
    steps: list[str]  # step and branch ids, in the order they ran
    failed_step: str | None = None


class Facade:
    """The ASGI app of the facade port."""

    def __init__(self, project: CompiledProject, *, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_body = max_body
        self.table = RoutingTable.build(project, max_body)
        # set to a list to record, per request, the steps and branches it ran (flow tests, debugging)
        self.traces: list[RequestTrace] | None = None

    def swap(self, project: CompiledProject) -> CompiledProject:
        """Serve ``project`` from now on; returns the one it replaced."""
        old = self.table.project
        self.table = RoutingTable.build(project, self.max_body)
        return old

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        cid = correlation_id(headers)
        correlation.set(cid)
        path: str = scope["path"]
        flow_name = "-"
        msg: Message | None = None
        seen = telemetry.begin(scope["method"], path, headers, cid)
        error: BaseException | None = None
        status, response_bytes = 500, None
        try:
            route, params = self.table.match(scope["method"], path)
            flow_name = route.flow.name
            telemetry.routed(seen, flow_name, route.template)
            msg = await self._message(scope, receive, headers, route, params, cid)
            if self.traces is not None:
                msg.trace = []
                self.traces.append(RequestTrace(flow_name, msg.trace))
            await route.flow.handle(msg)
            status = msg.status
            response_bytes = await respond(send, msg, cid)
        except FlowError as exc:
            error = exc
            if self.traces is not None and msg is not None and msg.trace is not None:
                self.traces[-1].failed_step = getattr(exc, "step_id", None)
            status, response_bytes = await self._fail(send, exc, path, cid, flow_name)
        except Exception as exc:
            error = exc
            if self.traces is not None and msg is not None and msg.trace is not None:
                self.traces[-1].failed_step = getattr(exc, "step_id", None)
            log.exception("flow %s failed at %s", flow_name, getattr(exc, "step_id", "?"))
            status, response_bytes = await self._fail(
                send, FlowError("internal error; see the logs under this correlation id"), path, cid, flow_name)
        except BaseException as exc:  # cancelled (the client went away, the server stops): still counted
            error = exc
            raise
        finally:
            length = headers.get("content-length")
            telemetry.end(seen, status, int(length) if length and length.isdigit() else None, response_bytes, error)

    async def _fail(self, send: Send, exc: FlowError, path: str, cid: str, flow: str) -> tuple[int, int]:
        if exc.status >= 500:
            log.warning("flow %s: %s %s (step %s)%s", flow, exc.status, exc.detail, getattr(exc, "step_id", "-"),
                        f": {exc.internal}" if exc.internal else "")
        status, body = problem(exc, path, cid)
        extra: list[tuple[bytes, bytes]] = []
        if isinstance(exc, MethodNotAllowed):
            extra.append((b"allow", ", ".join(exc.extra.get("allowed", [])).encode()))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"x-request-id", cid.encode()), *extra]})
        await send({"type": "http.response.body", "body": body})
        return status, len(body)

    async def _message(self, scope: Scope, receive: Receive, headers: dict[str, str], route: Route,
                       params: dict[str, str], cid: str) -> Message:
        content_type = headers.get("content-type")
        if route.accepts and content_type and kind_of(content_type) != kind_of(route.accepts):
            raise UnsupportedMediaType(f"this route accepts {route.accepts}, not {content_type}")
        length_header = headers.get("content-length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if length is not None and length > route.max_body:
            raise PayloadTooLarge(f"request body of {length} bytes is larger than the limit of {route.max_body}")
        query_string = scope.get("query_string", b"").decode("latin-1")
        msg = Message(body=b"", content_type=content_type, headers=headers, method=scope["method"],
                      path_params=params, query=_query(query_string), query_string=query_string,
                      correlation_id=cid, max_body=route.max_body)
        if length == 0 or (length is None and "transfer-encoding" not in headers):
            return msg
        if length is not None and length <= STREAM_THRESHOLD:
            msg.set_body(await _read_all(receive, route.max_body), content_type)
        else:
            msg.set_stream(_stream(receive, route.max_body), content_type)
        return msg


def _query(query_string: str) -> dict[str, str]:
    if not query_string:
        return {}
    from urllib.parse import parse_qsl

    return dict(parse_qsl(query_string, keep_blank_values=True))


async def _read_all(receive: Receive, limit: int) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _stream(receive: Receive, limit: int) -> AsyncIterator[bytes]:
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise FlowError("client disconnected while sending the body", status=400, code="client-disconnected")
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
        if chunk:
            yield chunk


async def respond(send: Send, msg: Message, cid: str) -> int | None:
    """Send the message as the HTTP answer: whole when its bytes are known, streamed otherwise;
    returns the body's size when it was sent whole."""
    out: list[tuple[bytes, bytes]] = []
    if msg.headers_are_request:
        names = msg.headers_explicit
        out = [(k.encode("latin-1"), msg.headers[k].encode("latin-1")) for k in names
               if k not in RESPONSE_SKIP and k in msg.headers]
    else:
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in msg.headers.items() if k not in RESPONSE_SKIP]
    out.append((b"x-request-id", cid.encode()))
    stream = msg.take_stream()
    if stream is None:
        body = msg.body
        if msg.content_type and body:
            out.append((b"content-type", msg.content_type.encode("latin-1")))
        out.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": msg.status, "headers": out})
        await send({"type": "http.response.body", "body": body})
        return len(body)
    if msg.content_type:
        out.append((b"content-type", msg.content_type.encode("latin-1")))
    await send({"type": "http.response.start", "status": msg.status, "headers": out})
    try:
        async for chunk in stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    await send({"type": "http.response.body", "body": b""})
    return None


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
