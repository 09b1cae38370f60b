"""The crash test: messages accepted with 202 survive a kill -9 and all arrive, on SQLite and PostgreSQL.

Under load, a store flow accepts shipments while the shipping backend is down; the engine is
killed with SIGKILL in the middle of it; a new engine starts on the same store; the backend
comes up.  Every message that was answered 202 must arrive, and any message that arrives twice
(the processor had sent it when it died) carries the same Idempotency-Key both times.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support.backends import BackendServer
from tests.support.engine import run_engine, write_flows
from tests.support.store_flows import store_flows

FLOWS = store_flows(
    queue="shipments", path="/shipments", url="${env.SHIPPING_URL}", timeout="{connect: 500ms, read: 5s}",
    processor="concurrency: 16, lease: 1s, poll: 100ms",  # short lease: the restarted engine takes over soon
    redelivery="{max_attempts: 1000, backoff: {initial: 50ms, multiplier: 2, max: 400ms}, "
               "dead_letter: {store: shipments.dead}}")

SENDERS = 16


def _load(url: str, stop: threading.Event, accepted: dict[str, bytes], lock: threading.Lock,
          refused: list[int], number: int) -> None:
    """Post shipments until told to stop or the engine dies; remember what got a 202."""
    with httpx.Client(base_url=url, timeout=5) as client:
        n = 0
        while not stop.is_set():
            body = json.dumps({"sender": number, "n": n}).encode()
            n += 1
            try:
                reply = client.post("/shipments", content=body, headers={"content-type": "application/json"})
            except httpx.HTTPError:
                refused.append(number)
                return  # the engine is gone
            if reply.status_code == 202:
                with lock:
                    accepted[reply.json()["id"]] = body
            else:
                refused.append(reply.status_code)


def _crash_and_recover(tmp_path: Path, env: dict[str, str], target: int) -> dict[str, int]:
    folder = write_flows(tmp_path / "flows", FLOWS)
    backend = BackendServer()
    backend.start()
    backend.stop()  # the shipping system is down from the start
    env = {**env, "SHIPPING_URL": backend.url}
    accepted: dict[str, bytes] = {}
    lock = threading.Lock()
    refused: list[int] = []
    stop = threading.Event()
    phases: dict[str, float] = {}
    started = time.monotonic()
    with run_engine(folder, env=env) as engine:
        phases["ready"] = time.monotonic() - started
        senders = [threading.Thread(target=_load, args=(engine.url, stop, accepted, lock, refused, i))
                   for i in range(SENDERS)]
        for thread in senders:
            thread.start()
        deadline = time.monotonic() + 30
        while len(accepted) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        phases["accepted"] = time.monotonic() - started
        os.killpg(engine.process.pid, signal.SIGKILL)  # under load: requests are in flight
        engine.process.wait(10)
        stop.set()
        for thread in senders:
            thread.join(10)
    assert len(accepted) >= target // 2, f"only {len(accepted)} accepted before the kill"
    with run_engine(folder, env=env):
        phases["restarted"] = time.monotonic() - started
        backend.start()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            keys = {r.headers.get("idempotency-key") for r in list(backend.requests)}
            if set(accepted) <= keys:
                break
            time.sleep(0.1)
        phases["delivered"] = time.monotonic() - started
    backend.stop()
    arrivals = [r for r in backend.requests if r.path == "/shipments"]
    keys = Counter(r.headers.get("idempotency-key") for r in arrivals)
    missing = set(accepted) - set(keys)
    assert not missing, f"{len(missing)} of {len(accepted)} accepted messages never arrived"
    assert None not in keys, "a message arrived without its idempotency key"
    for request in arrivals:  # each arrival is the body that was accepted under its id
        key = request.headers["idempotency-key"]
        if key in accepted:
            assert request.body == accepted[key]
    duplicates = sum(count - 1 for count in keys.values())
    report = {"accepted": len(accepted), "delivered": len(set(keys) & set(accepted)),
              "arrivals": len(arrivals), "duplicates_same_key": duplicates,
              "unknown_keys": len(set(keys) - set(accepted)),
              "seconds": {k: round(v, 1) for k, v in phases.items()}}
    print("crash test:", report)
    (tmp_path / "report.json").write_text(json.dumps(report))
    return report


@pytest.mark.slow
def test_crash_sqlite(tmp_path: Path) -> None:
    report = _crash_and_recover(tmp_path, {"INTERLACE_DATA_DIR": str(tmp_path / "data")}, target=1500)
    assert report["delivered"] == report["accepted"]


@pytest.mark.slow
@pytest.mark.service("postgresql")
def test_crash_postgres(tmp_path: Path, postgres_url: str) -> None:
    import sqlalchemy

    database = f"crash_{os.getpid()}"
    with sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
    url = postgres_url.rsplit("/", 1)[0] + f"/{database}"
    report = _crash_and_recover(tmp_path, {"INTERLACE_STORE_URL": url}, target=1500)
    assert report["delivered"] == report["accepted"]
