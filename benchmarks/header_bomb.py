"""Header bombs and silent connections against a running engine: RSS and open files.

    .venv/bin/python benchmarks/header_bomb.py                  # this checkout
    .venv/bin/python benchmarks/header_bomb.py --tree /tmp/old   # another checkout, same venv

Starts `interlace run` on the example flows (one worker), warms it with 20 requests, reads
its RSS, then opens 10 connections that each send a 50 MiB header that never ends (the
reproduction of issue 9, item 5), and reads RSS again; then opens 200 connections that send
nothing and counts the engine's open file descriptors after --first-byte-timeout (default 10 s)
plus a second.  Prints the figures; exits non-zero when RSS grew by 20 MiB or more.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.rawhttp import connect, header_bomb, rss_mib  # noqa: E402
from tests.support.services import free_port  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose engine to run (default: this one)")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--silent", type=int, default=200, help="connections that never send a byte")
    parser.add_argument("--silent-wait", type=float, default=11.0)
    args = parser.parse_args()
    port, management = free_port(), free_port()
    command = [sys.executable, "-m", "engine.cli", "run", str(args.tree / "flows"), "--port", str(port),
               "--management-port", str(management)]
    process = subprocess.Popen(command, cwd=args.tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        for _ in range(20):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=5).read()
        idle = rss_mib(process.pid)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.connections) as pool:
            sent = list(pool.map(lambda _: header_bomb(port, args.mib * 1024 * 1024), range(args.connections)))
        bombed = rss_mib(process.pid)
        print(f"idle RSS {idle:.1f} MiB; after {args.connections} x {args.mib} MiB header bombs {bombed:.1f} MiB "
              f"(+{bombed - idle:.1f}); bytes sent before the engine closed: max {max(sent):,}; "
              f"{time.monotonic() - started:.1f} s")
        fds = len(os.listdir(f"/proc/{process.pid}/fd"))
        socks = [connect(port) for _ in range(args.silent)]
        time.sleep(args.silent_wait)
        still = len(os.listdir(f"/proc/{process.pid}/fd"))
        for sock in socks:
            sock.close()
        print(f"open fds {fds}; with {args.silent} silent connections after {args.silent_wait:g} s: {still}")
        return 0 if bombed - idle < 20 else 1
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


if __name__ == "__main__":
    sys.exit(main())
