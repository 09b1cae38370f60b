"""FTP, FTPS (vsftpd with a test certificate) and SFTP (OpenSSH with a test key) as polled sources
and as targets: write atomically, read, list, move, delete; and the same operations on a local folder."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.engine import facade_client, run_engine, write_flows
from tests.support.fileservers import FtpServer, SftpServer

pytestmark = pytest.mark.anyio

POLL = """
endpoints:
  remote:
    %(endpoint)s
flows:
  convert:
    source: {%(kind)s: {endpoint: remote, folder: in, glob: "*.csv", poll: 200ms, settle: 300ms}}
    steps:
      - records: {from: csv}
      - call: {endpoint: remote, operation: write, name: "out/${vars.file_stem}.json"}
"""

OPERATIONS = """
endpoints:
  remote:
    %(endpoint)s
flows:
  list:
    source: {http: {method: GET, path: /files}}
    steps:
      - call: {endpoint: remote, operation: list, folder: box, glob: "*.txt"}
  read:
    source: {http: {method: GET, path: "/files/{name}"}}
    steps:
      - call: {endpoint: remote, operation: read, folder: box, name: "${path.name}"}
  write:
    source: {http: {method: PUT, path: "/files/{name}"}}
    steps:
      - call: {endpoint: remote, operation: write, folder: box, name: "${path.name}", into: written}
      - respond: {status: 201, json: "${vars.written}"}
  move:
    source: {http: {method: POST, path: "/files/{name}/archive"}}
    steps:
      - call: {endpoint: remote, operation: move, folder: box, name: "${path.name}", to: box/archive}
      - respond: {status: 204}
  delete:
    source: {http: {method: DELETE, path: "/files/{name}"}}
    steps:
      - call: {endpoint: remote, operation: delete, folder: box, name: "${path.name}"}
      - respond: {status: 204}
"""


def _until(check: Callable[[], bool], timeout: float = 30, engine: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    log = f"; the engine's log:\n{engine.log()[-3000:]}" if engine is not None else ""
    raise AssertionError(f"condition not met in time{log}")


@pytest.fixture(scope="module")
def ftp() -> Iterator[FtpServer]:
    with FtpServer() as server:
        yield server


@pytest.fixture(scope="module")
def ftps() -> Iterator[FtpServer]:
    with FtpServer(tls=True) as server:
        yield server


@pytest.fixture(scope="module")
def sftp() -> Iterator[SftpServer]:
    with SftpServer() as server:
        yield server


def _ftp_endpoint(server: FtpServer) -> str:
    tls = f", tls: {server.tls}, ca_file: {server.ca_file}" if server.tls != "none" else ""
    return f"ftp: {{host: 127.0.0.1, port: {server.port}, folder: /inbox{tls}}}"


def _sftp_endpoint(server: SftpServer) -> str:
    return (f"sftp: {{host: 127.0.0.1, port: {server.port}, user: {server.user}, private_key: {server.client_key}, "
            f"known_hosts: {server.known_hosts}, folder: {server.root}}}")


def _poll_and_write(tmp_path: Path, kind: str, endpoint: str, local_root: Path) -> None:
    folder = write_flows(tmp_path / "flows", POLL % {"endpoint": endpoint, "kind": kind})
    inbox = local_root / "in"
    inbox.mkdir(exist_ok=True)
    inbox.chmod(0o777)  # the FTP server's own user moves the files out of it
    with run_engine(folder, env={"INTERLACE_DATA_DIR": str(tmp_path / "data")}) as engine:
        (inbox / ".a.csv.part").write_text("sku,qty\nA-1,2\nB-2,3\n")
        (inbox / ".a.csv.part").rename(inbox / "a.csv")
        (inbox / "bad.csv").write_text("sku,qty\nC-3\n")
        _until(lambda: (local_root / "out" / "a.json").exists() and (inbox / "failed" / "bad.csv.error").exists(),
               engine=engine)
        assert json.loads((local_root / "out" / "a.json").read_text()) == [{"sku": "A-1", "qty": "2"},
                                                                         {"sku": "B-2", "qty": "3"}]
        _until(lambda: (inbox / "done" / "a.csv").exists())
        assert "line 2: 1 fields where the header has 2" in (inbox / "failed" / "bad.csv.error").read_text()
        assert not [p for p in (local_root / "out").iterdir() if p.name.startswith(".")]
        sources = httpx.get(f"{engine.management_url}/sources").json()["sources"]
        assert sources[0]["kind"] == kind and sources[0]["processed"] == 1 and sources[0]["failures"] == 1


@pytest.mark.slow
def test_ftp_poll_and_write(tmp_path: Path, ftp: FtpServer) -> None:
    _poll_and_write(tmp_path, "ftp", _ftp_endpoint(ftp), ftp.root / "inbox")


@pytest.mark.slow
def test_ftps_poll_and_write(tmp_path: Path, ftps: FtpServer) -> None:
    _poll_and_write(tmp_path, "ftp", _ftp_endpoint(ftps), ftps.root / "inbox")


@pytest.mark.slow
def test_sftp_poll_and_write(tmp_path: Path, sftp: SftpServer) -> None:
    _poll_and_write(tmp_path, "sftp", _sftp_endpoint(sftp), sftp.root)


async def _operations(folder: Path, endpoint: str, files: Path) -> None:
    write_flows(folder, OPERATIONS % {"endpoint": endpoint})
    async with facade_client(folder) as client:
        written = await client.put("/files/a.txt", content=b"alpha", headers={"content-type": "text/plain"})
        assert written.status_code == 201 and written.json()["size"] == 5
        await client.put("/files/b.txt", content=b"beta")
        assert (files / "box" / "a.txt").read_bytes() == b"alpha"
        listed = (await client.get("/files")).json()
        assert [(f["name"], f["size"]) for f in listed] == [("a.txt", 5), ("b.txt", 4)]
        read = await client.get("/files/b.txt")
        assert read.status_code == 200 and read.content == b"beta"
        assert (await client.post("/files/a.txt/archive")).status_code == 204
        assert (files / "box" / "archive" / "a.txt").read_bytes() == b"alpha"
        assert (await client.delete("/files/b.txt")).status_code == 204
        assert not (files / "box" / "b.txt").exists()
        missing = await client.get("/files/b.txt")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        outside = await client.get("/files/..%2Fsecret")
        assert outside.status_code in (404, 502) and "secret" not in outside.text.split("detail")[0]


async def test_local_file_operations(tmp_path: Path) -> None:
    await _operations(tmp_path / "flows", f"file: {{folder: {tmp_path / 'files'}}}", tmp_path / "files")


async def test_sftp_operations(tmp_path: Path, sftp: SftpServer) -> None:
    await _operations(tmp_path / "flows", _sftp_endpoint(sftp), sftp.root)


async def test_ftps_operations(tmp_path: Path, ftps: FtpServer) -> None:
    await _operations(tmp_path / "flows", _ftp_endpoint(ftps), ftps.root / "inbox")


async def test_implicit_ftps_operations(tmp_path: Path) -> None:
    """vsftpd with implicit_ssl=YES on a free port: TLS from the first byte, no plain greeting."""
    with FtpServer(tls="implicit") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as plain:
            plain.settimeout(1)
            with contextlib.suppress(TimeoutError):
                assert not plain.recv(100).startswith(b"220")  # a plain client is greeted by nothing
        await _operations(tmp_path / "flows", _ftp_endpoint(server), server.root / "inbox")
