"""CPU per SOAP call in one process: the engine's ASGI app against the floor's, back to back.

    .venv/bin/python benchmarks/soap_inprocess.py                        # this tree
    PYTHONPATH=/tmp/old-tree .venv/bin/python benchmarks/soap_inprocess.py   # another checkout's engine
    .venv/bin/python benchmarks/soap_inprocess.py --requests 10000 --repeats 7

The same cell as benchmarks/soap_ab.sh (GET /quotes/IBM becomes a SOAP 1.1 getQuote to
benchmarks/soap/backend.js on CPU 1, answered as JSON), but both apps are called as uvicorn would
call them, by 50 tasks at once, in this process: no HTTP server parses the requests, so what is
measured is each app's own path and the aiohttp client below it.  CPU time of this process per
request, alternating floor and engine; best and median of the repeats.  On a shared machine this
moves far less than wrk against a server, so it is the figure to compare two trees with; the
issue's figure is soap_ab.sh's (servers included).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOAP = ROOT / "benchmarks" / "soap"
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Connection:
    """What the engine's HTTP protocol puts in ``scope["extensions"]``: the request's cycle."""

    def __init__(self) -> None:
        self.response_started = False
        self.response_complete = False
        self.disconnected = False


async def one(app: App, path: str) -> tuple[int, bytes]:
    connection = Connection()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8290"), (b"accept", b"*/*")],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8290),
             "extensions": {"interlace.client": connection}}
    status = 0
    body = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            connection.response_started = True
            status = message["status"]
        else:
            body.append(message.get("body", b""))
            if not message.get("more_body"):
                connection.response_complete = True

    await app(scope, receive, send)
    return status, b"".join(body)


async def drive(name: str, app: App, requests: int, concurrency: int) -> float:
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status, body = await one(app, "/quotes/IBM")
            if status != 200:
                raise SystemExit(f"{name}: answered {status}: {body[:300]!r}")

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) / requests * 1e6


async def main(args: argparse.Namespace) -> None:
    import json
    import logging

    from engine.drain import DrainGuard
    from engine.runtime import Runtime

    logging.getLogger().setLevel(logging.WARNING)  # as soap_ab.sh runs it: --log-level warning
    work = Path(tempfile.mkdtemp(prefix="interlace-soap-"))
    shutil.copy(SOAP / "flows" / "quotes.yaml", work)
    shutil.copy(ROOT / "flows" / "stockquote.wsdl", work)
    runtime = Runtime(work)
    await runtime.start(runtime.load())
    engine = DrainGuard(runtime.app)
    sys.path.insert(0, str(SOAP))
    import floor_app

    async with floor_app.lifespan(floor_app.app):
        apps: dict[str, App] = {"floor": floor_app.app, "engine": engine}
        if args.only:
            apps = {args.only: apps[args.only]}
        answers = {name: json.loads((await one(app, "/quotes/IBM"))[1]) for name, app in apps.items()}
        if len(answers) == 2 and answers["floor"] != answers["engine"]:
            raise SystemExit(f"the answers differ: {answers}")
        gc.set_threshold(10_000, 10, 10)  # as the server does
        for name, app in apps.items():
            warmup = args.warmup if args.warmup is not None else max(args.requests // 5, 500)
            if warmup:
                await drive(name, app, warmup, args.concurrency)
        results: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(args.repeats):
            for name, app in apps.items():
                results[name].append(await drive(name, app, args.requests, args.concurrency))
    await runtime.stop()
    shutil.rmtree(work, ignore_errors=True)
    import engine as engine_package

    print(f"engine from {Path(engine_package.__file__).parent.parent}; {args.requests} requests x "
          f"{args.repeats}, {args.concurrency} at once")
    print("| app | CPU µs/request (best) | median | all |")
    print("|---|---:|---:|---|")
    best, median = {}, {}
    for name, values in results.items():
        ordered = sorted(values)
        best[name], median[name] = ordered[0], ordered[len(ordered) // 2]
        print(f"| {name} | {best[name]:.1f} | {median[name]:.1f} | {', '.join(f'{v:.0f}' for v in values)} |")
    if len(results) == 2:
        print(f"RATIO engine/floor in process: CPU per call {median['engine'] / median['floor']:.2f}x (median), "
              f"{best['engine'] / best['floor']:.2f}x (best)")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per measurement (default 5000)")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per app (default 5)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--only", choices=["floor", "engine"], help="measure one app alone")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests per app (default requests/5)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT_BASE", "18990")))
    args = parser.parse_args()
    backend = subprocess.Popen(["taskset", "-c", "1", "node", str(SOAP / "backend.js")],
                               env={**os.environ, "PORT": str(args.port)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    os.environ["BACKEND_URL"] = f"http://127.0.0.1:{args.port}/soap"
    try:
        time.sleep(0.5)
        import uvloop

        uvloop.run(main(args))
    finally:
        backend.terminate()
        backend.wait()


if __name__ == "__main__":
    run()
