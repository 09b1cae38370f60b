"""Try a flow from the designer: one request through the same compiled flow and in-process
runner as ``interlace test``, recording what every step did.

The folder is staged as the designer has it (unsaved edits included) and loaded by the
loader; the flows are compiled with a step wrapper (the compiler's hook) that records, per
step, the message after it, its time and the error it raised, and with endpoints whose
calls are recorded with their request, answer and time.  The endpoints are the real ones,
or, with ``mocks``, the real endpoints on the suite's mock transports, as ``interlace test``
runs them.
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from lxml import etree

from connectors.base import NO_PAYLOAD, EndpointContext, Reply, Request
from connectors.http import HttpRequest
from connectors.resilience import build_endpoint
from engine.compiler import compile_project
from engine.errors import FlowError
from engine.front import Facade
from engine.loader import LoadErrors, load_project
from engine.message import Message
from engine.model import Location
from engine.registry import StepFn
from engine.testing.client_cert import ClientCertError, client_cert_view, presenting
from engine.testing.mocks import BodyFileError, MockFactory, body_of, make_rule
from engine.testing.suite import load_suite

SHOWN_BYTES = 64 * 1024
_current_step: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("designer_step", default=None)


class TryError(Exception):
    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


def shown(data: bytes | None) -> str | None:
    if data is None:
        return None
    text = data[:SHOWN_BYTES].decode("utf-8", errors="replace")
    return text + (f"\n... ({len(data)} bytes in all)" if len(data) > SHOWN_BYTES else "")


def snapshot(msg: Message) -> dict[str, Any]:
    """The message as a step left it: status, headers, variables, body."""
    body: str | None
    if msg.is_streaming:
        body = "(a stream, not read yet)"
    else:
        try:
            body = shown(msg.body)
        except Exception as exc:  # a payload that cannot serialise: say so, the run goes on
            body = f"(cannot show the body: {exc})"
    return {"status": msg.status, "headers": dict(msg.headers), "content_type": msg.content_type,
            "vars": json.loads(json.dumps(msg.vars, default=str)), "body": body}


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, FlowError):
        return {"type": type(exc).__name__, "status": exc.status, "code": exc.code, "message": exc.detail}
    return {"type": type(exc).__name__, "status": 500, "code": "internal", "message": str(exc)}


@dataclass
class Recorder:
    """The compiler's step wrapper: what each step did, in the order the steps started."""

    steps: list[dict[str, Any]] = field(default_factory=list)

    def wrap(self, run: StepFn, kind: str, step_id: str, where: Location) -> StepFn:
        steps = self.steps

        async def recorded(msg: Message) -> None:
            entry: dict[str, Any] = {"id": step_id, "kind": kind, "line": where.line, "calls": []}
            steps.append(entry)
            token = _current_step.set(entry)
            started = time.perf_counter()
            try:
                await run(msg)
            except BaseException as exc:
                entry["error"] = _error(exc)
                raise
            finally:
                entry["ms"] = round((time.perf_counter() - started) * 1000, 3)
                entry["message"] = snapshot(msg)
                _current_step.reset(token)

        return recorded


class RecordingEndpoint:
    """An endpoint whose calls are recorded on the step that made them; the rest passes through.

    It records at the connector protocol's ``invoke``, so every kind is recorded alike: an
    HTTP request as method, path, query, headers and body; any other as its ``view()``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def prepare(self, operation: str, config: dict[str, Any], ctx: Any) -> Any:
        # the operation sends through this wrapper's invoke, not the inner endpoint's
        return self._inner.connector.prepare(operation, config, ctx, self.invoke)

    async def invoke(self, request: Request) -> Reply:
        call: dict[str, Any] = {"endpoint": getattr(self._inner, "name", "?")}
        if isinstance(request, HttpRequest):
            body = request.body
            call.update(method=request.method, path=request.path.split("?", 1)[0], query=request.query,
                        request_headers=dict(request.headers or []),
                        request_body="(streamed)" if isinstance(body, AsyncIterable) else shown(body))
        else:
            call.update(request.view())
        entry = _current_step.get()
        if entry is not None:
            entry["calls"].append(call)
        started = time.perf_counter()
        try:
            reply: Reply = await self._inner.invoke(request)
        except BaseException as exc:
            call["error"] = _error(exc)
            raise
        finally:
            call["ms"] = round((time.perf_counter() - started) * 1000, 3)
        if reply.payload is not NO_PAYLOAD:
            call.update(status=reply.status, payload=reply.payload if not hasattr(reply.payload, "tag")
                        else shown(etree.tostring(reply.payload)))
            return reply
        data = await reply.read()
        call.update(status=reply.status, headers=dict(reply.headers or []), body=shown(data))
        return reply


def _real_endpoints(folder: Path) -> Any:
    def build(name: str, kind: str, config: dict[str, Any]) -> Any:
        return build_endpoint(name, kind, config, EndpointContext(folder))
    return build


_REQUEST_FIELDS = {"method": (str, "a text"), "path": (str, "a text"), "headers": (dict, "an object"),
                   "query": (dict, "an object")}


def _check_shape(request: Any) -> None:
    """The request's fields of the types a run reads them as: ``headers: "x"`` or ``query: 5`` was a
    500 (read with .items()), a path of 5 an odd 404."""
    if not isinstance(request, dict):
        raise TryError("request is an object ({method, path, headers, json|text|xml})", [])
    for name, (kind, said) in _REQUEST_FIELDS.items():
        value = request.get(name)
        if value is not None and not isinstance(value, kind):
            raise TryError(f"request {name} is {said}, got {type(value).__name__}", [])
    for header, value in (request.get("headers") or {}).items():
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise TryError(f"request header {str(header)[:40]!r} is a text, got {type(value).__name__}", [])


async def try_flow(folder: Path, request: dict[str, Any], *, mocks: dict[str, list[Any]] | None = None,
                   mocks_dir: Path | None = None, env: dict[str, str] | None = None,
                   secrets: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one request (a suite case's ``request`` shape) through the flows of ``folder``."""
    _check_shape(request)
    try:
        project = load_project(folder, compile_flows=False)
    except LoadErrors as exc:
        raise TryError("the flows do not load; fix the marked steps first",
                       [{"file": e.file.name, "line": e.line, "column": e.column, "message": e.message}
                        for e in exc.errors]) from None
    recorder = Recorder()
    mock_factory = None
    if mocks is not None:
        rules = {name: [make_rule(spec, Location(folder, 1, 1), {}) for spec in specs]
                 for name, specs in mocks.items() if name in project.endpoints}
        mock_factory = MockFactory(rules, mocks_dir or folder)
    base_factory = mock_factory or _real_endpoints(folder)

    def factory(name: str, kind: str, config: dict[str, Any]) -> Any:
        return RecordingEndpoint(base_factory(name, kind, config))

    compiled = compile_project(project, env=env, secrets=secrets, endpoint_factory=factory,
                               step_wrapper=recorder.wrap)
    if compiled.errors:
        raise TryError("the flows do not compile; fix the marked steps first",
                       [{"file": e.file.name, "line": e.line, "column": e.column, "message": e.message}
                        for e in compiled.errors])
    facade = Facade(compiled)
    facade.traces = []
    try:
        body, content_type = body_of(request, mocks_dir or folder)
    except BodyFileError as exc:
        raise TryError(f"request {exc}", []) from None
    method = str(request.get("method", "POST" if body else "GET")).upper()
    headers = {str(k): str(v) for k, v in (request.get("headers") or {}).items()}
    if content_type and not any(k.lower() == "content-type" for k in headers):
        headers["content-type"] = content_type
    try:
        certificate = client_cert_view(request["client_cert"], mocks_dir or folder) \
            if request.get("client_cert") else None
    except ClientCertError as exc:
        raise TryError(str(exc), []) from None
    try:  # the address the request comes from, as a flow-test case's client
        peer = (str(ipaddress.ip_address(str(request.get("client", "127.0.0.1")))), 50000)
    except ValueError:
        raise TryError(f"client is the address the request comes from, e.g. 10.1.2.3; "
                       f"{str(request.get('client'))!r} is not one", []) from None
    started = time.perf_counter()
    await compiled.open()
    try:
        app = presenting(facade, certificate)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=peer),
                                     base_url="http://interlace.test") as client:
            answer = await client.request(method, str(request.get("path", "/")), params=request.get("query"),
                                          headers=headers, content=body or None)
    finally:
        await compiled.close()
    trace = facade.traces[-1] if facade.traces else None
    return {
        "flow": trace.flow if trace else None,
        "ms": round((time.perf_counter() - started) * 1000, 3),
        "request": {"method": method, "path": request.get("path", "/"), "query": request.get("query"),
                    "headers": headers, "body": shown(body)},
        "response": {"status": answer.status_code, "headers": dict(answer.headers), "body": shown(answer.content)},
        "trace": list(trace.steps) if trace else [],
        "failed_step": trace.failed_step if trace else None,
        "steps": recorder.steps,
        "mocked": mocks is not None,
    }


def suite_mocks(suite_file: Path, case_index: int | None = None) -> tuple[dict[str, list[Any]], dict[str, Any] | None]:
    """The mocks a suite gives a case (the case's own rules first), and that case."""
    try:
        suite = load_suite(suite_file)
    except LoadErrors as exc:
        raise TryError(f"the test suite {suite_file.name} does not load",
                       [{"file": e.file.name, "line": e.line, "column": e.column, "message": e.message}
                        for e in exc.errors]) from None
    from engine.yamlio import plain

    if case_index is None:
        return {str(k): list(plain(v)) for k, v in (suite.node.get("mocks") or {}).items()}, None
    if not 0 <= case_index < len(suite.cases):
        raise TryError(f"{suite_file.name} has {len(suite.cases)} cases; there is no case {case_index}")
    case = suite.cases[case_index]
    rules = {name: [plain(spec) for spec, _ in items] for name, items in case.mocks.items()}
    return rules, plain(case.node)
