"""What the outbound HTTP client costs per request, with 50 requests in flight.

    .venv/bin/python benchmarks/http_client.py                  # every client, 5 s each, 1 KiB bodies
    .venv/bin/python benchmarks/http_client.py --seconds 10 --size 100k --rounds 3
    .venv/bin/python benchmarks/http_client.py --clients endpoint,aiohttp

A real echo backend (the mediation benchmark's ``echo_backend.js``, run with node) listens on a
loopback port in its own process pinned to CPU 1; each client runs in a fresh Python process
pinned to CPU 0, sends POST requests with a fixed body from ``--concurrency`` tasks for
``--seconds`` after an unmeasured warm-up, reads every answer whole and checks it.  Reported per
client: requests per second and CPU microseconds per request (the client process's CPU time over
the measured window divided by the requests it completed: less sensitive than req/s to the
noise of a shared VM).

Clients:
  httpx            httpx.AsyncClient on its own pool (httpcore), 100 connections
  httpx-aiohttp    httpx.AsyncClient on connectors.aiohttp_transport.AiohttpTransport
  transport        httpx.Request straight into AiohttpTransport.handle_async_request
  exchange-aiohttp connectors.aiohttp_transport.AiohttpTransport.exchange (the http endpoint's pool until
                   the fourth session)
  exchange-http1   connectors._http1.Http1Pool.exchange (the http endpoint's pool since: httptools' parser)
  endpoint         connectors.http.HttpEndpoint.request (what a flow's call step uses)
  aiohttp          aiohttp.ClientSession alone, 100 connections: the floor
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ECHO_BACKEND = Path(os.environ.get("BENCH_DIR", "/work/shared/bench")) / "lib" / "echo_backend.js"
CLIENTS = ("httpx", "httpx-aiohttp", "transport", "exchange-aiohttp", "exchange-http1", "endpoint", "aiohttp")
SIZES = {"1k": 1024, "10k": 10 * 1024, "100k": 100 * 1024}
POOL = 100

Send = Callable[[], Awaitable[None]]


# ---------------------------------------------------------------- the client process


async def make_client(kind: str, url: str, body: bytes) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """One ``send()`` per client kind (a POST whose answer is read whole and checked) and its closer."""
    headers = [("content-type", "application/json")]
    expected = len(body)

    def check(status: int, answer: bytes) -> None:
        if status != 200 or len(answer) != expected:
            raise RuntimeError(f"bad answer: {status}, {len(answer)} bytes")

    if kind in ("httpx", "httpx-aiohttp"):
        import httpx

        from connectors.aiohttp_transport import AiohttpTransport

        transport = AiohttpTransport(max_connections=POOL) if kind == "httpx-aiohttp" else None
        client = httpx.AsyncClient(
            base_url=url, transport=transport, timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL),
        )

        async def send_httpx() -> None:
            reply = await client.post("/echo", content=body, headers=headers)
            check(reply.status_code, reply.content)

        return send_httpx, client.aclose

    if kind == "transport":
        import httpx

        from connectors.aiohttp_transport import AiohttpTransport

        raw = AiohttpTransport(max_connections=POOL)
        extensions = {"timeout": {"connect": 5.0, "read": 30.0, "pool": 5.0}}

        async def send_transport() -> None:
            request = httpx.Request("POST", url + "/echo", headers=headers, content=body, extensions=extensions)
            reply = await raw.handle_async_request(request)
            check(reply.status_code, await reply.aread())

        return send_transport, raw.aclose

    if kind in ("exchange-aiohttp", "exchange-http1"):
        from connectors._http1 import Http1Pool
        from connectors.aiohttp_transport import AiohttpTransport

        pool = AiohttpTransport(max_connections=POOL) if kind == "exchange-aiohttp" else Http1Pool(max_connections=POOL)
        target = url + "/echo"

        async def send_exchange() -> None:
            answer = await pool.exchange("POST", target, headers, body)
            check(answer.status, answer.body or b"")

        return send_exchange, pool.aclose

    if kind == "endpoint":
        from connectors.http import HttpEndpoint

        endpoint = HttpEndpoint("bench", {"url": url, "pool": {"max_connections": POOL}})
        await endpoint.open()

        async def send_endpoint() -> None:
            reply = await endpoint.request("POST", "/echo", headers=headers, body=body)
            check(reply.status, await reply.read())

        return send_endpoint, endpoint.close

    if kind == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=POOL), auto_decompress=False)

        async def send_aiohttp() -> None:
            async with session.post(url + "/echo", data=body, headers=headers) as reply:
                check(reply.status, await reply.read())

        return send_aiohttp, session.close

    raise SystemExit(f"unknown client {kind!r}; known: {', '.join(CLIENTS)}")


async def drive(kind: str, url: str, body: bytes, concurrency: int, warmup: float, seconds: float) -> dict[str, Any]:
    send, close = await make_client(kind, url, body)
    measuring = False
    stop = False
    done = 0

    async def worker() -> None:
        nonlocal done
        while not stop:
            await send()
            if measuring:
                done += 1

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    measuring = True
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, wall1, requests = time.process_time(), time.monotonic(), done
    measuring = False
    stop = True
    await asyncio.gather(*workers)
    await close()
    return {"client": kind, "requests": requests, "seconds": wall1 - wall0, "cpu": cpu1 - cpu0}


def child(args: argparse.Namespace) -> None:
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    body = json.dumps({"pad": "x" * (SIZES[args.size] - 11)}).encode()
    assert len(body) == SIZES[args.size]
    result = asyncio.run(drive(args.child, args.url, body, args.concurrency, args.warmup, args.seconds))
    print(json.dumps(result))


# ---------------------------------------------------------------- the orchestrator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_backend(port: int, cpu: int | None) -> subprocess.Popen[bytes]:
    node = shutil.which("node")
    if node is None or not ECHO_BACKEND.exists():
        raise SystemExit(f"needs node and {ECHO_BACKEND} (set BENCH_DIR to the benchmark folder)")
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    process = subprocess.Popen([node, str(ECHO_BACKEND)], env={**os.environ, "PORT": str(port)},
                               preexec_fn=pin, start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the echo backend did not start")


def run_client(kind: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--url", url, "--size", args.size,
               "--concurrency", str(args.concurrency), "--warmup", str(args.warmup),
               "--seconds", str(args.seconds), "--loop", args.loop]
    if not args.no_pin:
        command += ["--cpu", str(args.cpu_client)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated, from: " + ", ".join(CLIENTS))
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per client (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (default 1)")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight (default 50)")
    parser.add_argument("--size", choices=sorted(SIZES), default="1k", help="request body size (default 1k)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every client; medians are shown")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop of the client (default uvloop, as the server runs)")
    parser.add_argument("--cpu-client", type=int, default=0, help="CPU of the client process (default 0)")
    parser.add_argument("--cpu-backend", type=int, default=1, help="CPU of the echo backend (default 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    kinds = [k.strip() for k in args.clients.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(CLIENTS))
    if unknown:
        parser.error(f"unknown clients {unknown}; known: {', '.join(CLIENTS)}")
    port = free_port()
    backend = start_backend(port, None if args.no_pin else args.cpu_backend)
    url = f"http://127.0.0.1:{port}"
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    try:
        for _ in range(args.rounds):
            for kind in kinds:
                runs[kind].append(run_client(kind, url, args))
    finally:
        backend.terminate()
        backend.wait(5)

    print(f"{args.concurrency} in flight, {args.size} POST bodies echoed, {args.seconds:g} s per client "
          f"after {args.warmup:g} s warm-up, {args.rounds} round(s), loop {args.loop}, "
          f"{'unpinned' if args.no_pin else f'client on CPU {args.cpu_client}, backend on CPU {args.cpu_backend}'}")
    print()
    print("| client | req/s | CPU µs/request |")
    print("|---|---:|---:|")
    for kind in kinds:
        rates = [r["requests"] / r["seconds"] for r in runs[kind]]
        costs = [r["cpu"] / r["requests"] * 1e6 if r["requests"] else float("inf") for r in runs[kind]]
        print(f"| {kind} | {statistics.median(rates):,.0f} | {statistics.median(costs):,.0f} |")


if __name__ == "__main__":
    main()
