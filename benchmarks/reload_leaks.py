"""File descriptors and RSS of `interlace run` across many reloads, each followed by a backend call.

    .venv/bin/python benchmarks/reload_leaks.py            # 1,000 reloads, figures at 10, 100, 1,000
    .venv/bin/python benchmarks/reload_leaks.py --reloads 3000

The engine serves one flow that calls a loopback echo backend through a pooled endpoint; each
round rewrites the flow file, reloads (POST /reload) and calls once, so every reload opens a new
pool and leaves an old one to close.  tests/security/test_reload_leaks.py asserts the same
(fds equal, RSS within 10 MiB between 10 and 1,000 reloads); this prints the figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.backends import BackendServer  # noqa: E402
from tests.support.engine import run_engine, write_flows  # noqa: E402

FLOWS = """
endpoints:
  echo: {{http: {{url: "{url}"}}}}
flows:
  call:
    source: {{http: {{method: GET, path: /call}}}}
    steps:
      - call: {{endpoint: echo, method: GET, path: /x}}
      - respond: {{text: "round {n}"}}
"""


def measure(pid: int) -> tuple[int, float]:
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return fds, rss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=1000)
    args = parser.parse_args()
    marks = sorted({10, 100, args.reloads} | {m for m in (1000, 3000) if m <= args.reloads})
    with tempfile.TemporaryDirectory() as tmp, BackendServer() as backend:
        folder = write_flows(Path(tmp) / "flows", FLOWS.format(url=backend.url, n=0))
        with run_engine(folder, log_dir=Path(tmp)) as engine, httpx.Client(timeout=20) as client:
            print("| reloads | fds | RSS, MiB | seconds |")
            print("|---:|---:|---:|---:|")
            start = time.monotonic()
            for n in range(1, args.reloads + 1):
                write_flows(folder, FLOWS.format(url=backend.url, n=n))
                assert client.post(f"{engine.management_url}/reload").status_code == 200
                assert client.get(f"{engine.url}/call").text == f"round {n}"
                if n in marks:
                    time.sleep(0.2)  # let the last old pool close
                    fds, rss = measure(engine.process.pid)
                    print(f"| {n} | {fds} | {rss:.1f} | {time.monotonic() - start:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
