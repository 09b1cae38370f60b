"""Instructions per request of the whole server, socket to socket: the engine against the floor.

    .venv/bin/python benchmarks/server_callgrind.py                         # this tree and the aiohttp floor
    .venv/bin/python benchmarks/server_callgrind.py --before /tmp/old-tree  # ... and an older checkout
    .venv/bin/python benchmarks/server_callgrind.py --routes                # this tree, 206 routes against 6
    .venv/bin/python benchmarks/server_callgrind.py --cells direct-json --requests 2000
    .venv/bin/python benchmarks/server_callgrind.py --patterns --cells cached,direct  # issue 15's cells
    .venv/bin/python benchmarks/server_callgrind.py --traced --cells direct-json --requests 1024  # tracing's cost
    .venv/bin/python benchmarks/server_callgrind.py --traced --cells direct-json --requests 1024 --log-level warning
        # ... as benchmarks/observability_ab.sh runs the engines (no request log); --cache-sim adds D1/LL misses
    .venv/bin/python benchmarks/server_callgrind.py --tls --cells direct-json              # a cached OCSP check's cost
    .venv/bin/python benchmarks/server_callgrind.py --tls --reconnect --cells direct-json --requests 200

``benchmarks/inprocess.py --callgrind`` drives the ASGI app with no HTTP server, so it cannot see
what the server's side of a request costs: uvicorn's protocol and cycle, the engine's guard
(engine/httpguard.py), the socket writes, and the collector's work on what they leave behind
(a reference cycle per request cost the engine 2-4 % of its CPU, invisible in process).  Here
each server runs as `interlace run` (or uvicorn for the floor) runs it, under valgrind's
callgrind with counting off; a client in this process sends the benchmark's 1 KiB requests on
20 keep-alive connections, exactly ``--requests`` of them per cell, with counting on from the
first to the last answer.  Instructions do not move with the machine's load (the same work
counts the same), so two trees or the engine and the floor compare in one run, on a busy
machine.  The client and the benchmark's echo backend run outside valgrind, on CPU 1.

``--patterns`` serves issue 15's pattern flows (benchmarks/patterns/flows.yaml) beside their
own floor (benchmarks/patterns/floor_app.py, Starlette on uvicorn), with run.sh's small body.

Each server runs with its defaults (the engine: metrics on, the request log at INFO, written to
a file; the floor: uvicorn, uvloop, httptools, no access log), as the peer benchmark runs them.

``--traced``: each engine also runs with tracing on at 100 % (``OTEL_TRACES_SAMPLER=always_on``),
exporting OTLP/HTTP to a loopback sink that decodes every export (benchmarks/span_sink.py); the
export thread is in the server's process, so its encoding and posts are counted.  Only full
batches leave (``OTEL_BSP_SCHEDULE_DELAY`` long), as they do at full speed, where a 512-span
batch fills in a fraction of the 5 s default delay; under valgrind, ~40x slower, the timer would
send many small batches instead.  With ``--requests`` a multiple of 256, each cell's window
exports whole batches (2 spans a request); the sink's count over the window is printed.

``--tls``: two engines on mutual TLS (a CA, server and client certificates made at start with
tests/support/pki.py), one with OCSP checks (``--tls-ocsp hard-fail``) against OpenSSL's
responder on loopback (tests/support/ocsp.py, outside valgrind), one without; the client
presents its certificate.  The warm-up has the answer cached, so the window measures a cached
check (the responder's count of requests is printed: one per engine).  ``--reconnect``: each
request on a new TLS connection (a full handshake each), where the per-connection check runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotpath_common import CELLS, ROOT, bench_dir, bodies, check_cells, start_backend, stop_groups, wait_answering

PY = ROOT / ".venv" / "bin" / "python"
PATTERNS = ROOT / "benchmarks" / "patterns"
# issue 15's cells (--patterns): path, body kind, Content-Type, as benchmarks/patterns/run.sh sends them
PATTERN_CELLS: dict[str, tuple[str, str, str]] = {
    "cached": ("/cached", "small", "application/json"),
    "direct": ("/direct", "small", "application/json"),
    "split": ("/split", "split", "application/json"),
}


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    cwd: Path = ROOT
    out: Path = Path()
    proc: subprocess.Popen[bytes] | None = None
    dumps: int = 0
    counts: dict[str, float] = field(default_factory=dict)
    collected: dict[str, float] = field(default_factory=dict)  # of which the cyclic collector's
    events: dict[str, float] = field(default_factory=dict)  # the last dump's totals by event (--cache-sim)
    misses: dict[str, dict[str, float]] = field(default_factory=dict)  # cell -> cache event -> per request

    def control(self, *options: str) -> None:
        assert self.proc is not None
        subprocess.run(["callgrind_control", *options, str(self.proc.pid)], check=True, stdout=subprocess.DEVNULL)

    def collector(self) -> float:
        """The instructions of the last dump spent in Python's cyclic collector (inclusive)."""
        total = 0.0
        for candidate in sorted(self.out.parent.glob(f"{self.out.name}.{self.dumps}*")):
            out = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(candidate)], capture_output=True,
                                 text=True).stdout
            for line in out.splitlines():
                if "gcmodule.c:gc_collect_main " in line:
                    total += float(line.split()[0].replace(",", ""))
                    break
        return total

    def dumped(self) -> float:
        """The instructions (Ir) of the last dump (``OUT.N``, or ``OUT.N-01``... with threads);
        the dump's totals by event (the cache simulator's too, with ``--cache-sim``) go to ``events``."""
        total = 0.0
        events: dict[str, float] = {}
        for candidate in sorted(self.out.parent.glob(f"{self.out.name}.{self.dumps}*")):
            names: list[str] = []
            for line in candidate.read_text(errors="replace").splitlines():
                if line.startswith("events:"):
                    names = line.split()[1:]
                elif line.startswith("totals:"):
                    values = [float(v) for v in line.split()[1:]]
                    total += values[0]
                    for event, value in zip(names, values, strict=False):
                        events[event] = events.get(event, 0.0) + value
        if not total:
            raise SystemExit(f"{self.name}: no callgrind dump {self.dumps} next to {self.out}")
        self.events = events
        return total


def interlace(name: str, port: int, flows: Path, backend: str, pythonpath: str | None = None,
              sink: int | None = None, extra: tuple[str, ...] = ()) -> Server:
    env = {"BACKEND_URL": backend}
    if sink is not None:  # tracing on at 100 %, full batches only (see --traced above)
        env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink}", "OTEL_TRACES_SAMPLER": "always_on",
                    "OTEL_BSP_SCHEDULE_DELAY": "3600000"})
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    # the interlace script, not `python -m` (which would put this tree first on the path, before PYTHONPATH)
    return Server(name, [str(PY), str(ROOT / ".venv" / "bin" / "interlace"), "run", str(flows), "--host", "127.0.0.1",
                         "--port", str(port), "--management-port", str(port + 1), *extra], env, port)


def floor(port: int, backend: str, bench: Path) -> Server:
    env = {"BACKEND_URL": backend, "BENCH_CLIENT": "aiohttp", "BENCH_POOL": "100", "PYTHONDONTWRITEBYTECODE": "1"}
    return Server("floor", [str(PY), "-m", "uvicorn", "floor_app:app", "--host", "127.0.0.1", "--port", str(port),
                            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
                            "--lifespan", "on"], env, port, cwd=bench / "lib")


def pattern_floor(port: int, backend: str) -> Server:
    env = {"BACKEND_URL": backend, "PYTHONDONTWRITEBYTECODE": "1"}
    return Server("floor", [str(PY), "-m", "uvicorn", "benchmarks.patterns.floor_app:app", "--host", "127.0.0.1",
                            "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                            "--log-level", "warning"], env, port)


def pattern_bodies(work: Path) -> dict[str, bytes]:
    """run.sh's bodies, and a JWKS for the floor to load (its jwt route is not driven here)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()
    jwk = {"kty": "EC", "crv": "P-256", "x": b64(numbers.x), "y": b64(numbers.y), "kid": "k1", "use": "sig"}
    (work / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    items = [{"id": f"i{n}", "qty": n % 7 + 1, "price": 2.5} for n in range(100)]
    return {"small": json.dumps({"order": {"id": "1001", "lines": [1, 2, 3]}}).encode(),
            "split": json.dumps({"items": items}).encode(), "json": b'{"order": {"id": "1001"}}'}


# --tls: the client's context (it trusts the CA and presents the client certificate)
CLIENT_TLS: ssl.SSLContext | None = None


def tls_setup(work: Path) -> tuple[tuple[str, ...], ssl.SSLContext, Any]:
    """The engines' TLS options, the client's context and the started OCSP responder (--tls)."""
    sys.path.insert(0, str(ROOT))
    from tests.support.ocsp import OcspResponder
    from tests.support.pki import Authority

    ca = Authority(work, "Bench CA")
    responder = OcspResponder(ca, work, next_update_minutes=600)
    server, client = ca.issue("facade", server=True), ca.issue("bench-client", ocsp_url=responder.url)
    responder.write_index((client,))
    responder.start()
    context = ssl.create_default_context(cafile=str(ca.ca.cert))
    context.load_cert_chain(client.cert, client.key)
    return ("--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-client-ca", str(ca.ca.cert)), \
        context, responder


def wait_ready(server: Server, body: bytes, deadline_s: float = 600) -> None:
    # under callgrind a server starts 50-100x slower: a long deadline, a slow poll
    if CLIENT_TLS is None:
        wait_answering(server.name, server.proc, server.port, body, deadline_s, poll_s=0.5, timeout_s=30)
        return
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert server.proc is not None
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.name} exited with {server.proc.returncode}; see its log")
        try:
            request = urllib.request.Request(f"https://127.0.0.1:{server.port}/direct", data=body,
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=30, context=CLIENT_TLS) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{server.name} did not answer /direct within {deadline_s:g} s")


def sink_count(port: int) -> int:
    """The spans the sink has received so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as answer:
        return int(answer.read())


def settled(port: int) -> int:
    """The sink's count once no export has arrived for 2 s (an export under valgrind is slow)."""
    count = sink_count(port)
    while True:
        time.sleep(2)
        now = sink_count(port)
        if now == count:
            return count
        count = now


async def _connection(port: int, request: bytes, left: list[int], reconnect: bool = False) -> None:
    while reconnect and left[0] > 0:  # one request per connection
        left[0] -= 1
        await _connection(port, request, [1])
    if left[0] <= 0:
        return
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=CLIENT_TLS)
    try:
        while left[0] > 0:
            left[0] -= 1
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if status != 200:
                raise SystemExit(f"answered {status}: {head!r}")
    finally:
        writer.close()


async def drive(port: int, cell: str, payloads: dict[str, bytes], requests: int, connections: int,
                reconnect: bool = False) -> None:
    """Exactly ``requests`` requests of ``cell`` on ``connections`` keep-alive connections, as wrk
    sends them with the benchmark's post.lua."""
    path, kind, ctype = CELLS[cell] if cell in CELLS else PATTERN_CELLS[cell]
    body = payloads[kind]
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\nx-route: a\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    left = [requests]
    await asyncio.gather(*(_connection(port, request, left, reconnect) for _ in range(connections)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="direct-json,cbr-json,cbr-xml", help=f"of {', '.join(CELLS)}")
    parser.add_argument("--requests", type=int, default=1000, help="requests per cell (default 1000)")
    # 20, not the peer bench's 50: under valgrind a server is ~40x slower, and 50 requests in flight
    # made the flows' 2 s backend connect timeout fire (504) whenever the machine was loaded
    parser.add_argument("--connections", type=int, default=20, help="keep-alive connections (default 20)")
    parser.add_argument("--before", type=Path, help="an older checkout, run as the engine 'before'")
    parser.add_argument("--routes", action="store_true", help="this tree on 206 routes against 6 (no floor)")
    parser.add_argument("--patterns", action="store_true",
                        help=f"issue 15's flows and floor, cells of {', '.join(PATTERN_CELLS)}")
    parser.add_argument("--no-floor", action="store_true", help="leave the aiohttp floor out")
    parser.add_argument("--traced", action="store_true",
                        help="each engine also with tracing on at 100 %% (no floor): tracing's cost as a ratio")
    parser.add_argument("--tls", action="store_true",
                        help="mutual TLS, without and with OCSP checks (no floor): a cached OCSP check's cost")
    parser.add_argument("--reconnect", action="store_true", help="each request on a new connection")
    parser.add_argument("--log-level", help="the engines' --log-level (default: theirs, the request log at INFO); "
                        "warning: no request log, as benchmarks/observability_ab.sh runs them")
    parser.add_argument("--cache-sim", action="store_true",
                        help="callgrind's cache simulator too: D1/LL misses per request beside the instructions")
    parser.add_argument("--port-base", type=int, default=int(os.environ.get("PORT_BASE", "18960")))
    args = parser.parse_args()
    level: tuple[str, ...] = ("--log-level", args.log_level) if args.log_level else ()
    if args.patterns:
        cells = args.cells.split(",") if args.cells != parser.get_default("cells") else ["cached", "direct"]
        if unknown := [c for c in cells if c not in PATTERN_CELLS]:
            raise SystemExit(f"unknown cells {unknown}; with --patterns: {', '.join(PATTERN_CELLS)}")
    else:
        cells = check_cells(args.cells)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the client beside the backend, off the servers' CPU
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind (apt-get install valgrind)")
    bench = bench_dir()
    work = Path(tempfile.mkdtemp(prefix="interlace-server-callgrind-"))
    payloads = pattern_bodies(work) if args.patterns else bodies(bench)
    if args.patterns:
        os.environ["BENCH_JWKS"] = str(work / "jwks.json")  # the flows' jwt route loads it (every server's env)
    flows = PATTERNS if args.patterns else ROOT / "flows" / "bench"
    base = args.port_base
    backend = f"http://127.0.0.1:{base}"
    servers: list[Server] = []
    responder: Any = None
    if args.tls:
        global CLIENT_TLS
        tls_args, CLIENT_TLS, responder = tls_setup(work)
        servers.append(interlace("mtls", base + 2, flows, backend, extra=tls_args))
        servers.append(interlace("mtls-ocsp", base + 4, flows, backend, extra=(*tls_args, "--tls-ocsp", "hard-fail")))
    elif args.routes:
        from hotpath import generate_routes

        generate_routes(work / "flows206")
        servers.append(interlace("routes6", base + 2, ROOT / "flows" / "bench", backend))
        servers.append(interlace("routes206", base + 4, work / "flows206", backend))
    else:
        if not args.no_floor and not args.traced:
            servers.append(pattern_floor(base + 2, backend) if args.patterns
                           else floor(base + 2, backend, bench))
        if args.before:
            servers.append(interlace("before", base + 4, flows, backend, str(args.before.resolve()), extra=level))
            if args.traced:
                servers.append(interlace("before-traced", base + 8, flows, backend, str(args.before.resolve()),
                                         sink=base + 12, extra=level))
        servers.append(interlace("this", base + 6, flows, backend, extra=level))
        if args.traced:
            servers.append(interlace("this-traced", base + 10, flows, backend, sink=base + 12, extra=level))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start_backend(bench, base))
        if args.traced:
            procs.append(subprocess.Popen(["taskset", "-c", "1", str(PY), str(ROOT / "benchmarks" / "span_sink.py"),
                                           str(base + 12)], start_new_session=True))
        for server in servers:
            server.out = work / f"{server.name}.callgrind"
            log = (work / f"{server.name}.log").open("wb")
            command = ["taskset", "-c", "0", "valgrind", "--tool=callgrind", "--instr-atstart=no",
                       *(["--cache-sim=yes"] if args.cache_sim else []),
                       f"--callgrind-out-file={server.out}", *server.command]
            server.proc = subprocess.Popen(command, env={**os.environ, "PYTHONHASHSEED": "0", **server.env},
                                           cwd=server.cwd, stdout=log, stderr=log, start_new_session=True)
            procs.append(server.proc)
        for server in servers:
            wait_ready(server, payloads["json"])
        for server in servers:
            # warm-up (imports, caches, valgrind's translations, the backend pool), concurrency
            # rising step by step: 50 connects to the backend at once would outlast a 2 s connect
            # timeout under valgrind
            for connections in sorted({1, 5, 10, 20, 35, args.connections}):
                if connections <= args.connections:
                    for cell in cells:
                        asyncio.run(drive(server.port, cell, payloads, 2 * connections, connections,
                                          args.reconnect))
            for cell in cells:
                asyncio.run(drive(server.port, cell, payloads, max(args.requests // 5, 100), args.connections,
                                  args.reconnect))
            for cell in cells:
                spans = settled(base + 12) if args.traced else 0
                server.control("--zero")
                server.control("--instr=on")
                asyncio.run(drive(server.port, cell, payloads, args.requests, args.connections, args.reconnect))
                if args.traced:  # the batches this window filled, sent within it (all servers wait alike)
                    after = settled(base + 12)
                server.control("--instr=off")
                if "traced" in server.name:
                    print(f"{server.name:<10} {cell:<12} spans received in the window: "
                          f"{(after - spans) / args.requests:.2f} a request", flush=True)
                server.dumps += 1
                server.control(f"--dump={cell}")
                server.counts[cell] = server.dumped() / args.requests
                server.collected[cell] = server.collector() / args.requests
                server.misses[cell] = {e: v / args.requests for e, v in server.events.items() if e != "Ir"}
                print(f"{server.name:<10} {cell:<12} {server.counts[cell]:12,.0f} instructions/request "
                      f"({server.collected[cell]:,.0f} in the cyclic collector)", flush=True)
                if server.misses[cell]:
                    print("    per request: " + ", ".join(f"{e} {v:,.0f}" for e, v in server.misses[cell].items()),
                          flush=True)
    finally:
        stop_groups(procs, 60)
        if responder is not None:
            responder.stop()
    if responder is not None:
        print(f"\nthe OCSP responder was asked {responder.requests} time(s)")
    reference = servers[0]
    print(f"\ninstructions per request, whole server (callgrind), {args.requests} requests a cell on "
          f"{args.connections} {'connections, a new one each request' if args.reconnect else 'connections'}, "
          f"1 KiB bodies; ratio to {reference.name} (lower is better)\n")
    print("| server | cell | instructions/request | of which the cyclic collector | ratio |")
    print("|---|---|---:|---:|---:|")
    for server in servers:
        for cell in cells:
            print(f"| {server.name} | {cell} | {server.counts[cell]:,.0f} | {server.collected[cell]:,.0f} | "
                  f"{server.counts[cell] / reference.counts[cell]:.3f}x |")
    if args.traced:
        print()
        for untraced, traced in zip(servers[::2], servers[1::2], strict=True):
            for cell in cells:
                ratio = traced.counts[cell] / untraced.counts[cell]
                print(f"{untraced.name} {cell}: tracing on at 100 % / off: instructions per request {ratio:.3f} "
                      f"({traced.counts[cell] - untraced.counts[cell]:+,.0f}; goal <= 1.10)")
    if args.routes:
        print()
        for cell in cells:
            ratio = servers[1].counts[cell] / servers[0].counts[cell]
            print(f"{cell}: 206 routes / 6 routes: instructions per request {ratio:.3f} (goal <= 1.10)")
    if not os.environ.get("SERVER_CALLGRIND_KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"\nkept: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
