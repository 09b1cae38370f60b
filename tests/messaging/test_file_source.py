"""The file source: settled files only, done and failed folders, one run per file even with two
engines on one folder or after a restart."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.backends import BackendServer
from tests.support.engine import run_engine, write_flows


def _until(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def drop(folder: Path, name: str, text: str) -> None:
    """Put a file in place atomically, as a well-behaved sender does."""
    temp = folder / f".{name}.part"
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, folder / name)


FLOWS = """
endpoints:
  backend:
    http: {url: "${env.BACKEND_URL}"}
flows:
  each-file:
    source: {file: {folder: "${env.INBOX_DIR}", glob: "*.txt", poll: 50ms, settle: 100ms, concurrency: 4}}
    steps:
      - call: {endpoint: backend, method: POST, path: "/files/${vars.file_name}"}
"""


def test_two_engines_on_one_folder_take_each_file_once(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    with BackendServer() as backend:
        folder = write_flows(tmp_path / "flows", FLOWS)
        env = {"BACKEND_URL": backend.url, "INBOX_DIR": str(inbox), "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        with run_engine(folder, env=env) as one, run_engine(folder, env=env, log_dir=tmp_path) as two:
            for n in range(60):
                drop(inbox, f"f{n}.txt", f"file {n}")
            _until(lambda: len(list((inbox / "done").glob("*.txt"))) == 60, timeout=30)
            processed = [sum(s["processed"] for s in httpx.get(f"{e.management_url}/sources").json()["sources"])
                         for e in (one, two)]
        seen = Counter(r.path for r in backend.requests)
        assert len(seen) == 60 and max(seen.values()) == 1
        assert sum(processed) == 60
        assert [r.body for r in backend.requests if r.path == "/files/f7.txt"] == [b"file 7"]


def test_a_restarted_engine_does_not_take_a_done_file_again(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    flows = FLOWS.replace("concurrency: 4}", "concurrency: 4, done: null}")  # files stay where they are
    with BackendServer() as backend:
        folder = write_flows(tmp_path / "flows", flows)
        env = {"BACKEND_URL": backend.url, "INBOX_DIR": str(inbox), "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        drop(inbox, "a.txt", "a")
        with run_engine(folder, env=env):
            _until(lambda: len(backend.requests) == 1)
        with run_engine(folder, env=env):
            drop(inbox, "b.txt", "b")
            _until(lambda: len(backend.requests) == 2)
            time.sleep(0.5)
        assert sorted(r.path for r in backend.requests) == ["/files/a.txt", "/files/b.txt"]
