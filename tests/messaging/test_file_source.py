"""The file source: settled files only, done and failed folders, one run per file even with two
engines on one folder or after a restart."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.backends import BackendServer
from tests.support.engine import REPO, run_engine, wait_until_ready, write_flows


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


def test_orders_inbox_example(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(REPO / "flows" / "orders-inbox.yaml", flows)
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    env = {"INBOX_DIR": str(inbox), "OUTBOX_DIR": str(outbox), "INTERLACE_DATA_DIR": str(tmp_path / "data")}
    with run_engine(flows, env=env) as engine:
        drop(inbox, "week-48.csv", "order,sku,qty\n1001,A-1,2\n1002,\"B,2\",5\n")
        drop(inbox, "broken.csv", "order,sku,qty\n1003,C-3\n")
        _until(lambda: (outbox / "week-48.json").exists() and (inbox / "failed" / "broken.csv.error").exists())
        assert json.loads((outbox / "week-48.json").read_text()) == [
            {"order": "1001", "sku": "A-1", "qty": "2"}, {"order": "1002", "sku": "B,2", "qty": "5"}]
        _until(lambda: (inbox / "done" / "week-48.csv").exists())
        assert not (inbox / "week-48.csv").exists() and (inbox / "failed" / "broken.csv").exists()
        reason = (inbox / "failed" / "broken.csv.error").read_text()
        assert "line 2: 2 fields where the header has 3" in reason and "records-invalid" in reason
        assert not (outbox / "broken.json").exists()
        assert not [p for p in outbox.iterdir() if p.name.startswith(".")]  # no temp file left behind

        # a file still being written waits until it has settled
        growing = inbox / "slow.csv"
        growing.write_text("order,sku,qty\n")
        for n in range(4):
            time.sleep(0.4)
            with growing.open("a") as out:
                out.write(f"{n},S-{n},1\n")
            assert not (outbox / "slow.json").exists()
        _until(lambda: (outbox / "slow.json").exists())
        assert len(json.loads((outbox / "slow.json").read_text())) == 4
        sources = {s["flow"]: s for s in httpx.get(f"{engine.management_url}/sources").json()["sources"]}
        assert sources["orders-inbox"]["processed"] == 2 and sources["orders-inbox"]["failures"] == 1


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
        # both start at once (an engine's start is most of such a test's time)
        with run_engine(folder, env=env, wait_ready=False) as one, \
                run_engine(folder, env=env, log_dir=tmp_path, wait_ready=False) as two:
            wait_until_ready(one)
            wait_until_ready(two)
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
