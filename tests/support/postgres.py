"""A real PostgreSQL for tests: a fresh cluster in a temp folder, on a free loopback port.

    with postgres_server() as url:     # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
        ...

``initdb`` and ``postgres`` refuse to run as root, so both run as the ``postgres`` user (the
Debian package creates it) when the tests run as root; its folder is a fresh one under the
system's temp dir (pytest's tmp_path is private to root) and is removed afterwards.

``PostgresServer`` is the same as an object that can be stopped and started again (a database
going away mid-flow), with ``psql()`` for checks:

    with PostgresServer() as pg:
        pg.url        # postgresql://postgres@127.0.0.1:PORT/postgres  (the engine's default driver)
        pg.stop(); pg.start()
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

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


BIN = Path("/usr/lib/postgresql/15/bin")


def _as_user(user: str) -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class PostgresServer:
    def __init__(self, user: str = "postgres") -> None:
        initdb = require_command("initdb", "postgresql")
        self.bin = BIN if (BIN / "postgres").exists() else Path(initdb).parent
        self.user = user if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="interlace-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def __enter__(self) -> PostgresServer:
        self.sockets.mkdir(parents=True)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                        "--no-sync", "-E", "UTF8", "--locale=C"], check=True, capture_output=True,
                       **_as_user(self.user))  # type: ignore[call-overload]
        self.start()
        return self

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115  # handed to the server process
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sockets),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=50"],
            stdout=log, stderr=log, **_as_user(self.user))  # type: ignore[call-overload]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True, check=False)
            if ready.returncode == 0:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not start: {(self.root / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # "fast" shutdown: SIGTERM's "smart" one waits for clients
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def psql(self, sql: str) -> str:
        return self.psql_in("postgres", sql)

    def psql_in(self, database: str, sql: str) -> str:
        result = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                                 "-d", database, "-At", "-c", sql], capture_output=True, text=True, check=True)
        return result.stdout.strip()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
