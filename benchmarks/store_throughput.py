"""Messages per second through the message store: accept (HTTP 202 after the commit), then forward.

    .venv/bin/python benchmarks/store_throughput.py [--seconds 10] [--connections 32] [--postgres]

One engine (one worker) pinned to ONE core (``taskset -c 0``; wrk and the echo backend on the
other core) serves a store flow.  Its processor is paused while wrk posts for ``--seconds`` (the
accept phase: each 202 is a committed row), then resumed against a loopback echo backend (the
forward phase: until the store is empty).  Printed per store: the accept rate on the wall clock
(the goal: >= 2,000 msg/s on SQLite on one core), the engine's CPU per accepted message (user +
system from /proc) and the rate that CPU cost allows one core, the same two for forwarding, and
whether the goal is met.  With ``--postgres`` the store is a PostgreSQL made for the run
(tests/support/postgres.py); the PostgreSQL server itself is not pinned.

The echo backend is the mediation benchmark's ``echo_backend.js`` when node is installed (a
Python stand-in otherwise: it limits the forward rate).  The machine may be shared: figures are
noisy; compare runs made back to back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.backends import BackendServer  # noqa: E402
from tests.support.engine import run_engine, write_flows  # noqa: E402
from tests.support.services import free_port  # noqa: E402
from tests.support.store_flows import store_flows  # noqa: E402

ECHO_BACKEND = Path(os.environ.get("BENCH_DIR", "/work/shared/bench")) / "lib" / "echo_backend.js"
GOAL = 2000  # accepted msg/s on SQLite on one core (issue 14)

FLOWS = store_flows(queue="bench", path="/messages", forward_to="/in", processor="concurrency: 32, poll: 100ms")

LUA = 'wrk.method = "POST"\nwrk.body = \'{"order": 1001, "items": [{"sku": "A-1", "qty": 2}]}\'\n' \
      'wrk.headers["Content-Type"] = "application/json"\n'


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stored(management: str) -> int:
    counts = httpx.get(f"{management}/stores", timeout=10).json()["stores"]
    return int(counts.get("bench", {}).get("stored", 0))


@contextlib.contextmanager
def echo_backend(cpu: str) -> Iterator[tuple[str, Any]]:
    """(url, how to count what arrived): node's echo on ``cpu``, else the tests' Python backend."""
    node = shutil.which("node")
    if node and ECHO_BACKEND.exists():
        port = free_port()
        process = subprocess.Popen(["taskset", "-c", cpu, node, str(ECHO_BACKEND)], env={**os.environ,
                                   "PORT": str(port)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(f"{url}/__stats", timeout=1)
                    break
                time.sleep(0.05)
            yield url, lambda: int(httpx.get(f"{url}/__stats", timeout=10).json().get("/in", 0))
        finally:
            process.kill()
            process.wait(10)
        return
    with BackendServer() as backend:
        yield backend.url, lambda: len({r.headers.get("idempotency-key") for r in backend.requests})


def run(env: dict[str, str], seconds: float, connections: int, label: str, engine_cpu: str,
        load_cpu: str) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="interlace-bench-store-"))
    engine_command = ["taskset", "-c", engine_cpu, sys.executable, "-m", "engine.cli"]
    try:
        with echo_backend(load_cpu) as (backend_url, delivered_count):
            folder = write_flows(work / "flows", FLOWS)
            (work / "post.lua").write_text(LUA)
            with run_engine(folder, env={**env, "BACKEND_URL": backend_url, "INTERLACE_DATA_DIR": str(work / "data")},
                            command=engine_command) as engine:
                pid = engine.process.pid  # taskset execs the engine: the same process
                httpx.post(f"{engine.management_url}/sources/forward/pause")
                cpu0 = cpu_seconds(pid)
                started = time.monotonic()
                out = subprocess.run(["taskset", "-c", load_cpu, "wrk", "-t", "2", "-c", str(connections), "-d",
                                      f"{int(seconds)}s", "-s", str(work / "post.lua"), f"{engine.url}/messages"],
                                     capture_output=True, text=True, check=False).stdout
                accept_time = time.monotonic() - started
                accept_cpu = cpu_seconds(pid) - cpu0
                accepted = stored(engine.management_url)
                non_2xx = next((line for line in out.splitlines() if "Non-2xx" in line), "")
                cpu1 = cpu_seconds(pid)
                started = time.monotonic()
                httpx.post(f"{engine.management_url}/sources/forward/resume")
                while stored(engine.management_url) > 0:
                    time.sleep(0.05)
                forward_time = time.monotonic() - started
                forward_cpu = cpu_seconds(pid) - cpu1
                delivered = delivered_count()
        accept_us = accept_cpu / max(accepted, 1) * 1e6
        forward_us = forward_cpu / max(delivered, 1) * 1e6
        return {"store": label, "accepted": accepted, "accept_per_s": round(accepted / accept_time),
                "accept_cpu_us_per_msg": round(accept_us), "accept_per_s_one_core_by_cpu": round(1e6 / accept_us),
                "delivered": delivered, "forward_per_s": round(delivered / forward_time),
                "forward_cpu_us_per_msg": round(forward_us),
                "forward_per_s_one_core_by_cpu": round(1e6 / forward_us), "wrk_non_2xx": non_2xx.strip()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--postgres", action="store_true", help="also measure with a PostgreSQL store")
    parser.add_argument("--engine-cpu", default="0", help="the one core the engine runs on (default 0)")
    parser.add_argument("--load-cpu", default="1", help="where wrk and the echo backend run (default 1)")
    args = parser.parse_args()
    if shutil.which("taskset") is None or shutil.which("wrk") is None:
        print("store_throughput: needs taskset and wrk (apt-get install util-linux wrk)", file=sys.stderr)
        return 2
    results = [run({}, args.seconds, args.connections, "sqlite", args.engine_cpu, args.load_cpu)]
    if args.postgres:
        from tests.support.postgres import postgres_server

        with postgres_server() as url:
            results.append(run({"INTERLACE_STORE_URL": url}, args.seconds, args.connections, "postgresql",
                               args.engine_cpu, args.load_cpu))
    print(f"engine pinned to CPU {args.engine_cpu}; wrk ({args.connections} connections) and the backend on "
          f"CPU {args.load_cpu}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'store':<11}{'accepted':>9}{'accept/s':>10}{'µs CPU/msg':>12}{'1 core by CPU':>15}"
          f"{'forward/s':>11}{'µs CPU/msg':>12}")
    for r in results:
        print(f"{r['store']:<11}{r['accepted']:>9}{r['accept_per_s']:>10}{r['accept_cpu_us_per_msg']:>12}"
              f"{r['accept_per_s_one_core_by_cpu']:>15}{r['forward_per_s']:>11}{r['forward_cpu_us_per_msg']:>12}")
    sqlite = results[0]
    verdict = "met" if int(str(sqlite["accept_per_s"])) >= GOAL else "NOT met"
    print(f"goal: SQLite accepts >= {GOAL} msg/s on one core: {verdict} ({sqlite['accept_per_s']} msg/s wall)")
    for result in results:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
