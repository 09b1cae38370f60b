"""The request hot path, engines side by side in one run: CPU µs per request and req/s per cell.

    .venv/bin/python benchmarks/hotpath.py                          # this tree against the aiohttp floor
    .venv/bin/python benchmarks/hotpath.py --before /tmp/old-tree   # ... and an older checkout, as "before"
    .venv/bin/python benchmarks/hotpath.py --routes                 # 206 routes against 6 (issue 10's 10 %)
    .venv/bin/python benchmarks/hotpath.py --secs 4 --rounds 6 --cells direct-json,cbr-json,cbr-xml,hbr

Every engine runs at once, pinned to CPU 0 (an idle one costs nothing); the benchmark's echo
backend and wrk (1 thread, 50 connections, its ``post.lua``) share CPU 1.  Each round drives every
engine's cell back to back, in a rotating order, and reads the engine's CPU time (utime + stime
of its process, ``/proc/PID/stat``) before and after: CPU µs per request is the figure to read
on a shared machine, where wall req/s moves with everyone else's load.  Prints the medians,
and each engine's ratio to the reference (the aiohttp floor; with ``--routes``, the 6-route
engine).

Engines:
  this       this tree serving flows/bench (6 routes)
  before     ``--before DIR``'s engine (a checkout put first on PYTHONPATH), flows/bench
  floor      the benchmark's floor (its lib/floor_app.py: Starlette, aiohttp client, uvicorn)
  routes206  this tree on flows/bench plus 200 generated flows (``gen_flows.py``), half of
             them with templated paths (``/gen/{id}/N``, ``/{tenant}/gen/N``)

Engines run with the default settings of ``interlace run`` (metrics on, the request log at
INFO, here written to a file), as the peer benchmark runs them.  ``--log-level warning`` turns
the request log off for every interlace engine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hotpath_common import (
    CELLS,
    ROOT,
    bench_dir,
    bodies,
    check_cells,
    generate_routes,
    start_backend,
    stop_groups,
    wait_answering,
)

PY = ROOT / ".venv" / "bin" / "python"
HZ = os.sysconf("SC_CLK_TCK")
RESULT = re.compile(r'BENCH_RESULT .*"requests":(\d+),"duration_us":(\d+)')


@dataclass
class Engine:
    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    cwd: Path = ROOT
    proc: subprocess.Popen[bytes] | None = None
    cpu: dict[str, list[float]] = field(default_factory=dict)
    rate: dict[str, list[float]] = field(default_factory=dict)

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ


def interlace(name: str, port: int, flows: Path, work: Path, backend: str, log_level: str,
              pythonpath: str | None = None) -> Engine:
    env = {"BACKEND_URL": backend}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = ["taskset", "-c", "0", str(ROOT / ".venv" / "bin" / "interlace"), "run", str(flows),
               "--host", "127.0.0.1", "--port", str(port), "--management-port", str(port + 1),
               "--log-level", log_level]
    return Engine(name, command, env, port)


def wait_ready(engine: Engine, body: bytes) -> None:
    wait_answering(engine.name, engine.proc, engine.port, body)


def drive(engine: Engine, cell: str, bodies: Path, bench: Path, secs: float, connections: int = 50,
          ) -> tuple[float, float]:
    path, kind, ctype = CELLS[cell]
    env = {**os.environ, "BENCH_BODY": str(bodies / kind), "BENCH_CTYPE": ctype,
           "BENCH_HDR_NAME": "x-route", "BENCH_HDR_VALUE": "a"}
    before = engine.cpu_seconds()
    wrk = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{secs:g}s", "-s",
           str(bench / "lib" / "post.lua"), f"http://127.0.0.1:{engine.port}{path}"]
    out = subprocess.run(wrk, env=env, capture_output=True, text=True, check=True).stdout
    used = engine.cpu_seconds() - before
    found = RESULT.search(out)
    if not found or "Non-2xx" in out or not int(found.group(1)):
        raise SystemExit(f"{engine.name} {cell}: wrk saw errors or no answer:\n{out}")
    requests, duration_us = int(found.group(1)), int(found.group(2))
    return used * 1e6 / requests, requests / (duration_us / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secs", type=float, default=4, help="seconds per cell (default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--cells", default="direct-json,cbr-json,cbr-xml", help=f"of {', '.join(CELLS)}")
    parser.add_argument("--before", type=Path, help="an older checkout, run as the engine 'before'")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=DIR",
                        help="one more engine: checkout DIR (put first on PYTHONPATH) named NAME")
    parser.add_argument("--quiet", action="store_true", help="also this tree with --log-level warning (no request log)")
    parser.add_argument("--routes", action="store_true", help="206 routes against 6 (no floor)")
    parser.add_argument("--no-floor", action="store_true", help="leave the aiohttp floor out")
    parser.add_argument("--connections", type=int, default=50, help="wrk's connections (default 50, as the bench)")
    parser.add_argument("--log-level", default="info", help="interlace's --log-level (default info, as `run`)")
    parser.add_argument("--port-base", type=int, default=int(os.environ.get("PORT_BASE", "18930")))
    args = parser.parse_args()
    cells = check_cells(args.cells)
    bench = bench_dir()
    work = Path(tempfile.mkdtemp(prefix="interlace-hotpath-"))
    for kind, body in bodies(bench).items():  # the benchmark's own bodies: 1 KiB JSON and SOAP
        (work / kind).write_bytes(body)
    base = args.port_base
    backend = f"http://127.0.0.1:{base}"
    bench_flows = ROOT / "flows" / "bench"
    engines: list[Engine] = []
    if args.routes:
        generate_routes(work / "flows206")
        engines.append(interlace("routes6", base + 2, bench_flows, work, backend, args.log_level))
        engines.append(interlace("routes206", base + 4, work / "flows206", work, backend, args.log_level))
    else:
        if not args.no_floor:
            floor_env = {"BACKEND_URL": backend, "BENCH_CLIENT": "aiohttp", "BENCH_POOL": "100",
                         "PYTHONDONTWRITEBYTECODE": "1"}
            engines.append(Engine("floor", ["taskset", "-c", "0", str(PY), "-m", "uvicorn", "floor_app:app",
                                            "--host", "127.0.0.1", "--port", str(base + 2), "--loop", "uvloop",
                                            "--http", "httptools", "--no-access-log", "--log-level", "warning",
                                            "--lifespan", "on"], floor_env, base + 2, cwd=bench / "lib"))
        if args.before:
            engines.append(interlace("before", base + 4, bench_flows, work, backend, args.log_level,
                                     str(args.before.resolve())))
        engines.append(interlace("this", base + 6, bench_flows, work, backend, args.log_level))
        if args.quiet:
            engines.append(interlace("this-quiet", base + 8, bench_flows, work, backend, "warning"))
        for n, spec in enumerate(args.also):
            name, _, folder = spec.partition("=")
            engines.append(interlace(name, base + 10 + 2 * n, bench_flows, work, backend, args.log_level,
                                     str(Path(folder).resolve())))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start_backend(bench, base))
        for engine in engines:
            log = (work / f"{engine.name}.log").open("wb")
            engine.proc = subprocess.Popen(engine.command, env={**os.environ, **engine.env}, cwd=engine.cwd,
                                           stdout=log, stderr=log, start_new_session=True)
            procs.append(engine.proc)
        for engine in engines:
            wait_ready(engine, (work / "json").read_bytes())
        for engine in engines:  # warm-up: imports, pools, caches
            for cell in cells:
                drive(engine, cell, work, bench, 2)
        for round_ in range(args.rounds):
            order = engines[round_ % len(engines):] + engines[:round_ % len(engines)]
            for engine in order:
                for cell in cells:
                    cpu, rate = drive(engine, cell, work, bench, args.secs, args.connections)
                    engine.cpu.setdefault(cell, []).append(cpu)
                    engine.rate.setdefault(cell, []).append(rate)
                    print(f"round {round_ + 1}  {engine.name:<10} {cell:<12} {rate:8,.0f} req/s  {cpu:7.1f} µs/req",
                          flush=True)
    finally:
        stop_groups(procs, 10)
    reference = engines[0]
    print(f"\nmedians of {args.rounds} rounds, {args.secs:g} s a cell, 1 KiB bodies; ratios to {reference.name} "
          "(req/s: higher is better; CPU: lower is better)\n")
    print("| engine | cell | req/s | CPU µs/req | req/s ratio | CPU ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for engine in engines:
        for cell in cells:
            cpu = statistics.median(engine.cpu[cell])
            rate = statistics.median(engine.rate[cell])
            ref_cpu = statistics.median(reference.cpu[cell])
            ref_rate = statistics.median(reference.rate[cell])
            print(f"| {engine.name} | {cell} | {rate:,.0f} | {cpu:.0f} | {rate / ref_rate:.2f}x "
                  f"| {cpu / ref_cpu:.2f}x |")
    if args.routes:
        print()
        for cell in cells:
            six, many = engines
            cpu_ratio = statistics.median(many.cpu[cell]) / statistics.median(six.cpu[cell])
            rate_ratio = statistics.median(many.rate[cell]) / statistics.median(six.rate[cell])
            print(f"{cell}: 206 routes / 6 routes: CPU per request {cpu_ratio:.3f} (goal <= 1.10), "
                  f"req/s {rate_ratio:.3f} (goal >= 0.90)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
