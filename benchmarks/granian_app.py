"""The facade as a plain ASGI app for other ASGI servers (granian), to compare worker models.

    FLOWS_DIR=flows/bench PYTHONPATH=.:.venv/lib/python3.11/site-packages \\
        granian --interface asgi --workers 1 --runtime-threads 1 --loop uvloop --http 1 \\
        --host 127.0.0.1 --port 18111 benchmarks.granian_app:app

Only for measurement (benchmarks/worker_model.sh): `interlace run` is the supported server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.compiler import compile_project
from engine.front import Facade
from engine.loader import load_project

_project = compile_project(load_project(Path(os.environ.get("FLOWS_DIR", "flows/bench")), compile_flows=False),
                           env=dict(os.environ))
if _project.errors:
    raise SystemExit("\n".join(map(str, _project.errors)))
_facade = Facade(_project)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "lifespan":
        await _facade(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await _project.open()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await _project.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
