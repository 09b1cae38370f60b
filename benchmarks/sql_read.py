"""A SQL read by key through a flow, against SQLAlchemy on Starlette written by hand (the floor).

    .venv/bin/python benchmarks/sql_read.py                         # sqlite and postgresql, 4 s cells, 5 rounds
    .venv/bin/python benchmarks/sql_read.py --databases postgresql --drivers asyncpg,psycopg --rounds 3

Both servers answer ``GET /items/{sku}`` with the row as JSON (404 when there is none) from a
table of 1,000 rows, reading it through one pooled SQLAlchemy async engine (10 connections):

- ``engine``: ``interlace run`` on a flow with one ``call`` (operation query, expect one).
- ``floor``: ``benchmarks/sql_floor_app.py``: a Starlette route doing ``conn.execute(select ...)``
  and ``JSONResponse``, under uvicorn with uvloop and httptools: what anyone would write.

Each server runs pinned to CPU 0 (one process); wrk (50 connections, a different key per
request from a Lua script) and PostgreSQL run on CPU 1.  Every round measures each server's cell
back to back (the order alternating), so the machine's drift falls on both.  Reported per cell:
req/s, the server's CPU µs per request (/proc), and the engine/floor ratio of medians.  The
machine is shared: compare ratios from one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ROWS = 1000
LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", string.format("/items/SKU-%d", counter % 1000))
end
"""
FLOW = """
endpoints:
  db:
    sql:
      url: ${env.BENCH_DB}
      pool: {max_connections: 10}
flows:
  item:
    source:
      http: {method: GET, path: "/items/{sku}"}
    steps:
      - call:
          endpoint: db
          operation: query
          sql: SELECT sku, name, qty, price FROM items WHERE sku = :sku
          params: {sku: "${path.sku}"}
          expect: one
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(url: str) -> None:
    """The items table with ROWS rows (synchronously, through the same async engine)."""
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS items"))
            await conn.execute(text("CREATE TABLE items (sku TEXT PRIMARY KEY, name TEXT NOT NULL, "
                                    "qty INTEGER NOT NULL, price NUMERIC(10, 2))"))
            await conn.execute(text("INSERT INTO items VALUES (:sku, :name, :qty, :price)"),
                               [{"sku": f"SKU-{i}", "name": f"item {i}", "qty": i % 50, "price": i / 4}
                                for i in range(ROWS)])
        await engine.dispose()

    asyncio.run(run())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_up(url: str) -> None:
    for _ in range(300):
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def start(kind: str, url: str, port: int, work: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_DB": url}
    python = str(ROOT / ".venv" / "bin" / "python")
    if kind == "engine":
        (work / "flows").mkdir(exist_ok=True)
        (work / "flows" / "bench.yaml").write_text(FLOW)
        command = [python, "-m", "engine.cli", "run", str(work / "flows"), "--host", "127.0.0.1", "--port",
                   str(port), "--management-port", str(free_port()), "--log-level", "warning"]
    else:
        command = [python, str(ROOT / "benchmarks" / "sql_floor_app.py"), str(port)]
    process = subprocess.Popen(["taskset", "-c", "0", *command], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=open(work / f"{kind}.log", "ab"))  # noqa: SIM115
    wait_up(f"http://127.0.0.1:{port}/items/SKU-1")
    return process


def measure(process: subprocess.Popen[bytes], port: int, seconds: float, lua: Path) -> tuple[float, float]:
    before = cpu_seconds(process.pid)
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c50", f"-d{seconds:g}s", "-s", str(lua),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
    used = cpu_seconds(process.pid) - before
    requests = int(next(line for line in out.splitlines() if "requests in" in line).split()[0])
    if "Non-2xx" in out:
        raise SystemExit(f"errors in the cell:\n{out}")
    return requests / seconds, used * 1e6 / requests


def postgres_url(root: Path) -> tuple[str, subprocess.Popen[bytes] | None, object]:
    from tests.support.postgres import PostgresServer

    server = PostgresServer()
    server.__enter__()
    # move the server to CPU 1 with wrk, away from the servers being measured
    assert server.process is not None
    subprocess.run(["taskset", "-a", "-p", "-c", "1", str(server.process.pid)], capture_output=True, check=False)
    return server.url, None, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--drivers", default="asyncpg", help="PostgreSQL drivers: asyncpg, psycopg")
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="sql-bench-"))
    lua = work / "keys.lua"
    lua.write_text(LUA)
    cells: list[tuple[str, str]] = []
    servers: list[object] = []
    for database in args.databases.split(","):
        if database == "sqlite":
            cells.append(("sqlite", f"sqlite+aiosqlite:///{work / 'bench.db'}"))
        else:
            url, _, server = postgres_url(work)
            servers.append(server)
            for driver in args.drivers.split(","):
                cells.append((f"postgresql+{driver}", url.replace("postgresql://", f"postgresql+{driver}://")))
    print("| database | engine req/s | floor req/s | ratio | engine CPU µs | floor CPU µs | rounds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    try:
        for name, url in cells:
            seed(url)
            rates: dict[str, list[float]] = {"engine": [], "floor": []}
            cpus: dict[str, list[float]] = {"engine": [], "floor": []}
            ports = {"engine": free_port(), "floor": free_port()}
            processes = {kind: start(kind, url, ports[kind], work) for kind in ("engine", "floor")}
            try:
                for kind in ("engine", "floor"):
                    measure(processes[kind], ports[kind], 1, lua)  # warm-up, unmeasured
                for round_ in range(args.rounds):
                    order = ("engine", "floor") if round_ % 2 == 0 else ("floor", "engine")
                    for kind in order:
                        rate, cpu = measure(processes[kind], ports[kind], args.seconds, lua)
                        rates[kind].append(rate)
                        cpus[kind].append(cpu)
            finally:
                for process in processes.values():
                    process.send_signal(signal.SIGTERM)
                    process.wait(10)
            engine, floor = statistics.median(rates["engine"]), statistics.median(rates["floor"])
            print(f"| {name} | {engine:,.0f} | {floor:,.0f} | {engine / floor:.2f} | "
                  f"{statistics.median(cpus['engine']):.0f} | {statistics.median(cpus['floor']):.0f} | "
                  f"{args.rounds} |", flush=True)
    finally:
        for server in servers:
            server.__exit__(None, None, None)  # type: ignore[attr-defined]
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
