"""The floor of the pattern cells: the same work written by hand on Starlette with one pooled
aiohttp session (the client the engine's own HTTP path uses), compiled at start-up.

    BACKEND_URL=http://127.0.0.1:18100 BENCH_JWKS=jwks.json uvicorn benchmarks.patterns.floor_app:app
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BACKEND = os.environ.get("BACKEND_URL", "http://127.0.0.1:18100").rstrip("/")
with open(os.environ["BENCH_JWKS"], encoding="utf-8") as handle:
    KEY = jwt.PyJWK(json.load(handle)["keys"][0]).key
session: aiohttp.ClientSession | None = None
CACHE: dict[str, tuple[int, bytes, str]] = {}


async def _post(path: str, body: bytes, content_type: str) -> tuple[int, bytes, str]:
    assert session is not None
    async with session.post(BACKEND + path, data=body, headers={"content-type": content_type}) as reply:
        return reply.status, await reply.read(), reply.headers.get("content-type", "application/octet-stream")


async def direct(request: Request) -> Response:
    status, body, kind = await _post("/echo", await request.body(), request.headers.get("content-type", ""))
    return Response(body, status, media_type=kind)


async def scatter(_: Request) -> Response:
    answers = await asyncio.gather(*(_post(f"/echo/{name}", orjson.dumps({"system": name}), "application/json")
                                     for name in ("a", "b", "c")))
    merged = {name: orjson.loads(body) for name, (_, body, _) in zip("abc", answers, strict=True)}
    return Response(orjson.dumps(merged), media_type="application/json")


async def split(request: Request) -> Response:
    items: list[dict[str, Any]] = orjson.loads(await request.body())["items"]
    results = [{"id": item["id"], "qty": item["qty"], "line": index} for index, item in enumerate(items)]
    return Response(orjson.dumps({"count": len(results), "qty": sum(r["qty"] for r in results)}),
                    media_type="application/json")


async def cached(request: Request) -> Response:
    hit = CACHE.get("the-one")
    if hit is None:
        hit = await _post("/echo", await request.body(), request.headers.get("content-type", ""))
        CACHE["the-one"] = hit
    status, body, kind = hit
    return Response(body, status, media_type=kind)


async def verified(request: Request) -> Response:
    try:
        jwt.decode(request.headers.get("x-jwt-assertion", ""), KEY, algorithms=["RS256"],
                   issuer="https://gateway.bench")
    except jwt.InvalidTokenError:
        return Response(b'{"status":401}', 401, media_type="application/problem+json")
    return await direct(request)


@contextlib.asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    global session
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    yield
    await session.close()


app = Starlette(routes=[Route("/direct", direct, methods=["POST"]), Route("/scatter", scatter),
                        Route("/split", split, methods=["POST"]), Route("/cached", cached, methods=["POST"]),
                        Route("/jwt", verified, methods=["POST"])], lifespan=lifespan)
