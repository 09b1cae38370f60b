"""The floor of the SQL read benchmark (benchmarks/sql_read.py): SQLAlchemy on Starlette, by hand.

    BENCH_DB=sqlite+aiosqlite:////tmp/bench.db .venv/bin/python benchmarks/sql_floor_app.py 18400

One pooled async engine (10 connections), the statement built once, one route reading a row by
key and answering it as JSON (404 when there is none), under uvicorn with uvloop and httptools.
"""

from __future__ import annotations

import os
import sys
from decimal import Decimal
from typing import Any

import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

URL = os.environ["BENCH_DB"]
engine = create_async_engine(URL, pool_size=10, max_overflow=0)
BY_KEY = text("SELECT sku, name, qty, price FROM items WHERE sku = :sku")


def plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


async def item(request: Request) -> JSONResponse:
    async with engine.connect() as conn:
        row = (await conn.execute(BY_KEY, {"sku": request.path_params["sku"]})).mappings().first()
    if row is None:
        return JSONResponse({"detail": "no such item"}, status_code=404)
    return JSONResponse({key: plain(value) for key, value in row.items()})


app = Starlette(routes=[Route("/items/{sku}", item)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                log_level="warning", access_log=False)
