"""What benchmarks/hotpath.py, benchmarks/inprocess.py and benchmarks/patterns/inprocess.py share:
the cells of the peer benchmark they drive, where that benchmark lives, its 1 KiB bodies, and one
request driven through an ASGI app with no server.

Both scripts run as ``python benchmarks/NAME.py``, so this module is found next to them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# cell -> (path on the engine, body kind, Content-Type), as the peer benchmark's scenarios
CELLS: dict[str, tuple[str, str, str]] = {
    "direct-json": ("/direct", "json", "application/json"),
    "direct-xml": ("/direct", "xml", "text/xml; charset=utf-8"),
    "cbr-json": ("/cbr-json", "json", "application/json"),
    "cbr-xml": ("/cbr-xml", "xml", "text/xml; charset=utf-8"),
    "hbr": ("/hbr", "xml", "text/xml; charset=utf-8"),
}


def bench_dir() -> Path:
    """The peer benchmark's folder: $BENCH_DIR, else ../shared/bench beside the checkout (or a
    level higher, from a worktree)."""
    given = os.environ.get("BENCH_DIR")
    candidates = [Path(given)] if given else [ROOT.parent / "shared" / "bench", ROOT.parent.parent / "shared" / "bench"]
    for candidate in candidates:
        if (candidate / "lib" / "payloads.py").is_file():
            return candidate.resolve()
    raise SystemExit(f"the peer benchmark is not at {' or '.join(map(str, candidates))}; set BENCH_DIR")


def bodies(bench: Path, size: int = 1024) -> dict[str, bytes]:
    """The benchmark's own request bodies of ``size`` bytes, by kind (json, xml)."""
    if str(bench / "lib") not in sys.path:
        sys.path.insert(0, str(bench / "lib"))
    import payloads

    return {"json": payloads.json_body(size), "xml": payloads.xml_body(size)}


def callgrind_totals(out: Path, per: float) -> dict[str, float]:
    """Instructions in each dump callgrind wrote beside ``out`` (``out.1``, ``out.2``, ...: one per
    toggled window, keyed by its trigger's last word, as CALLGRIND_DUMP_STATS_AT names it),
    divided by ``per`` (the requests or tokens the window ran)."""
    totals: dict[str, float] = {}
    for dump in out.parent.glob(f"{out.name}.*"):
        trigger = ""
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("desc: Trigger:"):
                trigger = line.split()[-1]
            elif line.startswith("totals:"):
                totals[trigger] = float(line.split()[1]) / per
    return totals


def callgrind_run_total(script: str, args: list[str], out: Path) -> float:
    """Run ``script`` (a Python file) under callgrind with ``args``: the instructions of the whole run
    (the total of the one dump ``out``)."""
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, script,
                    *args], check=True, capture_output=True)
    for line in out.read_text().splitlines():
        if line.startswith("totals:") or line.startswith("summary:"):
            return float(line.split()[1])
    raise SystemExit(f"no totals in {out}")


def check_cells(text: str) -> list[str]:
    """The cells of a ``--cells`` argument, each one known."""
    cells = text.split(",")
    for cell in cells:
        if cell not in CELLS:
            raise SystemExit(f"unknown cell {cell!r}; cells: {', '.join(CELLS)}")
    return cells


def start_backend(bench: Path, port: int) -> subprocess.Popen[bytes]:
    """The benchmark's echo backend on ``port``, on CPU 1 (the engines run on CPU 0), in its own
    process group."""
    return subprocess.Popen(["taskset", "-c", "1", "node", str(bench / "lib" / "echo_backend.js")],
                            env={**os.environ, "PORT": str(port)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def wait_answering(name: str, proc: subprocess.Popen[bytes] | None, port: int, body: bytes,
                   deadline_s: float = 60, poll_s: float = 0.1, timeout_s: float = 2) -> None:
    """Until the server on ``port`` answers a POST /direct with 200 (or exits, or the deadline passes)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc is not None
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}; see its log")
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/direct", data=body,
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(poll_s)
    raise SystemExit(f"{name} did not answer /direct within {deadline_s:g} s")


def stop_groups(procs: list[subprocess.Popen[bytes]], wait_s: float) -> None:
    """TERM every started server's process group, then KILL those not gone within ``wait_s``."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


class Connection:
    """What the engine's HTTP protocol puts in ``scope["extensions"]``: the request's cycle."""

    def __init__(self) -> None:
        self.response_started = False
        self.response_complete = False
        self.disconnected = False


async def asgi_request(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """One request through ``app`` as the engine's server would hand it over; returns the status."""
    connection = Connection()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8290"), *headers, (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8290),
             "extensions": {"interlace.client": connection}}
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            connection.response_started = True
            status = message["status"]
        elif not message.get("more_body"):
            connection.response_complete = True

    await app(scope, receive, send)
    return status


def generate_routes(target: Path) -> None:
    """flows/bench plus 200 generated flows (``gen_flows.py``), every other one's path templated
    (``/gen/{id}/N``, ``/{tenant}/gen/N``): the 206-route project of issue 10's 10 % goal."""
    shutil.copytree(ROOT / "flows" / "bench", target)
    for test in target.glob("*.test.yaml"):
        test.unlink()
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gen_flows.py"), str(target), "--count", "200",
                    "--per-file", "10", "--templated"], check=True, stdout=subprocess.DEVNULL)
