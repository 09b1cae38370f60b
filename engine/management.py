"""The management API, served on its own port, never on the facade's.

GET /health/live, GET /health/ready (503 until flows are loaded and while draining),
GET /flows, GET /endpoints, GET /metrics, POST /reload.  When INTERLACE_MANAGEMENT_TOKEN is
set, everything but the health probes needs ``Authorization: Bearer <token>``.
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

from engine.metrics import exposition
from engine.runtime import ReloadResult, Runtime

Handler = Callable[[Request], Awaitable[Response]]


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "title": title, "status": status, "detail": detail},
                        status_code=status, media_type="application/problem+json")


def build_management_app(runtime: Runtime, *, reload_hook: Callable[[], Awaitable[Any]] | None = None,
                         token: str | None = None) -> Starlette:
    token = token if token is not None else os.environ.get("INTERLACE_MANAGEMENT_TOKEN") or None

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
        return JSONResponse({"status": "ready", "flows": len(runtime.project.flows)})

    async def flows(_: Request) -> Response:
        if not runtime.ready and runtime.facade is None:
            return _problem(503, "Not ready", "flows are not loaded yet")
        items = []
        for flow in runtime.project.flows:
            source = flow.source
            items.append({
                "name": flow.name, "description": flow.flow.description,
                "methods": source.methods if source else [], "path": source.path if source else None,
                "file": str(flow.flow.location), "steps": len(flow.steps),
            })
        return JSONResponse({"flows": items, "last_reload": runtime.last_reload.as_dict()
                             if runtime.last_reload else None})

    async def endpoints(_: Request) -> Response:
        if runtime.facade is None:
            return _problem(503, "Not ready", "flows are not loaded yet")
        return JSONResponse({"endpoints": {name: endpoint.health()
                                           for name, endpoint in runtime.project.endpoints.items()}})

    async def metrics(request: Request) -> Response:
        body, content_type = exposition(None, request.headers.get("accept"))
        return Response(body, media_type=content_type)

    async def reload(_: Request) -> Response:
        if runtime.facade is None:
            return _problem(503, "Not ready", "flows are not loaded yet")
        result = await (reload_hook() if reload_hook else runtime.reload())
        body: dict[str, Any] = result.as_dict() if isinstance(result, ReloadResult) else dict(result)
        return JSONResponse(body, status_code=200 if body.get("ok") else 422)

    return Starlette(routes=[
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/flows", guarded(flows)),
        Route("/endpoints", guarded(endpoints)),
        Route("/metrics", guarded(metrics)),
        Route("/reload", guarded(reload), methods=["POST"]),
    ])
