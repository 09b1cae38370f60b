"""A real PostgreSQL for tests: a fresh cluster in a temp folder, on a free loopback port.

    with postgres_server() as url:     # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
        ...

``initdb`` and ``postgres`` refuse to run as root, so both run as the ``postgres`` user (the
Debian package creates it) when the tests run as root; its folder is a fresh one under the
system's temp dir (pytest's tmp_path is private to root) and is removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.services import free_port, require_command


def _as_postgres() -> tuple[list[str], Callable[[Path], None]]:
    if os.geteuid() != 0:
        return [], lambda _path: None
    user = pwd.getpwnam("postgres")

    def own(path: Path) -> None:
        os.chown(path, user.pw_uid, user.pw_gid)

    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", "postgres", "--"], own


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    initdb = require_command("initdb", "postgresql")
    postgres = require_command("postgres", "postgresql")
    prefix, own = _as_postgres()
    folder = Path(tempfile.mkdtemp(prefix="interlace-pg-"))
    os.chmod(folder, 0o755)
    data = folder / "pgdata"
    data.mkdir()
    own(data)
    sockets = folder / "pgsock"
    sockets.mkdir()
    own(sockets)
    subprocess.run([*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
                    "-E", "UTF8"], check=True, capture_output=True)
    port = free_port()
    log = (folder / "postgres.log").open("wb")
    process = subprocess.Popen(
        [*prefix, postgres, "-D", str(data), "-p", str(port), "-k", str(sockets), "-c", "listen_addresses=127.0.0.1",
         "-c", "max_connections=100", "-c", "shared_buffers=32MB"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    try:
        _wait_ready(port, process, folder / "postgres.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"postgres exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", connect_timeout=1):
                return
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise AssertionError(f"postgres not ready after {timeout}s:\n{log.read_text(errors='replace')}")
