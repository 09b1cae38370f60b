"""The pattern cells in one process: the engine (benchmarks/patterns/flows.yaml) and the floor
(floor_app.py) called as uvicorn would call them, CPU time per request, back to back.

    .venv/bin/python benchmarks/patterns/inprocess.py                      # every cell
    .venv/bin/python benchmarks/patterns/inprocess.py --cells split,cached --requests 5000 --repeats 5
    .venv/bin/python benchmarks/patterns/inprocess.py --only engine        # to profile the engine alone
    .venv/bin/python benchmarks/patterns/inprocess.py --cells direct,jwt,jwt-fresh --callgrind --requests 400

No HTTP server parses the requests, so what is measured is each app's own path and the aiohttp
client below it; the calls go to the shared benchmark's echo backend (CPU 1).  Both apps run in
this process on one event loop, alternating cell by cell, so the others' load on a shared machine
moves both alike: the ratio floor/engine is the figure to read (best of the repeats).

With ``--callgrind`` the engine alone runs under valgrind's callgrind and each cell's measured
requests are counted (instructions per request, the whole request: front, steps, the call, the
log line), which the machine's load does not move; the tokens are signed outside valgrind.  What
it cannot show is the cost of cold caches, which a new token's signature check pays in a server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.hotpath_common import asgi_request, bench_dir, callgrind_totals  # noqa: E402

# cell: path, body, token (as run.sh, every cell but jwt-fresh carries the one resent token)
CELLS = {
    "direct": ("/direct", "small", "one"),
    "scatter": ("/scatter", "small", "one"),
    "split": ("/split", "split", "one"),
    "cached": ("/cached", "small", "one"),
    "jwt": ("/jwt", "small", "one"),
    "jwt-fresh": ("/jwt", "small", "fresh"),
}


def make_keys(work: Path, fresh: int) -> tuple[str, list[str]]:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(65537, 2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (work / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
    exp = int(time.time()) + 3600
    tokens = [jwt.encode({"iss": "https://gateway.bench", "sub": f"user-{n}", "exp": exp}, key, algorithm="RS256",
                         headers={"kid": "k1"}) for n in range(fresh + 1)]
    return tokens[0], tokens[1:]


async def one(app: Any, method: str, path: str, body: bytes, token: str | None) -> int:
    headers = [(b"content-type", b"application/json")]
    if token is not None:
        headers.append((b"x-jwt-assertion", token.encode()))
    return await asgi_request(app, method, path, headers, body)


class Tokens:
    def __init__(self, one_token: str, fresh: list[str]) -> None:
        self.one = one_token
        self.fresh = fresh
        self.next = 0

    def take(self, kind: str | None) -> str | None:
        if kind is None:
            return None
        if kind == "one":
            return self.one
        token = self.fresh[self.next % len(self.fresh)]
        self.next += 1
        return token


async def drive(app: Any, cell: str, bodies: dict[str, bytes], tokens: Tokens, requests: int,
                concurrency: int) -> float:
    path, body_name, token_kind = CELLS[cell]
    method = "GET" if cell == "scatter" else "POST"
    body = bodies[body_name]
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status = await one(app, method, path, body, tokens.take(token_kind))
            if status != 200:
                raise SystemExit(f"{cell}: answered {status}")

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) / requests * 1e6


async def main(args: argparse.Namespace, work: Path, tokens: Tokens) -> None:
    from engine.drain import DrainGuard
    from engine.observability import setup_logging
    from engine.runtime import Runtime

    log = tempfile.NamedTemporaryFile("w", prefix="interlace-patterns-", suffix=".log", delete=False)  # noqa: SIM115
    sys.stderr = log  # the request lines, as `interlace run` writes them to its standard error
    setup_logging(args.log_level, "text")
    apps: dict[str, Any] = {}
    runtime = None
    if args.only in ("", "engine"):
        runtime = Runtime(HERE)
        compiled = runtime.load()
        await runtime.start(compiled)
        apps["engine"] = DrainGuard(runtime.app)
    floor = None
    if args.only in ("", "floor"):
        import aiohttp

        from benchmarks.patterns import floor_app as floor

        floor.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        apps["floor"] = floor.app  # an http scope never runs its lifespan: the session is made above
    gc.set_threshold(10_000, 10, 10)  # as the server does
    items = [{"id": f"i{n}", "qty": n % 7 + 1, "price": 2.5} for n in range(100)]
    bodies = {"small": json.dumps({"order": {"id": "1001", "lines": [1, 2, 3]}}).encode(),
              "split": json.dumps({"items": items}).encode()}
    cells = args.cells.split(",")
    results: dict[tuple[str, str], list[float]] = {}
    for cell in cells:
        for app in apps.values():
            await drive(app, cell, bodies, tokens, max(args.requests // 5, 200), args.concurrency)  # warm-up
    if args.counted:
        for cell in cells:
            _control("--zero")
            _control("--instr=on")
            await drive(apps["engine"], cell, bodies, tokens, args.requests, args.concurrency)
            _control("--instr=off")
            _control(f"--dump={cell}")
    for _ in range(0 if args.counted else args.repeats):
        for cell in cells:
            for side, app in apps.items():
                results.setdefault((side, cell), []).append(
                    await drive(app, cell, bodies, tokens, args.requests, args.concurrency))
    if runtime is not None:
        await runtime.stop()
    if floor is not None and floor.session is not None:
        await floor.session.close()
    sys.stderr = sys.__stderr__
    log.close()
    os.unlink(log.name)
    if args.counted:
        return
    print(f"{args.requests} requests x {args.repeats}, {args.concurrency} at once, log level {args.log_level}; "
          "CPU µs per request of this process, best of the repeats")
    print("| cell | engine | floor | floor/engine |")
    print("|---|---:|---:|---:|")
    best = {key: min(values) for key, values in results.items()}
    for cell in cells:
        engine = best.get(("engine", cell))
        floor_cpu = best.get(("floor", cell))
        ratio = f"{floor_cpu / engine:.2f}x" if engine and floor_cpu else "-"
        print(f"| {cell} | {engine or 0:.0f} | {floor_cpu or 0:.0f} | {ratio} |")
    if args.only == "" and {"cached", "direct"} <= set(cells):
        print(f"\ncache hit vs backend call (engine): {best['engine', 'direct'] / best['engine', 'cached']:.2f}x "
              "less CPU")
    if args.only == "" and {"jwt", "jwt-fresh", "direct"} <= set(cells):
        for cell in ("jwt", "jwt-fresh"):
            print(f"{cell} adds {(best['engine', cell] / best['engine', 'direct'] - 1) * 100:+.1f} % CPU to the "
                  "direct proxy (engine)")


def _control(*options: str) -> None:
    subprocess.run(["callgrind_control", *options, str(os.getpid())], check=True, stdout=subprocess.DEVNULL)


def _counted(args: argparse.Namespace, work: Path) -> None:
    """This script again under callgrind (the engine only, the tokens of ``work``): instructions
    per request, cell by cell."""
    out = work / "callgrind.out"
    command = [sys.executable, __file__, "--cells", args.cells, "--requests", str(args.requests),
               "--concurrency", str(args.concurrency), "--log-level", args.log_level, "--only", "engine",
               "--counted", str(work)]
    subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *command],
                   env={**os.environ, "PYTHONHASHSEED": "0"}, check=True, stderr=subprocess.DEVNULL)
    totals = callgrind_totals(out, args.requests)
    print(f"{args.requests} requests a cell, {args.concurrency} at once, log level {args.log_level}; "
          "instructions per request of the engine (callgrind)")
    print("| cell | instructions | against direct |")
    print("|---|---:|---:|")
    for cell in args.cells.split(","):
        known = "direct" in totals and cell in totals
        against = f"{(totals[cell] / totals['direct'] - 1) * 100:+.1f} %" if known else "-"
        print(f"| {cell} | {totals.get(cell, 0):,.0f} | {against} |")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(CELLS), help=f"of {', '.join(CELLS)}")
    parser.add_argument("--requests", type=int, default=3000, help="requests per measurement (default 3000)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per cell (default 3)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--only", choices=["", "engine", "floor"], default="")
    parser.add_argument("--log-level", default="info", help="as `interlace run --log-level` (default info)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT_BASE", "18985")))
    parser.add_argument("--callgrind", action="store_true",
                        help="the engine's instructions per request under valgrind's callgrind, cell by cell")
    parser.add_argument("--counted", type=Path, help=argparse.SUPPRESS)  # the run under callgrind: its tokens' folder
    args = parser.parse_args()
    for cell in args.cells.split(","):
        if cell not in CELLS:
            raise SystemExit(f"unknown cell {cell!r}; cells: {', '.join(CELLS)}")
    if args.counted is not None:  # under callgrind: the keys and tokens the run outside made
        work = args.counted
        one_token, *fresh_tokens = json.loads((work / "tokens.json").read_text())
        import uvloop

        uvloop.run(main(args, work, Tokens(one_token, fresh_tokens)))
        return
    work = Path(tempfile.mkdtemp(prefix="interlace-patterns-"))
    # cycled: each token comes back after 10,500 requests, when the engine's 10,000 remembered are others;
    # under callgrind every request of the warm-up and the measure has its own
    fresh = (args.requests + max(args.requests // 5, 200) + 10 if args.callgrind else 10_500) \
        if "jwt-fresh" in args.cells else 1
    one_token, fresh_tokens = make_keys(work, fresh)
    (work / "tokens.json").write_text(json.dumps([one_token, *fresh_tokens]))
    os.environ["BENCH_JWKS"] = str(work / "jwks.json")
    backend = subprocess.Popen(["taskset", "-c", "1", "node", str(bench_dir() / "lib" / "echo_backend.js")],
                               env={**os.environ, "PORT": str(args.port)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    os.environ["BACKEND_URL"] = f"http://127.0.0.1:{args.port}"
    try:
        time.sleep(0.5)
        if args.callgrind:
            _counted(args, work)
            return
        import uvloop

        uvloop.run(main(args, work, Tokens(one_token, fresh_tokens)))
    finally:
        backend.terminate()
        backend.wait()
    logging.shutdown()


if __name__ == "__main__":
    run()
