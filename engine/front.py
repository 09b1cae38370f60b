"""The facade: a Starlette application whose routes are the compiled flows.

``Facade`` is a ``starlette.applications.Starlette``: its middleware stack, ``mount``,
``url_path_for`` and ``TestClient`` work as on any Starlette app, and each flow's route is a
``starlette.routing.Route`` (``app.routes`` lists them, named after their flows).  Inside that
shape the hot path stays what it was: the router looks a path up in a dict before trying any
regex, each route's endpoint is a plain ASGI callable, and no Request or Response object is
built per request.  A reload swaps the routing table in one assignment: requests in flight
finish on the flows they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from starlette._utils import get_route_path, is_async_callable
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, Router, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from engine import jsonfast, metrics, telemetry, tracing
from engine.compiler import CompiledFlow, CompiledProject
from engine.errors import (
    BadPathParameter,
    FlowError,
    MethodNotAllowed,
    MissingBody,
    NotFound,
    PayloadTooLarge,
    RequestDataInvalid,
    UnencodableValue,
    UnsupportedMediaType,
)
from engine.httpguard import abort, client_gone, cycle_of, header_lines, response_started, take_body, write_answer
from engine.message import CLIENT, Message, kind_of
from engine.observability import correlation, correlation_id, escape_controls
from engine.steps._answers import Answer, AnswerNow
from engine.tls import flow_view

if TYPE_CHECKING:
    from connectors.soap.service import SoapService

log = logging.getLogger("interlace.front")

# what the project's settings turn into: Starlette middleware, outermost first
MiddlewareBuilder = Callable[[CompiledProject], list[Middleware]]

# Bodies up to this size (with a Content-Length) are read whole; larger or chunked ones stream.
STREAM_THRESHOLD = 256 * 1024
DEFAULT_MAX_BODY = 10 * 1024 * 1024

# Never copied from a message's headers to the client: hop-by-hop, or set by the server itself.
RESPONSE_SKIP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
    "content-length", "content-type", "date", "server", "x-request-id",
})


class FlowEndpoint:
    """A flow's ASGI endpoint: what Starlette's own routing calls (``Route.handle``) when the
    route is used outside the facade's router; the facade's router calls the facade directly."""

    __slots__ = ("facade", "route")

    def __init__(self, facade: Facade, route: FlowRoute) -> None:
        self.facade = facade
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = {k: str(v) for k, v in scope.get("path_params", {}).items()}
        await self.facade.handle(scope, receive, send, (self.route, params))


class FlowRoute(Route):
    """One flow's HTTP route: a Starlette ``Route`` named after the flow.

    A path without ``{parameters}`` gets no regex unless something asks for it (the router
    finds it in a dict); ``methods`` are the flow's own.
    """

    def __init__(self, flow: CompiledFlow | SoapService, facade: Facade, max_body: int,
                 path: str | None = None) -> None:
        source = flow.source
        assert source is not None
        # not Route.__init__: it would compile a regex for every path and add HEAD to GET routes
        self.path = path or source.path
        self.name = flow.name
        self.include_in_schema = True
        self.flow = flow
        self.methods: set[str] = set(source.methods)
        self.max_body = max_body
        request = source.request or {}
        self.accepts: str | None = request.get("content_type")  # the declared request content type
        # the methods that must bring a body of that type (a declared schema says it on its own: 422)
        self.needs_body = frozenset(m for m in self.methods if m not in _BODYLESS) \
            if self.accepts and not request.get("schema") else frozenset()
        self._regex: re.Pattern[str] | None = None
        if "{" in self.path:
            self._regex, self.path_format, self.param_convertors = compile_path(self.path)
        else:
            self.path_format, self.param_convertors = self.path, {}
        self.endpoint = self.app = FlowEndpoint(facade, self)
        self.tallies = telemetry.RouteTallies(self.name, self.path)  # its request metrics, found once
        # the flow's answer when it needs no await (Facade.answer_now): its one step's, if that has one
        self.answer_now: AnswerNow | None = _answer_now(flow)
        # (the answer's id, the request's content type) -> the answer, its status, its header lines
        # before and after the request id, and its body, as respond would send them (Facade.answer_now)
        self.wires: dict[tuple[int, str | None], tuple[Answer, int, bytes, bytes, bytes]] = {}

    @property
    def path_regex(self) -> re.Pattern[str]:
        if self._regex is None:
            self._regex = compile_path(self.path)[0]
        return self._regex

    @path_regex.setter
    def path_regex(self, value: re.Pattern[str]) -> None:
        self._regex = value


def _answer_now(flow: CompiledFlow | SoapService) -> AnswerNow | None:
    """A flow's answer without an await, when the flow is one step that can give one (the cache
    step on a hit in memory) and nothing else runs around it: no schema check, no redelivery."""
    if not isinstance(flow, CompiledFlow) or flow.request_validator is not None or flow.redelivers:
        return None
    steps = flow.steps.items
    answer = getattr(steps[0].run, "answer_now", None) if len(steps) == 1 else None
    return answer if isinstance(answer, AnswerNow) else None


_BODYLESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
# C0 controls and DEL: meaningless in a URL path, and each would be refused further on anyway
# (XML 1.0 cannot carry most, a header none); errors.PATH_PARAMETER_PATTERN says the same
_PATH_CONTROLS = re.compile("[\x00-\x1f\x7f]")


def _control_in(name: str, value: str) -> BadPathParameter:
    char = _PATH_CONTROLS.search(value)
    assert char is not None
    return BadPathParameter(f"the path parameter {name} holds the control character U+{ord(char.group()):04X}, "
                            "which no path segment may carry")


def _first_segment(path: str) -> str:
    end = path.find("/", 1)
    return path[1:] if end < 0 else path[1:end]


@dataclass
class RoutingTable:
    """The flows' routes, found without trying every template: a path without parameters is a
    dict lookup; templates are grouped by their first segment when it is literal, so a request
    tries only the templates that could match it (in the order the flows declare them)."""

    project: CompiledProject
    routes: list[FlowRoute] = field(default_factory=list)
    static: dict[str, list[FlowRoute]] = field(default_factory=dict)
    templated: list[FlowRoute] = field(default_factory=list)
    # first path segment -> the templates that may match a path starting with it
    by_segment: dict[str, list[FlowRoute]] = field(default_factory=dict)
    # templates whose first segment holds a parameter: tried for every path
    open_ended: list[FlowRoute] = field(default_factory=list)
    # paths served by one route whose flow may answer without an await (FlowRoute.answer_now)
    quick: dict[str, FlowRoute] = field(default_factory=dict)

    @classmethod
    def build(cls, project: CompiledProject, facade: Facade, max_body: int = DEFAULT_MAX_BODY) -> RoutingTable:
        table = cls(project)
        for flow in project.flows:
            if flow.source is None:
                continue
            route = FlowRoute(flow, facade, flow.max_body or max_body)
            table.routes.append(route)
            if route.param_convertors:
                table.templated.append(route)
            else:
                table.static.setdefault(route.path, []).append(route)
        for service in project.soap_services:  # one route per SOAP path, for all its operations' flows
            route = FlowRoute(service, facade, service.max_body or max_body, service.path)
            table.routes.append(route)
            table.static.setdefault(route.path, []).append(route)
        table.quick = {path: routes[0] for path, routes in table.static.items()
                       if len(routes) == 1 and routes[0].answer_now is not None}
        firsts = [(_first_segment(r.path), r) for r in table.templated]
        table.open_ended = [r for first, r in firsts if "{" in first]
        for segment in {first for first, _ in firsts if "{" not in first}:
            table.by_segment[segment] = [r for first, r in firsts if first == segment or "{" in first]
        return table

    def match(self, method: str, path: str) -> tuple[FlowRoute, dict[str, str]]:
        """The route serving ``method`` on ``path`` and its parameters; HEAD is served by a GET
        route (as GET, the server sends no body) unless a flow serves HEAD itself."""
        candidates = self.static.get(path)
        if candidates:
            for route in candidates:
                if method in route.methods:
                    return route, {}
            if method == "HEAD":
                for route in candidates:
                    if "GET" in route.methods:
                        return route, {}
        allowed: set[str] = {m for r in candidates or () for m in r.methods}
        for route in self.by_segment.get(_first_segment(path), self.open_ended):
            found = route.path_regex.match(path)
            if found:
                if method in route.methods or (method == "HEAD" and "GET" in route.methods):
                    params = {k: str(route.param_convertors[k].convert(v)) for k, v in found.groupdict().items()}
                    for name, value in params.items():
                        if _PATH_CONTROLS.search(value):
                            raise _control_in(name, value)
                    return route, params
                allowed |= route.methods
        if "GET" in allowed:
            allowed.add("HEAD")
        if allowed:
            raise MethodNotAllowed(f"{method} is not served on {path}; allowed: {', '.join(sorted(allowed))}",
                                   extra={"allowed": sorted(allowed)})
        raise NotFound(f"no flow serves {path}")


class FlowRouter(Router):
    """Starlette's router with the flows' routing table in front.

    ``routes`` is a plain list (the flows' routes, then any added from Python with
    ``add_route``/``mount``); the table is swapped whole on reload.
    """

    def __init__(self, facade: Facade, table: RoutingTable) -> None:
        super().__init__(redirect_slashes=False, lifespan=facade.running_lifespan)
        self.facade = facade
        self.table = table
        self.routes: list[BaseRoute] = list(table.routes)

    def swap(self, table: RoutingTable) -> None:
        own = [r for r in self.routes if not isinstance(r, FlowRoute)]
        # two assignments without an await between them: no request sees one without the other
        self.table = table
        self.routes = [*table.routes, *own]

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["router"] = self
            await self.facade.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
        else:
            await super().app(scope, receive, send)

    def other_route(self, scope: Scope) -> BaseRoute | None:
        """A route added from Python that matches a request no flow serves."""
        for route in self.routes:
            if not isinstance(route, FlowRoute):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    return route
        return None


CLIENT_CLOSED = 499  # the status logged (never sent) for a request whose client went away


def _client_left() -> int:
    metrics.CLIENT_DISCONNECTS.labels("in_flight").inc()
    return CLIENT_CLOSED


def _broken_off(scope: Scope, flow: str, what: str) -> int:
    """A failure after the answer's headers went out: no second answer can be sent; the
    connection is closed so the client sees the answer is incomplete."""
    log.warning("flow %s: the answer broke off after its headers were sent (%s); connection closed", flow, what)
    abort(scope)
    return 502


def problem(exc: FlowError, instance: str, cid: str) -> tuple[int, bytes]:
    """An RFC 9457 problem document: what went wrong, never how (no stack, no secrets)."""
    body: dict[str, Any] = {
        "type": exc.type_uri, "title": exc.title, "status": exc.status, "detail": exc.detail,
        "instance": instance, "correlation_id": cid,
    }
    for key, value in exc.extra.items():
        body.setdefault(key, value)
    return exc.status, jsonfast.dumps(body)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """The outer 500 boundary (Starlette's ServerErrorMiddleware): a failure in middleware
    added from Python still answers problem+json, and says nothing of the exception."""
    log.error("unhandled error around the flows: %s", type(exc).__name__, exc_info=exc)
    cid = correlation.get()
    status, body = problem(FlowError("internal error; see the logs under this correlation id"),
                           request.url.path, cid)
    return Response(body, status, media_type="application/problem+json", headers={"x-request-id": cid})


class ErrorBoundary(ServerErrorMiddleware):
    """Starlette's outer 500 boundary.  Served by the engine's own server, it reads whether the
    answer has started from the request's connection (engine/httpguard.py) instead of wrapping
    every ``send`` of every request to watch for it; elsewhere (TestClient, another server) it
    is Starlette's as it is."""

    # the facade, when this boundary wraps its router directly (no middleware between them): a
    # request then goes from here to Facade.handle without FlowRouter.app's frame
    flows: Facade | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or response_started(scope) is None:
            await super().__call__(scope, receive, send)
            return
        try:
            flows = self.flows
            if flows is not None:
                scope["router"] = flows.router  # as FlowRouter.app
                await flows.handle(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        except Exception as exc:
            request = Request(scope)
            if self.debug:
                response = await run_in_threadpool(self.debug_response, request, exc)
            elif self.handler is None:
                response = self.error_response(request, exc)
            elif is_async_callable(self.handler):
                response = await self.handler(request, exc)  # type: ignore[assignment, arg-type]
            else:
                response = await run_in_threadpool(self.handler, request, exc)  # type: ignore[arg-type]
            if not response_started(scope):
                await response(scope, receive, send)
            raise  # as Starlette's: the server logs it, a test client may raise it


@dataclass
class RequestTrace:
    flow: str
    steps: list[str]  # step and branch ids, in the order they ran
    failed_step: str | None = None


class Facade(Starlette):
    """The facade's Starlette application, built from compiled flows.

    ``middleware`` (Starlette ``Middleware`` entries) wraps the flows inside the middleware the
    project's settings declare (``settings_middleware`` builds those from the project).  The
    project's endpoints open in the app's lifespan, or on the first request when no lifespan
    reaches the app (mounted inside another one); ``running()`` opens and closes them
    explicitly.
    """

    def __init__(self, project: CompiledProject, *, max_body: int = DEFAULT_MAX_BODY,
                 middleware: Sequence[Middleware] | None = None,
                 settings_middleware: MiddlewareBuilder | None = None, debug: bool = False) -> None:
        super().__init__(debug=debug, middleware=middleware, exception_handlers={Exception: _internal_error})
        self.max_body = max_body
        # set to a list to record, per request, the steps and branches it ran (flow tests, debugging)
        self.traces: list[RequestTrace] | None = None
        self._settings_middleware = settings_middleware
        self._project_middleware = settings_middleware(project) if settings_middleware else []
        self._open_lock: asyncio.Lock | None = None
        self.router: FlowRouter = FlowRouter(self, RoutingTable.build(project, self, max_body))
        # RoutingTable.quick by raw path, for the engine's protocol: one dict, refilled on a swap
        self.quick_paths: dict[bytes, FlowRoute] = {}
        self._refill_quick()

    @property
    def table(self) -> RoutingTable:
        return self.router.table

    @property
    def project(self) -> CompiledProject:
        """The compiled flows served now."""
        return self.router.table.project

    def swap(self, project: CompiledProject) -> CompiledProject:
        """Serve ``project`` from now on; returns the one it replaced."""
        old = self.router.table.project
        table = RoutingTable.build(project, self, self.max_body)
        project_middleware = self._settings_middleware(project) if self._settings_middleware else []
        stack = None
        if project_middleware != self._project_middleware and self.middleware_stack is not None:
            self._project_middleware = project_middleware
            stack = self.build_middleware_stack()
        self._project_middleware = project_middleware
        self.router.swap(table)
        self._refill_quick()
        if stack is not None:
            self.middleware_stack = stack
        return old

    def _refill_quick(self) -> None:
        quick = {path.encode("ascii"): route for path, route in self.router.table.quick.items() if path.isascii()}
        self.quick_paths.clear()  # in place: the protocols hold this dict
        self.quick_paths.update(quick)

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack: the 500 boundary outermost, then the project's middleware, then
        the middleware added from Python.  Starlette's ExceptionMiddleware only when an
        exception handler was added: the flows answer their own errors as problem+json."""
        handlers = {k: v for k, v in self.exception_handlers.items() if k not in (500, Exception)}
        middleware = [Middleware(ErrorBoundary, handler=self.exception_handlers.get(Exception)
                                 or self.exception_handlers.get(500), debug=self.debug),
                      *self._project_middleware, *self.user_middleware]
        if handlers:
            middleware.append(Middleware(ExceptionMiddleware, handlers=handlers, debug=self.debug))
        router_app: ASGIApp = self.router.middleware_stack  # what Router.__call__ would call: one frame less
        app = router_app
        for cls, args, kwargs in reversed(middleware):
            app = cls(app, *args, **kwargs)
        if isinstance(app, ErrorBoundary) and app.app is router_app and router_app == self.router.app:
            app.flows = self  # nothing between the boundary and the router: it calls the flows itself
        return app

    async def open(self) -> None:
        """Open the served project's endpoints (pools, clients) if they are not open yet."""
        project = self.router.table.project
        if project.opened:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not project.opened:
                await project.open()

    async def close(self) -> None:
        """Close the served project's endpoints."""
        await self.router.table.project.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Facade]:
        """Endpoints open inside the block, closed after it (for a host app's lifespan)."""
        await self.open()
        try:
            yield self
        finally:
            await self.close()

    def running_lifespan(self, _app: object) -> contextlib.AbstractAsyncContextManager[None]:
        return self._lifespan()

    @contextlib.asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        async with self.running():
            yield

    async def handle(self, scope: Scope, receive: Receive, send: Send,
                     found: tuple[FlowRoute, dict[str, str]] | None = None) -> None:
        """Serve one HTTP request: the flow of ``found`` (route, path parameters), else the one
        the routing table matches; every failure answers problem+json."""
        headers = text_headers(scope["headers"])
        cid = correlation_id(headers)
        correlation.set(cid)
        path: str = scope["path"] if not scope.get("root_path") else get_route_path(scope)
        raw: bytes | None = scope.get("raw_path")
        slashed = False
        if raw is not None and (b"%2F" in raw or b"%2f" in raw):  # a slash inside a parameter
            path, slashed = _slashed_path(raw, scope.get("root_path", "")), True
        table = self.router.table
        missed: FlowError | None = None
        if found is None:
            try:
                found = table.match(scope["method"], path)
                if slashed:
                    found = found[0], {k: unquote(v) for k, v in found[1].items()}
            except FlowError as exc:
                # no flow serves it: a route added from Python (add_route, mount) may
                other = self.router.other_route(scope) if len(self.router.routes) > len(table.routes) else None
                if other is not None:
                    await other.handle(scope, receive, send)
                    return
                missed = exc
        flow_name = "-"
        msg: Message | None = None
        seen = telemetry.begin(scope["method"], path, headers, cid)
        error: BaseException | None = None
        status, response_bytes = 500, None
        try:
            if found is None:
                assert missed is not None
                raise missed
            route, params = found
            if not table.project.opened:
                await self.open()  # no lifespan reached this app (mounted in another): open on first use
            flow_name = route.flow.name
            telemetry.routed(seen, flow_name, route.path, route.tallies)
            msg = await self._message(scope, receive, headers, route, params, cid, seen)
            if self.traces is not None:
                msg.trace = []
                self.traces.append(RequestTrace(flow_name, msg.trace))
            await route.flow.handle(msg)
            status = msg.status
            response_bytes = await respond(send, msg, cid, cycle_of(scope, send))
            if client_gone(scope):
                status = _client_left()
        except FlowError as exc:
            error = exc
            if self.traces is not None and msg is not None and msg.trace is not None:
                self.traces[-1].failed_step = getattr(exc, "step_id", None)
            if client_gone(scope) or exc.code == "client-disconnected":
                status, error = _client_left(), None  # a quiet, counted event: nobody to answer
            elif response_started(scope):
                status = _broken_off(scope, flow_name, exc.detail)
            else:
                status, response_bytes = await self._fail(send, exc, path, cid, flow_name)
        except Exception as exc:
            error = exc
            if self.traces is not None and msg is not None and msg.trace is not None:
                self.traces[-1].failed_step = getattr(exc, "step_id", None)
            if client_gone(scope):
                status, error = _client_left(), None
            elif response_started(scope):
                status = _broken_off(scope, flow_name, type(exc).__name__)
            else:
                log.exception("flow %s failed at %s", flow_name, getattr(exc, "step_id", "?"))
                status, response_bytes = await self._fail(
                    send, FlowError("internal error; see the logs under this correlation id"), path, cid, flow_name)
        except BaseException as exc:  # cancelled (the client went away, the server stops): still counted
            error = exc
            raise
        finally:
            telemetry.end(seen, status, telemetry.request_size(seen, headers), response_bytes, error)

    def quick(self, method: str, route: FlowRoute) -> bool:
        """Whether a request of a route of ``quick_paths`` (a flow that may answer without an
        await: a cache hit in memory) may be answered by the engine's server in its protocol
        once its body has come (``answer_now``); False sends it the general way: HEAD, another
        method, middleware around the flows, tracing, recorded traces, endpoints not open yet."""
        if method not in route.methods or method == "HEAD" or self.traces is not None or tracing.ENABLED \
                or not self.router.table.project.opened:
            return False
        stack = self.middleware_stack
        return isinstance(stack, ErrorBoundary) and stack.flows is self

    def answer_now(self, route: FlowRoute, method: str, path: str, query: bytes,
                   raw_headers: list[tuple[bytes, bytes]], body: bytes, extensions: dict[str, Any],
                   client: tuple[str, int] | None, write: Callable[[int, bytes, str, bytes, bytes], None]) -> bool:
        """Serve a request of ``quick_paths`` whose body has all come, as ``handle`` would, without
        an await: the same checks, answer, metrics and request line.  ``write(status, lines, cid,
        more_lines, body)`` sends the answer: its header lines before the request id, the id, the
        lines after it.  False, with nothing sent or counted, when the flow cannot answer so (a
        miss) or ``handle`` would answer otherwise (an error, a stream): then the request goes to
        ``handle``, which does all of it again."""
        now = route.answer_now
        if now is None:
            return False
        headers = text_headers(raw_headers)
        cid = correlation_id(headers)
        try:
            length = _declared_length(headers, route)
            if length is None and "transfer-encoding" in headers:
                return False
            if not length:
                if method in route.needs_body:
                    return False  # handle's 400
            elif length > STREAM_THRESHOLD:
                return False
            msg: Message | None = None
            if now.reads_request:
                msg = _request_message(headers, route, {}, cid, method, query, extensions, client)
                if length:
                    msg.set_request_body(body, msg.content_type)
            answer = now.recall(msg)
            if answer is None:
                return False
            content_type = headers.get("content-type")
            wire = route.wires.get((id(answer), content_type))
            if wire is None:
                if msg is None:
                    msg = _request_message(headers, route, {}, cid, method, query, extensions, client)
                now.give(msg, answer)
                found = _wire(msg)
                if found is None:
                    return False  # handle sends it through uvicorn, which refuses it
                wire = (answer, *found)
                if len(route.wires) >= _WIRES:
                    route.wires.clear()
                route.wires[id(answer), content_type] = wire  # it holds the answer: its id stays its own
        except Exception:  # handle meets the same failure and answers it as it should
            return False
        _, status, lines, more_lines, answer_body = wire
        started = time.perf_counter()
        write(status, lines, cid, more_lines, answer_body)
        telemetry.answered(method, path, cid, route.tallies, status, started,
                           length if length is not None or "content-length" in headers else 0, len(answer_body))
        return True

    async def _fail(self, send: Send, exc: FlowError, path: str, cid: str, flow: str) -> tuple[int, int]:
        if exc.status >= 500:
            log.warning("flow %s: %s %s (step %s)%s", flow, exc.status, exc.detail, getattr(exc, "step_id", "-"),
                        f": {exc.internal}" if exc.internal else "")
        elif isinstance(exc, RequestDataInvalid):  # the caller's mistake, not the flow's: worth a line, not an alarm
            log.info("flow %s: %s %s (step %s)", flow, exc.status, exc.detail, getattr(exc, "step_id", "-"))
        status, body = problem(exc, path, cid)
        extra: list[tuple[bytes, bytes]] = []
        if isinstance(exc, MethodNotAllowed):
            extra.append((b"allow", ", ".join(exc.extra.get("allowed", [])).encode()))
        extra.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in exc.headers.items())
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"x-request-id", cid.encode()), *extra]})
        await send({"type": "http.response.body", "body": body})
        return status, len(body)

    async def _message(self, scope: Scope, receive: Receive, headers: dict[str, str], route: FlowRoute,
                       params: dict[str, str], cid: str, seen: telemetry.Seen | None = None) -> Message:
        length = _declared_length(headers, route)
        msg = _request_message(headers, route, params, cid, scope["method"], scope.get("query_string", b""),
                               scope.get("extensions", _NO_EXTENSIONS), scope.get("client"))
        content_type = msg.content_type
        method = msg.method
        if length == 0 or (length is None and "transfer-encoding" not in headers):
            if method in route.needs_body:
                raise MissingBody(f"this route takes a {route.accepts} body; the request has none")
            return msg
        if length is not None and length <= STREAM_THRESHOLD:
            # a body that has all arrived is taken from the engine's server as it is, without
            # the receive() round trip
            whole = take_body(receive)
            msg.set_request_body(whole if whole is not None else await _read_all(receive, route.max_body),
                                 content_type)
            return msg
        first: Any = None
        if length is None and method in route.needs_body:
            # a chunked body may still be empty (a lone 0-size chunk): its first part says so
            first = await receive()
            if first["type"] == "http.request" and not first.get("body") and not first.get("more_body"):
                raise MissingBody(f"this route takes a {route.accepts} body; the request has none")
        msg.set_request_body(_stream(receive, route.max_body, seen if length is None else None, first), content_type)
        return msg


# header names as the server gives them (lower-cased bytes) and as text: a bounded vocabulary, decoded once
_NAME_TEXT: dict[bytes, str] = {}


def text_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """A request's headers as the message holds them: names and values decoded from Latin-1, a
    repeated name's last value."""
    names = _NAME_TEXT
    headers: dict[str, str] = {}
    for name, value in raw:
        text = names.get(name)
        if text is None:
            text = name.decode("latin-1")
            if len(names) < 1024 and len(name) <= 64:  # a client may send any name: a few short ones kept
                names[name] = text
        headers[text] = value.decode("latin-1")
    return headers


def _declared_length(headers: dict[str, str], route: FlowRoute) -> int | None:
    """The request body's declared length; raises what the route refuses before reading a body
    (415, 413)."""
    content_type = headers.get("content-type")
    if route.accepts and content_type and kind_of(content_type) != kind_of(route.accepts):
        raise UnsupportedMediaType(f"this route accepts {route.accepts}, not {content_type}")
    length_header = headers.get("content-length")
    length = int(length_header) if length_header and length_header.isdigit() else None
    if length is not None and length > route.max_body:
        raise PayloadTooLarge(f"request body of {length} bytes is larger than the limit of {route.max_body}")
    return length


def _request_message(headers: dict[str, str], route: FlowRoute, params: dict[str, str], cid: str, method: str,
                     query: bytes, extensions: dict[str, Any], client: Any) -> Message:
    """The request's message before its body (its checks done: ``_declared_length``)."""
    content_type = headers.get("content-type")
    query_string = query.decode("latin-1")
    if method == "HEAD" and "HEAD" not in route.methods:
        method = "GET"  # a GET route answering HEAD: the flow runs as GET, the server drops the body
    # Message(body, stream, content_type, headers, method, path_params, query, query_string,
    # correlation_id, max_body), positional
    msg = Message(b"", None, content_type, headers, method, params, _query(query_string) if query_string else {},
                  query_string, cid, route.max_body)
    msg.payload_is_request = True  # the caller's (empty) body, until a step replaces it (engine/expression_blame.py)
    if client is not None:  # the connection's peer, (host, port): ${client.*} (Message.client)
        msg.attributes[CLIENT] = client
    tls = extensions.get("tls")
    if tls is not None:  # the connection's TLS and client certificate: ${tls.*}
        msg.attributes["tls"] = flow_view(tls)
    return msg


def _slashed_path(raw: bytes, root_path: str) -> str:
    """The path to route on when the raw path holds an encoded slash (``/orders/a%2Fb``): each
    segment decoded, but a ``/`` or ``%`` inside one kept encoded, so that ``a%2Fb`` stays one
    segment; ``unquote`` of a parameter then gives ``a/b``.  The decoded ``path`` of the scope
    cannot tell ``a%2Fb`` from ``a/b``."""
    path = "/".join(unquote(segment).replace("%", "%25").replace("/", "%2F")
                    for segment in raw.decode("latin-1").split("/"))
    if root_path and path.startswith(root_path):
        path = path[len(root_path):]
    return path


_NO_EXTENSIONS: dict[str, Any] = {}


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


async def _stream(receive: Receive, limit: int, seen: telemetry.Seen | None = None,
                  first: Any = None) -> AsyncIterator[bytes]:
    """The request body as it arrives, from ``first`` (a part already received) on; with
    ``seen`` (a body without Content-Length) its size is told to the request metrics once it
    has all arrived."""
    size = 0
    more = True
    if seen is not None:
        seen.received = -1  # a body is coming: its size is known only at its end
    while more:
        message, first = (first, None) if first is not None else (await receive(), None)
        if message["type"] == "http.disconnect":
            raise FlowError("client disconnected while sending the body", status=400, code="client-disconnected")
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
        if not more and seen is not None:
            seen.received = size
        if chunk:
            yield chunk


# what may not appear in a header value (RFC 9110, 5.5): a CR or LF would split the header
_HEADER_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


# header names already checked, as sent: names come from flows and backends, a bounded set
_NAMES: dict[str, bytes] = {}


def _header(name: str, value: str) -> tuple[bytes, bytes]:
    """One response header as bytes: a value outside Latin-1 (``€``) is sent as its UTF-8
    bytes; a control character (CR, LF, NUL...) is refused with 400, never sent, so that no
    value can split the answer's headers."""
    encoded = _NAMES.get(name)
    if encoded is not None and value.isascii() and value.isprintable():
        return encoded, value.encode("ascii")  # printable ASCII: no control character, nothing to check
    if _HEADER_CONTROLS.search(value) or not _HEADER_NAME.fullmatch(name):
        what = "name" if not _HEADER_NAME.fullmatch(name) else "value"
        raise UnencodableValue(f"the response header {escape_controls(name)!r} would have a control character "
                               f"or a separator in its {what}; a header cannot carry it")
    encoded = name.lower().encode("latin-1")  # as uvicorn sends every name (engine/httpguard.py writes them too)
    if len(_NAMES) < 4096:
        _NAMES[name] = encoded
    try:
        return encoded, value.encode("latin-1")
    except UnicodeEncodeError:
        return encoded, value.encode("utf-8")


def _answer_headers(msg: Message, cid: str) -> list[tuple[bytes, bytes]]:
    """The answer's headers from the message, checked (``_header``), then its request id."""
    if msg.headers_are_request:
        names = msg.headers_explicit
        out = [_header(k, msg.headers[k]) for k in names if k not in RESPONSE_SKIP and k in msg.headers]
    else:
        out = [_header(k, v) for k, v in msg.headers.items() if k not in RESPONSE_SKIP]
    out.append((b"x-request-id", cid.encode()))
    return out


_WIRES = 256  # answers whose encoding a route keeps (FlowRoute.wires): past it, it starts again


def _wire(msg: Message) -> tuple[int, bytes, bytes, bytes] | None:
    """The answer ``respond`` sends for ``msg``, whole: its status, its header lines before the
    request id and after it, and its body; None when respond would not write it whole at once
    (a content type that cannot be sent)."""
    out = _answer_headers(msg, "")
    before = len(out) - 1  # _answer_headers puts the request id last
    body = msg.body
    content_type = _whole_headers(out, msg.content_type, body)
    if content_type and body and not content_type.isprintable():
        return None
    return msg.status, header_lines(out[:before]), header_lines(out[before + 1:]), body


def _whole_headers(out: list[tuple[bytes, bytes]], content_type: str | None, body: bytes) -> str | None:
    """A whole body's content type and length added to ``out``; returns the content type."""
    if content_type and body:
        out.append((b"content-type", content_type.encode("latin-1")))
    out.append((b"content-length", str(len(body)).encode()))
    return content_type


async def respond(send: Send, msg: Message, cid: str, cycle: Any = None) -> int:
    """Send the message as the HTTP answer: whole when its bytes are known, streamed otherwise;
    returns the size of the body sent.  With ``cycle`` (the engine's own server, nothing wrapping
    ``send``: httpguard.cycle_of) a whole answer is written to the connection at once."""
    out = _answer_headers(msg, cid)
    stream = msg.take_stream()
    if stream is None:
        body = msg.body
        content_type = _whole_headers(out, msg.content_type, body)
        # the headers are checked (_header, a safe correlation id); the content type only here
        if cycle is not None and (not content_type or not body or content_type.isprintable()) \
                and write_answer(cycle, msg.status, out, body):
            return len(body)
        await send({"type": "http.response.start", "status": msg.status, "headers": out})
        await send({"type": "http.response.body", "body": body})
        return len(body)
    if msg.content_type:
        out.append((b"content-type", msg.content_type.encode("latin-1")))
    await send({"type": "http.response.start", "status": msg.status, "headers": out})
    size = 0
    try:
        async for chunk in stream:
            size += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    await send({"type": "http.response.body", "body": b""})
    return size

