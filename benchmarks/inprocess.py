"""The engine's own CPU per request, in one process: the served ASGI app driven directly.

    .venv/bin/python benchmarks/inprocess.py                               # this tree
    PYTHONPATH=/tmp/old-tree .venv/bin/python benchmarks/inprocess.py      # another checkout's engine
    .venv/bin/python benchmarks/inprocess.py --cells direct-json --requests 20000 --repeats 7

What ``interlace run`` serves (the drain guard around the facade, the flows of flows/bench, the
request log at INFO written to a file, metrics on) is called as uvicorn would call it, by 50
tasks at once, with the benchmark's 1 KiB bodies; the flows' calls go to the benchmark's echo
backend over loopback (CPU 1).  No HTTP server parses the requests, so what is measured is the
engine's path and the aiohttp client below it, with the same client work in every run: CPU
time of this process per request, best of the repeats.  On a machine shared with other jobs
this moves much less than wrk against a server (no batching that depends on how much CPU the
server got), so it is the figure to compare between two trees, run back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CELLS = {
    "direct-json": ("/direct", "json", "application/json"),
    "direct-xml": ("/direct", "xml", "text/xml; charset=utf-8"),
    "cbr-json": ("/cbr-json", "json", "application/json"),
    "cbr-xml": ("/cbr-xml", "xml", "text/xml; charset=utf-8"),
    "hbr": ("/hbr", "xml", "text/xml; charset=utf-8"),
}


class Connection:
    """What the engine's HTTP protocol puts in ``scope["extensions"]``: the request's cycle."""

    def __init__(self) -> None:
        self.response_started = False
        self.response_complete = False
        self.disconnected = False


def bench_dir() -> Path:
    given = os.environ.get("BENCH_DIR")
    candidates = [Path(given)] if given else [ROOT.parent / "shared" / "bench", ROOT.parent.parent / "shared" / "bench"]
    for candidate in candidates:
        if (candidate / "lib" / "payloads.py").is_file():
            return candidate.resolve()
    raise SystemExit(f"the peer benchmark is not at {' or '.join(map(str, candidates))}; set BENCH_DIR")


async def one(app: Any, path: str, body: bytes, ctype: str) -> int:
    connection = Connection()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8290"), (b"content-type", ctype.encode()),
                         (b"content-length", str(len(body)).encode()), (b"x-route", b"a")],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8290),
             "extensions": {"interlace.client": connection}}
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            connection.response_started = True
            status = message["status"]
        elif not message.get("more_body"):
            connection.response_complete = True

    await app(scope, receive, send)
    return status


async def drive(app: Any, cell: str, bodies: dict[str, bytes], requests: int, concurrency: int) -> float:
    path, kind, ctype = CELLS[cell]
    body = bodies[kind]
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status = await one(app, path, body, ctype)
            if status != 200:
                raise SystemExit(f"{cell}: answered {status}")

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) / requests * 1e6


async def main(args: argparse.Namespace) -> None:
    from engine.drain import DrainGuard
    from engine.observability import setup_logging
    from engine.runtime import Runtime

    log = tempfile.NamedTemporaryFile("w", prefix="interlace-inprocess-", suffix=".log", delete=False)  # noqa: SIM115
    sys.stderr = log  # the request lines, as `interlace run` writes them to its standard error
    setup_logging(args.log_level, "text")
    runtime = Runtime(ROOT / "flows" / "bench")
    compiled = runtime.load()
    await runtime.start(compiled)
    gc.set_threshold(10_000, 10, 10)  # as the server does
    app = DrainGuard(runtime.app)
    bench = bench_dir()
    sys.path.insert(0, str(bench / "lib"))
    import payloads  # the benchmark's own bodies

    bodies = {"json": payloads.json_body(1024), "xml": payloads.xml_body(1024)}
    results: dict[str, list[float]] = {}
    for cell in args.cells.split(","):
        await drive(app, cell, bodies, max(args.requests // 5, 500), args.concurrency)  # warm-up
    for _ in range(args.repeats):
        for cell in args.cells.split(","):
            results.setdefault(cell, []).append(await drive(app, cell, bodies, args.requests, args.concurrency))
    await runtime.stop()
    sys.stderr = sys.__stderr__
    log.close()
    os.unlink(log.name)
    import engine

    print(f"engine from {Path(engine.__file__).parent.parent}; {args.requests} requests x {args.repeats}, "
          f"{args.concurrency} at once, log level {args.log_level}")
    print("| cell | CPU µs/request (best) | median | all |")
    print("|---|---:|---:|---|")
    for cell, values in results.items():
        ordered = sorted(values)
        print(f"| {cell} | {ordered[0]:.1f} | {ordered[len(ordered) // 2]:.1f} | "
              f"{', '.join(f'{v:.0f}' for v in values)} |")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="direct-json,cbr-json,cbr-xml", help=f"of {', '.join(CELLS)}")
    parser.add_argument("--requests", type=int, default=5000, help="requests per measurement (default 5000)")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per cell (default 5)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--log-level", default="info", help="as `interlace run --log-level` (default info)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT_BASE", "18980")))
    args = parser.parse_args()
    for cell in args.cells.split(","):
        if cell not in CELLS:
            raise SystemExit(f"unknown cell {cell!r}; cells: {', '.join(CELLS)}")
    backend = subprocess.Popen(["taskset", "-c", "1", "node", str(bench_dir() / "lib" / "echo_backend.js")],
                               env={**os.environ, "PORT": str(args.port)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    os.environ["BACKEND_URL"] = f"http://127.0.0.1:{args.port}"
    try:
        time.sleep(0.5)
        try:
            import uvloop

            uvloop.run(main(args))
        except ImportError:
            asyncio.run(main(args))
    finally:
        backend.terminate()
        backend.wait()
    logging.shutdown()


if __name__ == "__main__":
    run()
