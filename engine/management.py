"""The management API, served on its own port, never on the facade's.

GET /health/live, GET /health/ready (503 until flows are loaded and while draining),
GET /flows, GET /endpoints, GET /metrics, POST /reload (``?force=true`` swaps even when the new
flows would leave an existing file without any; a refused or invalid reload is a 422 problem),
and the sources' and message store's routes (engine/sources/routes.py).  When
INTERLACE_MANAGEMENT_TOKEN is set, everything but the health probes needs
``Authorization: Bearer <token>``.  With several workers each answer covers all of them
(engine/workers.py); ``workers`` lists each one's part.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.errors import PROBLEM_BASE
from engine.metrics import exposition, local_families
from engine.runtime import ReloadResult, Runtime
from engine.sources.routes import source_routes
from engine.workers import RELOAD_TIMEOUT, WorkerGroup, worker_info

Handler = Callable[[Request], Awaitable[Response]]


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "title": title, "status": status, "detail": detail},
                        status_code=status, media_type="application/problem+json")


_RELOAD_PROBLEMS = {
    "invalid": (422, "invalid-flows", "The flows are invalid"),
    "refused": (422, "reload-refused", "The reload would remove flows"),
    "internal": (500, "internal", "Reload failed"),
}


def _reload_answer(body: dict[str, Any]) -> JSONResponse:
    """200 with the result, or a problem+json saying why the previous flows still serve."""
    if body.get("ok"):
        return JSONResponse(body)
    status, code, title = _RELOAD_PROBLEMS.get(str(body.get("reason")), _RELOAD_PROBLEMS["invalid"])
    errors = body.get("errors") or []
    detail = (f"{len(errors)} error{'s' if len(errors) != 1 else ''}; still serving the previous "
              f"{body.get('flows', 0)} flows" + (f": {errors[0]}" if errors else ""))
    problem = {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail, **body}
    return JSONResponse(problem, status_code=status, media_type="application/problem+json")


def _flows(runtime: Runtime) -> dict[str, Any]:
    items = []
    for flow in runtime.project.flows:
        source = flow.source
        soap = flow.flow.soap
        item = {
            "name": flow.name, "description": flow.flow.description,
            "methods": source.methods if source else ["POST"] if soap else [],
            "path": source.path if source else soap.path if soap else None,
            "file": str(flow.flow.location), "steps": len(flow.steps),
        }
        if soap is not None:
            item["soap_operation"] = soap.operation
        items.append(item)
    return {"flows": items, "last_reload": runtime.last_reload.as_dict() if runtime.last_reload else None}


def _endpoints(runtime: Runtime) -> dict[str, Any]:
    return {"endpoints": {name: endpoint.health() for name, endpoint in runtime.project.endpoints.items()}}


def build_management_app(runtime: Runtime, *, reload_hook: Callable[..., Awaitable[Any]] | None = None,
                         token: str | None = None, group: WorkerGroup | None = None) -> Starlette:
    """The management app of a worker; with ``group``, its answers cover every worker of it."""
    token = token if token is not None else os.environ.get("INTERLACE_MANAGEMENT_TOKEN") or None
    me = worker_info(group)

    def guarded(handler: Handler) -> Handler:
        async def check(request: Request) -> Response:
            if token:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    return _problem(401, "Unauthorized", "management routes need the management token")
            return await handler(request)
        return check

    async def live(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def ready(_: Request) -> Response:
        if runtime.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not runtime.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        unready = await runtime.project.unready()
        if unready:
            return JSONResponse({"status": "unready", "endpoints": unready}, status_code=503)
        body: dict[str, Any] = {"status": "ready", "flows": len(runtime.project.flows)}
        if runtime.last_reload is not None and not runtime.last_reload.ok:
            body["last_reload"] = "refused"  # still ready: the previous flows serve
        return JSONResponse(body)

    def not_ready() -> Response | None:
        if runtime.facade is None:
            return _problem(503, "Not ready", "flows are not loaded yet")
        return None

    async def flows(_: Request) -> Response:
        body = _flows(runtime) if runtime.facade is not None else None
        if group is None:
            return not_ready() or JSONResponse({**(body or {}), "pid": me["pid"],
                                                "workers": [{**me, "flows": len(body["flows"]) if body else 0}]})
        answers = await group.ask_all("GET", "/flows")
        workers = [{k: a[k] for k in ("worker", "pid", "error", "last_reload") if k in a}
                   | ({"flows": len(a["flows"])} if "flows" in a else {}) for a in answers]
        if body is None:
            return _problem(503, "Not ready", "flows are not loaded yet")
        return JSONResponse({**body, "workers": workers})

    async def endpoints(_: Request) -> Response:
        refused = not_ready()
        if refused is not None:
            return refused
        body = _endpoints(runtime)
        if group is None:
            return JSONResponse({**body, "pid": me["pid"], "workers": [{**me, **body}]})
        return JSONResponse({**body, "workers": await group.ask_all("GET", "/endpoints")})

    async def metrics(request: Request) -> Response:
        families = None
        if group is not None:
            answers = await group.ask_all("GET", "/metrics/families")
            families = [a["families"] for a in answers if "families" in a]
        body, content_type = exposition(families, request.headers.get("accept"))
        return Response(body, media_type=content_type)

    async def metric_families(_: Request) -> Response:
        return JSONResponse({**me, "families": local_families()})

    async def reload(request: Request) -> Response:
        refused = not_ready()
        if refused is not None:
            return refused
        force = request.query_params.get("force", "false").lower()
        if force not in ("true", "false", "1", "0"):
            return _problem(400, "Bad request", f"force is true or false, not {force[:20]!r}")
        forced = force in ("true", "1")
        if group is not None:
            answers = await group.ask_all("POST", "/reload?force=true" if forced else "/reload", RELOAD_TIMEOUT)
            ok = all(a.get("ok") is True for a in answers)
            failed = next((a for a in answers if a.get("ok") is not True), {})
            workers = [{k: a[k] for k in ("worker", "pid", "ok", "flows", "errors", "error") if k in a}
                       for a in answers]
            body = {"ok": ok, "flows": answers[0].get("flows", 0),
                    "errors": failed.get("errors") or ([failed["error"]] if "error" in failed else []),
                    "workers": workers}
            if not ok:
                body["reason"] = failed.get("reason") or "internal"
            return _reload_answer(body)
        result = await (reload_hook(force=forced) if reload_hook else runtime.reload(force=forced))
        body = result.as_dict() if isinstance(result, ReloadResult) else dict(result)
        return _reload_answer({**body, "pid": me["pid"], "workers": [{**me, **body}]})

    return Starlette(routes=[
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/flows", guarded(flows)),
        Route("/endpoints", guarded(endpoints)),
        Route("/metrics", guarded(metrics)),
        Route("/metrics/families", guarded(metric_families)),
        Route("/reload", guarded(reload), methods=["POST"]),
        *source_routes(runtime, guarded, group),
    ])


def build_worker_app(runtime: Runtime) -> Starlette:
    """What a worker serves its peers on its private socket: its own answers, unguarded (the
    socket's folder admits only the engine's user)."""
    return build_management_app(runtime, token="", group=None)
