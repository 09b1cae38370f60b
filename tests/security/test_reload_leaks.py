"""Reloads give back what the flows they replace held: pools, sockets, memory.

Before: the replaced flows' connection pools stayed open 30 s after every reload (21 reloads:
fds 117 -> 1,167) and RSS grew 53 -> 122 MiB over 450 reloads.  Now a replaced pool closes as
soon as the last request that may use it has ended.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import rawhttp
from tests.support.backends import BackendServer
from tests.support.engine import run_engine, wait_for, write_flows

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


def flows(backend: BackendServer, text: str = "one") -> str:
    return f"""
    endpoints:
      echo: {{http: {{url: "{backend.url}", timeout: {{read: 10s}}}}}}
    flows:
      call:
        source: {{http: {{method: GET, path: /call}}}}
        steps:
          - call: {{endpoint: echo, method: GET, path: /x}}
          - respond: {{text: {text}}}
    """


def test_a_replaced_pool_closes_once_its_last_request_ends(tmp_path: Path, backend: BackendServer) -> None:
    folder = write_flows(tmp_path / "flows", flows(backend))
    with run_engine(folder) as engine, httpx.Client(timeout=20) as client:
        assert client.get(f"{engine.url}/call").text == "one"
        assert backend.open_connections == 1  # the pool keeps its connection alive
        write_flows(folder, flows(backend, "two"))
        assert client.post(f"{engine.management_url}/reload").status_code == 200
        # nothing was in flight: the old pool closes now, not after a grace period
        wait_for(lambda: backend.open_connections == 0, "the replaced pool kept its connection")
        assert client.get(f"{engine.url}/call").text == "two"
        assert backend.open_connections == 1

        backend.set_behaviour(delay=1.5)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(httpx.get, f"{engine.url}/call", timeout=20)
            backend.wait_for_requests(len(backend.requests) + 1)
            write_flows(folder, flows(backend, "three"))
            assert client.post(f"{engine.management_url}/reload").status_code == 200
            time.sleep(0.3)
            assert backend.open_connections == 1  # the request in flight still has its connection
            answer = slow.result()
        assert answer.status_code == 200 and answer.text == "two"  # it finished on the flows it began on
        wait_for(lambda: backend.open_connections == 0, "the pool outlived its last request")
        backend.set_behaviour()
        assert client.get(f"{engine.url}/call").text == "three"


@pytest.mark.slow
def test_a_thousand_reloads_leave_fds_and_memory_where_ten_did(tmp_path: Path, backend: BackendServer) -> None:
    folder = write_flows(tmp_path / "flows", flows(backend))
    with run_engine(folder) as engine, httpx.Client(timeout=20) as client:
        def reload_and_call(times: int) -> None:
            for i in range(times):
                write_flows(folder, flows(backend, f"n{i % 7}"))
                assert client.post(f"{engine.management_url}/reload").status_code == 200
                assert client.get(f"{engine.url}/call").status_code == 200

        reload_and_call(10)
        time.sleep(0.2)
        fds_at_10, rss_at_10 = rawhttp.fds(engine.process.pid), rawhttp.rss_mib(engine.process.pid)
        reload_and_call(990)
        time.sleep(0.2)
        fds_at_1000, rss_at_1000 = rawhttp.fds(engine.process.pid), rawhttp.rss_mib(engine.process.pid)
        print(f"after 10 reloads: {fds_at_10} fds, {rss_at_10:.1f} MiB; after 1,000: {fds_at_1000} fds, "
              f"{rss_at_1000:.1f} MiB")
        assert fds_at_1000 <= fds_at_10 + 2
        assert rss_at_1000 - rss_at_10 <= 10


def scheduled(backend: BackendServer, text: str) -> str:
    return f"""
    endpoints:
      echo: {{http: {{url: "{backend.url}", timeout: {{read: 10s}}}}}}
    flows:
      tick:
        source: {{schedule: {{every: 1s}}}}
        steps:
          - call: {{endpoint: echo, method: GET, path: /first/{text}}}
          - call: {{endpoint: echo, method: GET, path: /second/{text}}}
    """


def test_a_source_flow_running_across_a_reload_finishes_before_its_pool_closes(
        tmp_path: Path, backend: BackendServer) -> None:
    # Before: a reload cancelled a scheduled flow in the middle of its steps (its second call
    # never came), and source flows were not counted by the reload's in-flight tracking, so one
    # still running could use, and reopen, a pool already closed under it.
    backend.set_behaviour(delay=1.5)
    folder = write_flows(tmp_path / "flows", scheduled(backend, "one"))
    with run_engine(folder) as engine, httpx.Client(timeout=20) as client:
        first = backend.wait_for_requests(1, timeout=15)[0]
        assert first.path == "/first/one"
        write_flows(folder, scheduled(backend, "two"))
        assert client.post(f"{engine.management_url}/reload").status_code == 200
        # the firing that was running finishes on the flows it began with, on its own pool...
        wait_for(lambda: any(r.path == "/second/one" for r in backend.requests), "the old flow was cut", 10)
        second = next(r for r in backend.requests if r.path == "/second/one")
        assert second.connection == first.connection
        # ...the replaced flow fires no more, and its pool closes once that run has ended
        wait_for(lambda: any(r.path == "/second/two" for r in backend.requests), "the new flow never ran", 10)
        old = {r.connection for r in backend.requests if r.path.endswith("/one")}
        new = {r.connection for r in backend.requests if r.path.endswith("/two")}
        assert old.isdisjoint(new)
        wait_for(lambda: backend.open_connections <= len(new), "the old pool stayed open", 10)
        time.sleep(1.5)
        assert [r.path for r in backend.requests if r.path.endswith("/one")] == ["/first/one", "/second/one"]
        assert {r.connection for r in backend.requests if r.path.endswith("/one")} == old  # never reopened
    assert "still in flight" not in engine.log() and "Traceback" not in engine.log()
