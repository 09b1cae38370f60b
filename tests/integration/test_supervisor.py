"""The supervisor of ``--workers N`` starts a worker again when it dies: after a backoff that
grows while it keeps dying, with a log line and ``interlace_worker_restarts_total``; a group
being stopped is not restarted, and a worker that cannot start stops the group."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx

from tests.support.engine import run_engine, write_flows

FLOWS = """
flows:
  ping:
    source: {http: {method: GET, path: /ping}}
    steps: [{respond: {text: pong}}]
"""


def worker_pids(management_url: str) -> dict[int, int]:
    """Worker place -> pid, from the management API (which asks every worker)."""
    answer = httpx.get(f"{management_url}/flows", timeout=10).json()
    # (a worker still starting answers without the group: not ready yet)
    return {w["worker"]: w["pid"] for w in answer.get("workers", []) if "pid" in w}


def wait_for(check: object, what: str, timeout: float = 20, log: object = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout} s" + (f"; the log:\n{log()[-3000:]}" if log else ""))  # type: ignore[operator]


def restarts(management_url: str) -> dict[str, float]:
    text = httpx.get(f"{management_url}/metrics", timeout=10).text
    return {m[1]: float(m[2]) for m in re.finditer(r'^interlace_worker_restarts_total\{worker="(\d+)"\} (\S+)$',
                                                     text, re.M)}


def test_a_killed_worker_is_started_again_with_backoff(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", FLOWS)
    with run_engine(folder, "--workers", "2") as engine:
        wait_for(lambda: len(worker_pids(engine.management_url)) == 2, "both workers answering")
        first = worker_pids(engine.management_url)
        assert restarts(engine.management_url) == {"0": 0.0, "1": 0.0}

        os.kill(first[1], signal.SIGKILL)
        wait_for(lambda: worker_pids(engine.management_url).get(1) not in (None, first[1]), "worker 1 back",
                 log=engine.log)
        second = worker_pids(engine.management_url)
        assert second[0] == first[0]  # the other one was left alone
        assert re.search(rf"worker 1 \(pid {first[1]}\) killed by SIGKILL; starting it again in 0\.5 s", engine.log())
        assert restarts(engine.management_url) == {"0": 0.0, "1": 1.0}
        with httpx.Client() as client:  # both serve
            assert all(client.get(f"{engine.url}/ping").text == "pong" for _ in range(10))

        # dying again soon after its start: the pause doubles
        os.kill(second[1], signal.SIGKILL)
        wait_for(lambda: worker_pids(engine.management_url).get(1) not in (None, first[1], second[1]),
                 "worker 1 back again", log=engine.log)
        assert re.search(rf"worker 1 \(pid {second[1]}\) killed by SIGKILL; starting it again in 1\.0 s", engine.log())
        assert restarts(engine.management_url) == {"0": 0.0, "1": 2.0}

        assert engine.terminate() == 0  # stopping: the workers' exits start nothing again
        assert engine.log().count("starting it again") == 2


def test_a_worker_that_cannot_start_stops_the_group(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", "flows: {broken: {source: {http: {path: /x}}, steps: [{nope: {}}]}}")
    with run_engine(folder, "--workers", "2", wait_ready=False) as engine:
        assert engine.process.wait(30) == 2  # as with one worker: invalid flows, nothing served
        assert "starting it again" not in engine.log()
