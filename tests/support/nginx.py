"""A real nginx on 127.0.0.1 for tests: Debian's nginx terminating TLS (with client certificates)
in front of an engine, as a gateway does, from a configuration written into a temp folder."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import free_port, require_command


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def nginx(folder: Path, server_block: str) -> Iterator[Nginx]:
    """nginx (one process, not a daemon) serving ``server_block``, whose ``{port}`` it listens on
    (127.0.0.1, with the block's TLS settings)."""
    binary = require_command("nginx", "nginx")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    temp = "\n".join(f"  {kind}_temp_path {folder}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                         "uwsgi", "scgi"))
    (folder / "nginx.conf").write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log off;
{temp}
  server {{
    listen 127.0.0.1:{port} ssl;
{server_block.replace("{port}", str(port))}
  }}
}}
""")
    process = subprocess.Popen([binary, "-p", str(folder), "-c", str(folder / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    server = Nginx(process, port, folder)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nginx did not start on port {port}:\n{server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        process.wait(10)
