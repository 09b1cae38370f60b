"""The engine's own CPU per request, in one process: the served ASGI app driven directly.

    .venv/bin/python benchmarks/inprocess.py                               # this tree
    PYTHONPATH=/tmp/old-tree .venv/bin/python benchmarks/inprocess.py      # another checkout's engine
    .venv/bin/python benchmarks/inprocess.py --cells direct-json --requests 20000 --repeats 7
    .venv/bin/python benchmarks/inprocess.py --floor                      # the peer bench's floor app, same harness
    .venv/bin/python benchmarks/inprocess.py --callgrind --requests 1000 --repeats 1   # instructions, not CPU time
    .venv/bin/python benchmarks/inprocess.py --callgrind --requests 1000 --repeats 1 --routes   # 206 routes

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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hotpath_common import CELLS, ROOT, asgi_request, bench_dir, bodies, check_cells, generate_routes, start_backend


async def one(app: Any, path: str, body: bytes, ctype: str) -> int:
    return await asgi_request(app, "POST", path, [(b"content-type", ctype.encode()), (b"x-route", b"a")], body)


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


class Counter:
    """What is measured around each cell: this process's CPU time, or (``--callgrind``) the
    instructions valgrind's callgrind counts while the cell runs, which the machine's load does
    not change (the same work counts the same, run after run)."""

    def __init__(self, out: Path | None) -> None:
        self.out = out  # callgrind's output file, when under it
        self.dumps = 0

    def _control(self, *options: str) -> None:
        import subprocess

        subprocess.run(["callgrind_control", *options, str(os.getpid())], check=True, stdout=subprocess.DEVNULL)

    async def measure(self, app: Any, cell: str, payloads: dict[str, bytes], requests: int, concurrency: int
                      ) -> float:
        if self.out is None:
            started = time.process_time()
            await drive(app, cell, payloads, requests, concurrency)
            return (time.process_time() - started) / requests * 1e6
        self._control("--zero")
        self._control("--instr=on")
        await drive(app, cell, payloads, requests, concurrency)
        self._control("--instr=off")
        self._control(f"--dump={cell}")
        self.dumps += 1
        return _dumped_instructions(self.out, self.dumps) / requests


def _dumped_instructions(out: Path, number: int) -> float:
    """The instructions (Ir) of callgrind's dump ``number`` (``OUT.N``, or ``OUT.N-01`` with threads)."""
    for candidate in sorted(out.parent.glob(f"{out.name}.{number}*")):
        for line in candidate.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                return float(line.split()[1])
    raise SystemExit(f"no callgrind dump {number} next to {out}")


async def serve_engine(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """What `interlace run` serves (the drain guard, the runtime's app), and how to stop it."""
    from engine.drain import DrainGuard
    from engine.observability import setup_logging
    from engine.runtime import Runtime

    setup_logging(args.log_level, "text")
    runtime = Runtime(args.flows)
    compiled = runtime.load()
    await runtime.start(compiled)
    import engine

    return DrainGuard(runtime.app), runtime.stop, f"engine from {Path(engine.__file__).parent.parent}"


async def serve_floor(bench: Path) -> tuple[Any, Any, str]:
    """The peer benchmark's floor app (lib/floor_app.py) with its aiohttp client, started as
    uvicorn's lifespan would."""
    os.environ["BENCH_CLIENT"] = "aiohttp"
    if str(bench / "lib") not in sys.path:
        sys.path.insert(0, str(bench / "lib"))
    import floor_app

    context = floor_app.lifespan(floor_app.app)
    await context.__aenter__()

    async def stop() -> None:
        await context.__aexit__(None, None, None)

    return floor_app.app, stop, "the floor (lib/floor_app.py, aiohttp client)"


async def main(args: argparse.Namespace) -> None:
    # the request lines, as `interlace run` writes them to its standard error: line-buffered
    log = tempfile.NamedTemporaryFile("w", prefix="interlace-inprocess-", suffix=".log", delete=False,  # noqa: SIM115
                                      buffering=1)
    sys.stderr = log
    bench = bench_dir()
    app, stop, what = await (serve_floor(bench) if args.floor else serve_engine(args))
    gc.set_threshold(10_000, 10, 10)  # as the server does
    payloads = bodies(bench)  # the benchmark's own bodies
    cells = check_cells(args.cells)
    counter = Counter(Path(os.environ["INPROCESS_CALLGRIND_OUT"]) if args.callgrind_inner else None)
    results: dict[str, list[float]] = {}
    for cell in cells:
        await drive(app, cell, payloads, max(args.requests // 5, 200), args.concurrency)  # warm-up
    for _ in range(args.repeats):
        for cell in cells:
            results.setdefault(cell, []).append(await counter.measure(app, cell, payloads, args.requests,
                                                                      args.concurrency))
    await stop()
    sys.stderr = sys.__stderr__
    log.close()
    os.unlink(log.name)
    unit = "instructions/request (callgrind)" if counter.out is not None else "CPU µs/request"
    if not args.floor:
        what += f", serving {args.flows}"
    print(f"{what}; {args.requests} requests x {args.repeats}, {args.concurrency} at once, log level "
          f"{args.log_level}")
    print(f"| cell | {unit} (best) | median | all |")
    print("|---|---:|---:|---|")
    for cell, values in results.items():
        ordered = sorted(values)
        print(f"| {cell} | {ordered[0]:,.1f} | {ordered[len(ordered) // 2]:,.1f} | "
              f"{', '.join(f'{v:,.0f}' for v in values)} |")


def under_callgrind(args: argparse.Namespace) -> int:
    """Run this script again under callgrind, counting instructions only around the cells."""
    import shutil
    import subprocess

    if shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs valgrind (apt-get install valgrind)")
    work = Path(tempfile.mkdtemp(prefix="interlace-callgrind-"))
    out = work / "callgrind.out"
    inner = [a for a in sys.argv[1:] if a != "--callgrind"] + ["--callgrind-inner"]
    env = {**os.environ, "INPROCESS_CALLGRIND_OUT": str(out), "PYTHONHASHSEED": "0",
           "BACKEND_URL": f"http://127.0.0.1:{args.port}"}
    backend = start_backend(bench_dir(), args.port)
    try:
        time.sleep(0.5)
        done = subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                               sys.executable, __file__, *inner], env=env, stderr=subprocess.DEVNULL)
    finally:
        backend.terminate()
        backend.wait()
        if not os.environ.get("INPROCESS_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    return done.returncode


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="direct-json,cbr-json,cbr-xml", help=f"of {', '.join(CELLS)}")
    parser.add_argument("--requests", type=int, default=5000, help="requests per measurement (default 5000)")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per cell (default 5)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--log-level", default="info", help="as `interlace run --log-level` (default info)")
    parser.add_argument("--floor", action="store_true", help="drive the peer benchmark's floor app instead")
    parser.add_argument("--flows", type=Path, default=ROOT / "flows" / "bench",
                        help="the flow folder to serve (default flows/bench: its 6 routes)")
    parser.add_argument("--routes", action="store_true",
                        help="serve flows/bench plus 200 generated flows (206 routes, half templated)")
    parser.add_argument("--callgrind", action="store_true",
                        help="count instructions per request under valgrind's callgrind instead of CPU time "
                             "(the same whatever the machine's load; ~50x slower: use --requests 1000 --repeats 1)")
    parser.add_argument("--callgrind-inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT_BASE", "18980")))
    args = parser.parse_args()
    check_cells(args.cells)
    if args.routes:
        args.flows = Path(tempfile.mkdtemp(prefix="interlace-routes-")) / "flows206"
        generate_routes(args.flows)
        sys.argv = [a for a in sys.argv if a != "--routes"] + ["--flows", str(args.flows)]
    if args.callgrind:
        raise SystemExit(under_callgrind(args))
    backend = None if args.callgrind_inner else start_backend(bench_dir(), args.port)
    os.environ["BACKEND_URL"] = f"http://127.0.0.1:{args.port}"
    try:
        if backend is not None:
            time.sleep(0.5)
        try:
            import uvloop

            uvloop.run(main(args))
        except ImportError:
            asyncio.run(main(args))
    finally:
        if backend is not None:
            backend.terminate()
            backend.wait()
    logging.shutdown()


if __name__ == "__main__":
    run()
