"""Start to first answer with many flows, and the idle memory of one worker.

    .venv/bin/python benchmarks/startup_memory.py              # 200 generated flows, 5 starts each
    .venv/bin/python benchmarks/startup_memory.py --flows 500 --runs 3

For each flow folder (the examples in flows/, the benchmark's flows/bench, and N flows from
benchmarks/gen_flows.py, one file each) it starts `interlace run DIR` (one worker) several
times and measures the wall time from spawning the process to the first 200 answer of a
route of that folder (polled every 5 ms), then the worker's RSS once idle (2 s after the first
answer, /proc/PID/status VmRSS).  Goals: idle RSS of one worker serving flows/ under 60 MiB;
start to first answer with 200 flows under 1 s.  Exits non-zero if one is missed.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from gen_flows import generate  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


def answered(port: int, path: str, expect: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == expect
    except OSError:
        return False
    finally:
        conn.close()


def start(folder: Path, path: str, expect: int, idle: float) -> tuple[float, float]:
    """(seconds from spawn to the first answer ``expect`` from GET ``path``, idle RSS in MiB)."""
    port, mport = free_port(), free_port()
    started = time.monotonic()
    process = subprocess.Popen([str(ROOT / ".venv" / "bin" / "interlace"), "run", str(folder), "--host", "127.0.0.1",
                                "--port", str(port), "--management-port", str(mport), "--log-level", "warning"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while not answered(port, path, expect):
            if process.poll() is not None:
                raise SystemExit(f"interlace run {folder} exited with {process.returncode}")
            if time.monotonic() - started > 30:
                raise SystemExit(f"no answer from {path} after 30 s")
            time.sleep(0.005)
        first = time.monotonic() - started
        time.sleep(idle)
        return first, rss_mib(process.pid)
    finally:
        os.killpg(process.pid, 15)
        process.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=200, help="generated flows (default 200)")
    parser.add_argument("--runs", type=int, default=5, help="starts per folder (default 5)")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds to wait before reading RSS")
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        generated = Path(tmp) / "flows"
        generate(generated, args.flows, 1)
        cases = [
            ("flows/ (examples)", ROOT / "flows", "/hello?name=bench", 200),
            # every route of flows/bench calls a backend: time the first answer, a 404
            ("flows/bench", ROOT / "flows" / "bench", "/nothing-here", 404),
            (f"{args.flows} generated flows", generated, "/gen/0/ping", 200),
        ]
        bytecode = "off (PYTHONDONTWRITEBYTECODE: every start compiles the sources)" \
            if os.environ.get("PYTHONDONTWRITEBYTECODE") else "cached (.pyc), as in an image"
        print(f"{args.runs} starts per folder, one worker; bytecode {bytecode}\n")
        print("| flows | start to first answer, s (median, min-max) | idle RSS, MiB |")
        print("|---|---:|---:|")
        for label, folder, path, expect in cases:
            times, rss = [], []
            for _ in range(args.runs):
                first, mib = start(folder, path, expect, args.idle)
                times.append(first)
                rss.append(mib)
            print(f"| {label} | {statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f}) "
                  f"| {statistics.median(rss):.1f} |")
            if label.startswith("flows/ ") and statistics.median(rss) >= 60:
                failed = True
            if "generated" in label and args.flows >= 200 and statistics.median(times) >= 1.0:
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
