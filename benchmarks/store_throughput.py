"""Messages per second through the message store: accept (HTTP 202 after the commit), then forward.

    .venv/bin/python benchmarks/store_throughput.py [--messages 20000] [--connections 32] [--postgres]

One engine (one worker) serves a store flow; its processor is paused while wrk posts for
``--seconds`` (the accept phase: each 202 is a committed row), then resumed against a loopback
echo backend (the forward phase: until the store is empty).  Reported: accepted/s, forwarded/s,
and the engine's CPU per message from /proc (user+system of its process group).  With
``--postgres`` the store is a PostgreSQL made for the run (tests/support/postgres.py).

The machine is shared: figures are noisy; compare runs made back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.backends import BackendServer  # noqa: E402
from tests.support.engine import run_engine, write_flows  # noqa: E402

FLOWS = """
endpoints:
  backend:
    http: {url: "${env.BACKEND_URL}", timeout: {connect: 1s, read: 5s}}
flows:
  accept:
    source: {http: {method: POST, path: /messages}}
    steps:
      - store: {queue: bench}
  forward:
    source: {store: {queue: bench, concurrency: 32, poll: 100ms}}
    steps:
      - call: {endpoint: backend, method: POST, path: /in, headers: {Idempotency-Key: "${vars.message_id}"},
               expect_status: [2xx]}
"""

LUA = 'wrk.method = "POST"\nwrk.body = \'{"order": 1001, "items": [{"sku": "A-1", "qty": 2}]}\'\n' \
      'wrk.headers["Content-Type"] = "application/json"\n'


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stored(management: str) -> int:
    counts = httpx.get(f"{management}/stores", timeout=10).json()["stores"]
    return int(counts.get("bench", {}).get("stored", 0))


def run(env: dict[str, str], seconds: float, connections: int, label: str) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="interlace-bench-store-"))
    try:
        with BackendServer() as backend:
            folder = write_flows(work / "flows", FLOWS)
            (work / "post.lua").write_text(LUA)
            with run_engine(folder, env={**env, "BACKEND_URL": backend.url,
                                         "INTERLACE_DATA_DIR": str(work / "data")}) as engine:
                pid = engine.process.pid
                httpx.post(f"{engine.management_url}/sources/forward/pause")
                cpu0 = cpu_seconds(pid)
                started = time.monotonic()
                out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{int(seconds)}s", "-s",
                                      str(work / "post.lua"), f"{engine.url}/messages"],
                                     capture_output=True, text=True, check=False).stdout
                accept_time = time.monotonic() - started
                accept_cpu = cpu_seconds(pid) - cpu0
                accepted = stored(engine.management_url)
                non_2xx = next((line for line in out.splitlines() if "Non-2xx" in line), "")
                cpu1 = cpu_seconds(pid)
                started = time.monotonic()
                httpx.post(f"{engine.management_url}/sources/forward/resume")
                while stored(engine.management_url) > 0:
                    time.sleep(0.2)
                forward_time = time.monotonic() - started
                forward_cpu = cpu_seconds(pid) - cpu1
            delivered = len({r.headers.get("idempotency-key") for r in backend.requests})
        return {"store": label, "accepted": accepted, "accept_per_s": round(accepted / accept_time),
                "accept_cpu_us_per_msg": round(accept_cpu / max(accepted, 1) * 1e6),
                "delivered": delivered, "forward_per_s": round(delivered / forward_time),
                "forward_cpu_us_per_msg": round(forward_cpu / max(delivered, 1) * 1e6),
                "wrk_non_2xx": non_2xx.strip()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--postgres", action="store_true", help="also measure with a PostgreSQL store")
    args = parser.parse_args()
    results = [run({}, args.seconds, args.connections, "sqlite")]
    if args.postgres:
        from tests.support.postgres import postgres_server

        with postgres_server() as url:
            results.append(run({"INTERLACE_STORE_URL": url}, args.seconds, args.connections, "postgresql"))
    for result in results:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
