"""The store processor as an operator sees it: a poison message, dead letters replayed and
discarded through the management API, a source paused and resumed, two replicas on one store."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.backends import BackendServer
from tests.support.engine import RunningEngine, run_engine, wait_for_workers, wait_until_ready, write_flows
from tests.support.store_flows import store_flows

FLOWS = store_flows(
    queue="jobs", path="/jobs", forward_to="${payload.path}",
    store="""idempotency_key: '${headers."idempotency-key"}'""",
    processor="concurrency: 4, poll: 100ms",
    redelivery="{max_attempts: 3, backoff: {initial: 20ms, max: 50ms}, dead_letter: {store: jobs.dead}}")


def _until(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningEngine, BackendServer]]:
    """One engine on FLOWS for the tests that need nothing else (its start is most of their time)."""
    tmp_path = tmp_path_factory.mktemp("served")
    with BackendServer() as backend:
        folder = write_flows(tmp_path / "flows", FLOWS)
        with run_engine(folder, env={"BACKEND_URL": backend.url, "INTERLACE_DATA_DIR": str(tmp_path / "data")}) \
                as engine:
            yield engine, backend


def _forward(engine: RunningEngine) -> dict[str, Any]:
    return {s["flow"]: s for s in httpx.get(f"{engine.management_url}/sources").json()["sources"]}["forward"]


def test_poison_message_is_dead_lettered_and_the_rest_flow_on(served: tuple[RunningEngine, BackendServer]) -> None:
    engine, backend = served
    backend.clear()
    before = _forward(engine)
    poison = httpx.post(f"{engine.url}/jobs", json={"path": "/status/500"}).json()["id"]
    ids = [httpx.post(f"{engine.url}/jobs", json={"path": f"/ok/{i}"}).json()["id"] for i in range(30)]
    _until(lambda: {r.headers.get("idempotency-key") for r in backend.requests} >= set(ids))
    management = engine.management_url
    _until(lambda: httpx.get(f"{management}/stores").json()["stores"].get("jobs.dead", {}).get("dead") == 1)
    poison_calls = [r for r in backend.requests if r.headers.get("idempotency-key") == poison]
    assert len(poison_calls) == 3  # max_attempts
    dead = httpx.get(f"{management}/stores/jobs.dead/dead").json()["messages"]
    assert [d["id"] for d in dead] == [poison]
    assert dead[0]["attempts"] == 3 and dead[0]["error"]["backend_status"] == 500
    assert dead[0]["error"]["code"] == "backend-status" and json.loads(dead[0]["body"]) == {"path": "/status/500"}

    forward = _forward(engine)
    assert forward["kind"] == "store" and forward["state"] == "running"
    assert forward["processed"] - before["processed"] == 30 and forward["failures"] - before["failures"] == 3
    assert forward["dead_letters"] - before["dead_letters"] == 1

    # replayed: tried three more times, dead again; then discarded
    replay = httpx.post(f"{management}/stores/jobs.dead/dead/replay", json={"ids": [poison]})
    assert replay.json() == {"store": "jobs.dead", "replayed": 1}
    _until(lambda: len([r for r in backend.requests if r.headers.get("idempotency-key") == poison]) == 6)
    _until(lambda: httpx.get(f"{management}/stores").json()["stores"].get("jobs.dead", {}).get("dead") == 1)
    assert httpx.post(f"{management}/stores/jobs.dead/dead/discard", json={"all": True}).json()["discarded"] == 1
    assert httpx.get(f"{management}/stores/jobs.dead/dead").json()["messages"] == []
    bad = httpx.post(f"{management}/stores/jobs.dead/dead/replay", json={"ids": []})
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"


def test_pause_resume_and_idempotent_accept(served: tuple[RunningEngine, BackendServer]) -> None:
    engine, backend = served
    management = engine.management_url
    assert httpx.post(f"{management}/sources/forward/pause").json() == {"flow": "forward", "state": "paused"}
    backend.clear()
    try:
        first = httpx.post(f"{engine.url}/jobs", json={"path": "/a"}, headers={"Idempotency-Key": "order-7"})
        again = httpx.post(f"{engine.url}/jobs", json={"path": "/a"}, headers={"Idempotency-Key": "order-7"})
        assert first.status_code == again.status_code == 202
        assert first.json() == again.json() and again.headers["idempotent-replay"] == "true"
        time.sleep(0.5)
        assert backend.requests == []  # paused: stored, not sent
        stored = httpx.get(f"{management}/stores/jobs/messages").json()["messages"]
        assert [m["id"] for m in stored] == [first.json()["id"]]
    finally:
        assert httpx.post(f"{management}/sources/forward/resume").json()["state"] == "running"
    _until(lambda: len(backend.requests) == 1)
    assert httpx.post(f"{management}/sources/nope/pause").status_code == 404


@pytest.mark.service("postgresql")
def test_two_replicas_on_postgres_send_each_message_once(tmp_path: Path, backend: BackendServer,
                                                         postgres_url: str) -> None:
    import sqlalchemy

    with sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql("CREATE DATABASE replicas")
    env = {"BACKEND_URL": backend.url, "INTERLACE_STORE_URL": postgres_url.rsplit("/", 1)[0] + "/replicas"}
    folder = write_flows(tmp_path / "flows", FLOWS)
    # both start at once (an engine's start is most of such a test's time)
    with run_engine(folder, env=env, wait_ready=False) as one, \
            run_engine(folder, env=env, log_dir=tmp_path, wait_ready=False) as two:
        wait_until_ready(one)
        wait_until_ready(two)
        ids = []
        with httpx.Client() as client:
            for i in range(200):
                engine = one if i % 2 else two
                ids.append(client.post(f"{engine.url}/jobs", json={"path": f"/ok/{i}"}).json()["id"])
        _until(lambda: {r.headers.get("idempotency-key") for r in backend.requests} >= set(ids), timeout=30)
        time.sleep(0.5)
        counts = Counter(r.headers.get("idempotency-key") for r in backend.requests)
        assert set(counts) == set(ids) and max(counts.values()) == 1
        processed = [sum(s["processed"] for s in httpx.get(f"{e.management_url}/sources").json()["sources"])
                     for e in (one, two)]
        assert sum(processed) == 200


SLOW_FLOWS = store_flows(queue="slow", path="/jobs", forward_to="/slow", timeout="{connect: 1s, read: 10s}",
                         processor="concurrency: 2, lease: 1s, poll: 50ms")


def test_a_lease_is_renewed_while_a_slow_flow_runs(tmp_path: Path, backend: BackendServer) -> None:
    """Two processors on one store, a 1 s lease and a backend that takes 2.5 s: without renewal the
    idle processor would take every message again once its lease ran out."""
    backend.set_behaviour(delay=2.5)
    folder = write_flows(tmp_path / "flows", SLOW_FLOWS)
    env = {"BACKEND_URL": backend.url, "INTERLACE_DATA_DIR": str(tmp_path / "data")}
    # both start at once (an engine's start is most of such a test's time)
    with run_engine(folder, env=env, wait_ready=False) as one, \
            run_engine(folder, env=env, log_dir=tmp_path, wait_ready=False) as two:
        wait_until_ready(one)
        wait_until_ready(two)
        ids = [httpx.post(f"{one.url}/jobs", json={"n": n}).json()["id"] for n in range(4)]
        _until(lambda: httpx.get(f"{one.management_url}/stores").json()["stores"].get("slow", {})
               .get("stored", 0) == 0, timeout=30)
        processed = [sum(s["processed"] for s in httpx.get(f"{e.management_url}/sources").json()["sources"])
                     for e in (one, two)]
    counts = Counter(r.headers.get("idempotency-key") for r in backend.requests)
    assert set(counts) == set(ids) and max(counts.values()) == 1, counts
    assert sum(processed) == 4 and min(processed) >= 1, processed  # both processors worked


def test_sources_and_pause_cover_every_worker(tmp_path: Path, backend: BackendServer) -> None:
    """With --workers 2 each worker runs the processor: a pause must reach both, and /sources must
    count what both did, whichever worker answers."""
    folder = write_flows(tmp_path / "flows", FLOWS)
    env = {"BACKEND_URL": backend.url, "INTERLACE_DATA_DIR": str(tmp_path / "data")}
    with run_engine(folder, "--workers", "2", env=env) as engine:
        wait_for_workers(engine, 2)  # ready means one worker is: the other may still be loading its flows
        management = engine.management_url
        paused = httpx.post(f"{management}/sources/forward/pause").json()
        assert paused["state"] == "paused" and [w["state"] for w in paused["workers"]] == ["paused", "paused"]
        for _ in range(4):  # whichever worker takes the connection answers for both
            [forward] = httpx.get(f"{management}/sources").json()["sources"]
            assert forward["state"] == "paused" and len(forward["workers"]) == 2
        ids = [httpx.post(f"{engine.url}/jobs", json={"path": f"/ok/{i}"}).json()["id"] for i in range(20)]
        time.sleep(0.5)
        assert backend.requests == []  # neither worker's processor sends while paused
        resumed = httpx.post(f"{management}/sources/forward/resume").json()
        assert resumed["state"] == "running" and len(resumed["workers"]) == 2
        _until(lambda: {r.headers.get("idempotency-key") for r in backend.requests} >= set(ids))
        _until(lambda: httpx.get(f"{management}/sources").json()["sources"][0]["processed"] == 20)
        for _ in range(4):
            [forward] = httpx.get(f"{management}/sources").json()["sources"]
            assert forward["processed"] == 20 == sum(w["processed"] for w in forward["workers"])
        missing = httpx.post(f"{management}/sources/nope/pause")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
