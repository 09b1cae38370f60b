"""Large bodies: a 100 MiB body through /direct streams; a body over the limit is refused early.

    .venv/bin/python benchmarks/streaming.py                 # 100 MiB, limit 256 MiB for the pass
    .venv/bin/python benchmarks/streaming.py --mib 200

Starts the benchmark's echo backend (node) and `interlace run flows/bench` on free loopback
ports, then, over raw sockets:

1. sends a 100 MiB body to /direct (with a Content-Length, then chunked) and reads the whole
   echo back, checking its length; the engine's peak RSS during the exchange is read from the
   kernel (VmHWM, reset first through /proc/PID/clear_refs) and compared with its RSS before;
2. restarts the engine with --max-body 1MiB and declares a 100 MiB Content-Length without
   sending a byte of body: the answer must be 413 anyway;
3. sends a chunked body to the same engine until it answers: 413 after about the limit.

Prints one line per measurement and exits non-zero if a goal is missed (growth >= 20 MiB,
no 413, or 413 only after most of the body).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(os.environ.get("BENCH_DIR", ROOT.parent / "shared" / "bench"))
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout}s")


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


class Sampler(threading.Thread):
    """RSS every 5 ms: the fallback where VmHWM cannot be reset."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
            time.sleep(0.005)


def start_engine(port: int, mport: int, backend: int, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BACKEND_URL": f"http://127.0.0.1:{backend}"}
    process = subprocess.Popen([str(ROOT / ".venv" / "bin" / "interlace"), "run", str(ROOT / "flows" / "bench"),
                                "--host", "127.0.0.1", "--port", str(port), "--management-port", str(mport),
                                "--log-level", "warning", *args],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port)
    return process


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], int]:
    """Status, headers, and the number of body bytes read (whole body, Content-Length or chunked)."""
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(1 << 16)
        if not got:
            raise ConnectionError("closed before the answer's head")
        data += got
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    if "content-length" in headers:
        want, got_bytes = int(headers["content-length"]), len(rest)
        while got_bytes < want:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got_bytes += len(chunk)
        return status, headers, got_bytes
    buffer, total = rest, 0  # chunked
    while True:
        while b"\r\n" not in buffer:
            buffer += sock.recv(1 << 20)
        size_line, _, buffer = buffer.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        while len(buffer) < size + 2:
            more = sock.recv(1 << 20)
            if not more:
                raise ConnectionError("closed inside a chunk")
            buffer += more
        buffer = buffer[size + 2:]
        total += size
        if size == 0:
            return status, headers, total


def pass_through(port: int, pid: int, size: int, chunked: bool) -> tuple[float, float, int]:
    """Send ``size`` bytes to /direct and read the echo; (RSS before MiB, peak growth MiB, seconds)."""
    block = bytes(range(256)) * 4096  # 1 MiB
    before = status_kib(pid, "VmRSS")
    exact = reset_peak(pid)
    sampler = Sampler(pid)
    sampler.start()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
        sock.sendall(f"POST /direct HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
                     f"{framing}\r\n\r\n".encode())
        errors: list[BaseException] = []

        def send() -> None:
            try:
                for _ in range(size // len(block)):
                    sock.sendall(b"%x\r\n" % len(block) + block + b"\r\n" if chunked else block)
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        status, _, got = read_answer(sock)
        sender.join()
    elapsed = time.monotonic() - started
    sampler.running = False
    sampler.join()
    peak = status_kib(pid, "VmHWM") if exact else sampler.peak
    if status != 200 or got != size or errors:
        raise SystemExit(f"pass-through failed: status {status}, {got} of {size} bytes back, {errors}")
    return before / 1024, (peak - before) / 1024, elapsed


def refused_by_length(port: int, declared: int) -> tuple[int, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(f"POST /direct HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {declared}\r\n\r\n".encode())
        status, _, _ = read_answer(sock)
        return status, time.monotonic() - started


def refused_chunked(port: int, total: int) -> tuple[int, int]:
    block = b"%x\r\n" % (64 * 1024) + b" " * (64 * 1024) + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /direct HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            while sent < total:
                sock.setblocking(False)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
                sock.sendall(block)
                sent += 64 * 1024
        except OSError:
            pass
        status, _, _ = read_answer(sock)
        return status, sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100, help="body size for the pass-through (default 100)")
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None:
        raise SystemExit("needs node for the benchmark's echo backend")
    size = args.mib * MIB
    backend_port, port, mport = free_port(), free_port(), free_port()
    backend = subprocess.Popen([node, str(BENCH_DIR / "lib" / "echo_backend.js")],
                               env={**os.environ, "PORT": str(backend_port)}, stdout=subprocess.DEVNULL,
                               start_new_session=True)
    failed = False
    try:
        wait_port(backend_port)
        engine = start_engine(port, mport, backend_port, "--max-body", f"{2 * args.mib + 16}MiB")
        try:
            pass_through(port, engine.pid, MIB, chunked=False)  # warm the pool and the code paths
            for chunked in (False, True):
                rss, growth, seconds = pass_through(port, engine.pid, size, chunked)
                framing = "chunked" if chunked else "Content-Length"
                ok = growth < 20
                failed |= not ok
                print(f"{args.mib} MiB through /direct ({framing}): RSS before {rss:.1f} MiB, peak growth "
                      f"{growth:.1f} MiB (goal < 20 MiB: {'met' if ok else 'MISSED'}), {seconds:.2f} s, "
                      f"{args.mib / seconds:.0f} MiB/s")
        finally:
            os.killpg(engine.pid, 15)
            engine.wait(10)
        engine = start_engine(port, mport, backend_port, "--max-body", "1MiB")
        try:
            pass_through(port, engine.pid, MIB, chunked=False)  # the engine has finished starting
            status, seconds = refused_by_length(port, 100 * MIB)
            failed |= status != 413
            print(f"Content-Length 100 MiB over a 1 MiB limit, no body byte sent: {status} "
                  f"after {seconds * 1000:.1f} ms")
            rss = status_kib(engine.pid, "VmRSS") / 1024
            status, sent = refused_chunked(port, 64 * MIB)
            growth = status_kib(engine.pid, "VmRSS") / 1024 - rss
            failed |= status != 413 or sent >= 16 * MIB
            print(f"chunked body over a 1 MiB limit: {status} after {sent / MIB:.1f} MiB sent of 64 MiB, "
                  f"RSS growth {growth:.1f} MiB")
        finally:
            os.killpg(engine.pid, 15)
            engine.wait(10)
    finally:
        os.killpg(backend.pid, 15)
        backend.wait(10)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
