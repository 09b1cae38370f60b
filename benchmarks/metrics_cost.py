"""What one request's metrics cost in-process, and the Prometheus client's two ways of counting
across workers side by side:

    .venv/bin/python benchmarks/metrics_cost.py
    .venv/bin/python benchmarks/metrics_cost.py --tree /tmp/old-tree --tree .   # two trees side by side

- ``memory``: the library's default values (a lock and a float), what each worker keeps; the
  worker taking the scrape merges its peers' samples (engine/metrics.py, engine/workers.py).
- ``multiprocess``: PROMETHEUS_MULTIPROC_DIR set, every observation written to a memory-mapped
  file that any process can read (and no exemplars).

Each runs in a fresh interpreter (the value class is chosen when the library is imported) and
makes what engine/telemetry.py records per request on the direct proxy: the request histogram,
two body-size histograms, the in-flight gauge up and down, one step histogram and one backend
histogram.  Then the engine's own calls for one direct-proxy request (children cached, as the
engine has them), with the request log off and on.  Prints µs per request (best of 5).  The
machine is shared: compare within one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = r"""
import time
from prometheus_client import CollectorRegistry, Gauge, Histogram
r = CollectorRegistry()
req = Histogram("req", "", ("flow", "route", "method", "status"), registry=r)
size_in = Histogram("inb", "", ("flow", "route"), registry=r)
size_out = Histogram("outb", "", ("flow", "route"), registry=r)
step = Histogram("step", "", ("flow", "step", "kind", "outcome"), registry=r)
backend = Histogram("be", "", ("endpoint", "url", "outcome"), registry=r)
flight = Gauge("flight", "", registry=r, **({"multiprocess_mode": "livesum"} if MULTI else {}))
step_ok = step.labels("direct", "direct/steps[0]", "call", "ok")
def one():
    flight.inc()
    step_ok.observe(0.0004)
    backend.labels("backend", "http://127.0.0.1:18100", "2xx").observe(0.0003)
    flight.dec()
    req.labels("direct", "/direct", "POST", "200").observe(0.0005)
    size_in.labels("direct", "/direct").observe(1024)
    size_out.labels("direct", "/direct").observe(1024)
best = float("inf")
for _ in range(5):
    started = time.perf_counter()
    for _ in range(20000):
        one()
    best = min(best, (time.perf_counter() - started) / 20000)
print(f"{best * 1e6:.2f}")
"""


def measure(multiprocess: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with tempfile.TemporaryDirectory() as folder:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = folder
        code = f"MULTI = {multiprocess}\n{PROBE}"
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()


# What the engine itself does per request of the direct proxy, through its own calls (children
# cached per label set): the front's begin/routed/end, the call step's timer and the backend
# attempt's observation; with the request log off (metrics alone) and on (a text line to a
# line-buffered file, as standard error is), one request per turn of the event loop.
ENGINE = r"""
import asyncio, logging, os, sys, time
sys.stderr = open(os.devnull, "w", buffering=1)
from engine.observability import setup_logging
from engine import instrument, metrics, telemetry
setup_logging("info", "text")
if not LOG:
    logging.getLogger("interlace.request").setLevel(logging.WARNING)
if hasattr(metrics, "tally"):
    ok = metrics.tally(metrics.STEP_SECONDS, "direct", "direct/steps[0]", "call", "ok")
else:  # an older tree
    ok = metrics.STEP_SECONDS.labels("direct", "direct/steps[0]", "call", "ok")
def one():
    seen = telemetry.begin("POST", "/direct", {}, "0123456789abcdef")
    telemetry.routed(seen, "direct", "/direct")
    ok.observe(0.0004)
    metrics.backend_call("backend", "http://127.0.0.1:18100", "2xx", 0.0003)
    telemetry.end(seen, 200, 1024, 1024)
async def loop(n):
    for _ in range(n):
        one()
        await asyncio.sleep(0)
async def empty(n):
    for _ in range(n):
        await asyncio.sleep(0)
async def main():
    await loop(2000)
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        await loop(20000)
        middle = time.process_time()
        await empty(20000)
        best = min(best, ((middle - started) - (time.process_time() - middle)) / 20000)
    print(f"{best * 1e6:.2f}")
asyncio.run(main())
"""


def engine_path(log: bool, tree: str) -> str:
    code = f"LOG = {log}\n{ENGINE}"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=tree).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[],
                        help="an engine checkout to measure (default this one; give it twice for before/after)")
    args = parser.parse_args()
    trees = args.tree or [str(Path(__file__).resolve().parent.parent)]
    print("| values | µs per request (7 observations, labels() each time) |")
    print("|---|---:|")
    for name, multi in (("memory (each worker; merged at scrape)", False), ("multiprocess (mmap files)", True)):
        print(f"| {name} | {measure(multi)} |")
    print()
    print("| the engine's own per-request telemetry (direct proxy), µs CPU per request | "
          + " | ".join(trees) + " |")
    print("|---|" + "---:|" * len(trees))
    print("| metrics: begin/routed/end, a step and a backend observation, request log off | "
          + " | ".join(engine_path(False, tree) for tree in trees) + " |")
    print("| the same with the request log line (text, to a line-buffered file) | "
          + " | ".join(engine_path(True, tree) for tree in trees) + " |")


if __name__ == "__main__":
    main()
