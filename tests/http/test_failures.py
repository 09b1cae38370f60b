"""HTTP endpoints when backends fail: timeouts, retries, failover, round-robin, the circuit breaker."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import pytest

from engine.errors import BackendTimeout, BackendUnreachable, CircuitOpen
from tests.http.conftest import MakeEndpoint
from tests.support.backends import BackendServer, closed_port

pytestmark = pytest.mark.anyio


def dead_url() -> str:
    return f"http://127.0.0.1:{closed_port()}"


async def streamed(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# --- timeouts ---------------------------------------------------------------------------------


async def test_a_slow_backend_is_a_backend_timeout_within_the_read_limit(backend: BackendServer,
                                                                         make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(delay=3.0)
    endpoint = make_endpoint({"url": backend.url, "timeout": {"read": "300ms"}}, name="crm")
    started = time.monotonic()
    with pytest.raises(BackendTimeout) as caught:
        await endpoint.request("GET", "/slow")
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 2.0  # the backend would have answered after 3 s
    assert caught.value.status == 504 and caught.value.code == "backend-timeout"
    assert str(caught.value) == "endpoint 'crm' timed out"
    assert caught.value.internal is not None and backend.url in caught.value.internal  # for the log only
    assert len(backend.requests) == 1  # read timeouts are not retried by default


async def test_total_limit_bounds_a_backend_that_keeps_trickling(backend: BackendServer,
                                                                 make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(body_delay=3.0)  # headers at once, the (small) body 3 s later
    endpoint = make_endpoint({"url": backend.url, "timeout": {"read": "10s", "total": "400ms"}})
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        await endpoint.request("POST", "/", body=b"late")
    assert 0.35 <= time.monotonic() - started < 2.5  # the body would have come after 3 s


async def test_read_timeouts_are_retried_only_when_asked(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(delay=1.0)
    endpoint = make_endpoint({"url": backend.url, "timeout": {"read": "200ms"},
                              "retry": {"attempts": 3, "backoff": "10ms", "on_timeout": True}})
    with pytest.raises(BackendTimeout):
        await endpoint.request("GET", "/")
    assert len(backend.requests) == 3


# --- retries ----------------------------------------------------------------------------------


async def test_connection_failures_are_retried_until_one_succeeds(backend: BackendServer,
                                                                  make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(drop=2)  # twice: the connection closes without an answer
    endpoint = make_endpoint({"url": backend.url, "retry": {"attempts": 3, "backoff": "10ms"}})
    reply = await endpoint.request("POST", "/orders", body=b'{"id": 1}')
    assert reply.status == 200 and reply.body == b'{"id": 1}'
    assert [r.body for r in backend.requests] == [b'{"id": 1}'] * 3


async def test_without_retry_a_dropped_connection_is_unreachable(backend: BackendServer,
                                                                  make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(drop=1)
    with pytest.raises(BackendUnreachable):
        await make_endpoint({"url": backend.url}).request("POST", "/", body=b"once")
    assert len(backend.requests) == 1


async def test_an_idempotent_call_whose_connection_drops_is_resent_once_by_the_pool(
        backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    # RFC 9112 9.3.1: what makes a keep-alive connection closed by the backend while idle harmless
    endpoint = make_endpoint({"url": backend.url})
    backend.set_behaviour(drop=1)
    assert (await endpoint.request("PUT", "/doc", body=b"v2")).status == 200
    assert [r.body for r in backend.requests] == [b"v2", b"v2"]
    backend.set_behaviour(drop=2)
    with pytest.raises(BackendUnreachable):
        await endpoint.request("GET", "/")
    assert len(backend.requests) == 4


async def test_statuses_in_on_status_are_retried(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(statuses=[503, 502])
    endpoint = make_endpoint({"url": backend.url, "retry": {"attempts": 3, "backoff": "10ms",
                                                            "on_status": [502, 503]}})
    reply = await endpoint.request("GET", "/flaky")
    assert reply.status == 200
    assert len(backend.requests) == 3


async def test_when_retries_run_out_the_last_reply_is_returned(backend: BackendServer,
                                                               make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(statuses=[503, 503, 503, 503], headers={"X-Why": "maintenance"})
    endpoint = make_endpoint({"url": backend.url, "retry": {"attempts": 3, "backoff": "10ms", "on_status": [503]}})
    reply = await endpoint.request("POST", "/", body=b"payload")
    assert reply.status == 503 and reply.body == b"payload" and reply.header("x-why") == "maintenance"
    assert len(backend.requests) == 3


async def test_statuses_not_in_on_status_are_returned_at_once(backend: BackendServer,
                                                              make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url, "retry": {"attempts": 3, "backoff": "10ms", "on_status": [503]}})
    reply = await endpoint.request("GET", "/status/500")
    assert reply.status == 500
    assert len(backend.requests) == 1


async def test_backoff_grows_between_attempts(make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": dead_url(), "retry": {"attempts": 3, "backoff": "200ms", "max_backoff": "1s"}})
    started = time.monotonic()
    with pytest.raises(BackendUnreachable):
        await endpoint.request("GET", "/")
    # pauses of 100-200 ms, then 200-400 ms (half to all of 200 ms, doubled)
    assert 0.3 <= time.monotonic() - started < 1.5


async def test_retry_after_is_honoured_up_to_max_backoff(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(statuses=[503], headers={"Retry-After": "3"})
    endpoint = make_endpoint({"url": backend.url, "retry": {"attempts": 2, "backoff": "10ms", "max_backoff": "500ms",
                                                            "on_status": [503]}})
    started = time.monotonic()
    assert (await endpoint.request("GET", "/")).status == 200
    assert 0.45 <= time.monotonic() - started < 2.0  # waited for it (not 10 ms), capped (not 3 s)


async def test_a_streamed_body_is_never_sent_twice(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(drop=1)
    endpoint = make_endpoint({"url": backend.url, "retry": {"attempts": 3, "backoff": "10ms"}})
    with pytest.raises(BackendUnreachable):
        await endpoint.request("POST", "/", body=streamed(b"once ", b"only"))
    assert [r.body for r in backend.requests] == [b"once only"]


async def test_a_streamed_reply_status_is_not_retried_once_the_body_went(backend: BackendServer,
                                                                         make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(statuses=[503])
    endpoint = make_endpoint({"url": backend.url, "retry": {"attempts": 3, "backoff": "10ms", "on_status": [503]}})
    reply = await endpoint.request("POST", "/", body=streamed(b"a", b"b"))
    assert reply.status == 503 and reply.body == b"ab"
    assert len(backend.requests) == 1


# --- unreachable, failover, round-robin -------------------------------------------------------


async def test_a_backend_killed_mid_test_is_unreachable_and_back_when_restarted(
        backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url}, name="orders")
    assert (await endpoint.request("GET", "/1")).status == 200
    backend.stop()
    with pytest.raises(BackendUnreachable) as caught:
        await endpoint.request("GET", "/2")
    assert caught.value.status == 502 and str(caught.value) == "endpoint 'orders' is unreachable"
    backend.start()
    assert (await endpoint.request("GET", "/3")).status == 200
    assert [r.path for r in backend.requests] == ["/1", "/3"]


async def test_a_dead_url_is_unreachable_and_credentials_never_show(make_endpoint: MakeEndpoint) -> None:
    port = closed_port()
    endpoint = make_endpoint({"url": f"http://svc-user:s3cr3t-pw@127.0.0.1:{port}/api",
                              "retry": {"attempts": 2, "backoff": "10ms"}})
    with pytest.raises(BackendUnreachable) as caught:
        await endpoint.request("GET", "/")
    error = caught.value
    assert f"127.0.0.1:{port}/api" in (error.internal or "")
    for text in (str(error), error.internal or "", str(error.as_dict()), str(endpoint.health())):
        assert "s3cr3t-pw" not in text and "svc-user" not in text


async def test_credentials_in_the_url_are_sent_as_basic_auth(backend: BackendServer,
                                                             make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url.replace("http://", "http://svc:p%40ss@") + "/api"})
    await endpoint.request("GET", "/x")
    await endpoint.request("GET", "/y", headers=[("Authorization", "Bearer from-the-call")])
    first, second = backend.requests
    assert first.headers["authorization"] == "Basic c3ZjOnBAc3M=" and first.path == "/api/x"  # svc:p@ss
    assert [v for k, v in second.header_list if k.lower() == "authorization"] == ["Bearer from-the-call"]


async def test_failover_goes_to_the_second_url_when_the_first_is_dead(backend: BackendServer,
                                                                       make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"urls": [dead_url(), backend.url], "strategy": "failover"})
    for i in range(3):
        reply = await endpoint.request("POST", f"/ok/{i}", body=b"x")
        assert reply.status == 200 and reply.header("x-backend-path") == f"/ok/{i}"
    assert len(backend.requests) == 3


async def test_failover_prefers_the_first_url_while_it_is_up(backend: BackendServer, second_backend: BackendServer,
                                                             make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"urls": [backend.url, second_backend.url]})
    for _ in range(4):
        await endpoint.request("GET", "/")
    backend.stop()
    await endpoint.request("GET", "/")
    assert (len(backend.requests), len(second_backend.requests)) == (4, 1)


async def test_a_streamed_body_still_unsent_fails_over(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"urls": [dead_url(), backend.url]})
    reply = await endpoint.request("POST", "/", body=streamed(b"not ", b"lost"))
    assert reply.status == 200 and backend.requests[0].body == b"not lost"


async def test_every_url_dead_is_unreachable(make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"urls": [dead_url(), dead_url()], "retry": {"attempts": 2, "backoff": "10ms"}})
    with pytest.raises(BackendUnreachable):
        await endpoint.request("GET", "/")


async def test_round_robin_spreads_calls_over_the_urls(backend: BackendServer, second_backend: BackendServer,
                                                       make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"urls": [backend.url, second_backend.url], "strategy": "round-robin"})
    for _ in range(10):
        await endpoint.request("GET", "/")
    assert (len(backend.requests), len(second_backend.requests)) == (5, 5)
    second_backend.stop()
    for _ in range(4):
        assert (await endpoint.request("GET", "/")).status == 200  # a dead one is skipped
    assert len(backend.requests) == 9


# --- the circuit breaker ----------------------------------------------------------------------


async def test_the_breaker_opens_after_n_failures_and_then_fails_fast(backend: BackendServer,
                                                                      make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(status=503)
    endpoint = make_endpoint({"url": backend.url, "breaker": {"failures": 3, "reset": "30s"}}, name="stock")
    for _ in range(3):
        assert (await endpoint.request("GET", "/")).status == 503
    assert endpoint.health()["targets"][0]["breaker"] == "open"
    started = time.monotonic()
    for _ in range(5):
        with pytest.raises(CircuitOpen) as caught:
            await endpoint.request("GET", "/")
    assert time.monotonic() - started < 0.1
    assert caught.value.status == 503 and "'stock'" in str(caught.value) and "circuit breaker is open" in str(
        caught.value)
    assert len(backend.requests) == 3  # not touched while open


async def test_successes_reset_the_count_of_consecutive_failures(backend: BackendServer,
                                                                 make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url, "breaker": {"failures": 2}})
    for _ in range(3):
        backend.set_behaviour(statuses=[502])
        assert (await endpoint.request("GET", "/")).status == 502
        assert (await endpoint.request("GET", "/")).status == 200
    assert endpoint.health()["targets"][0] == {"target": backend.url, "breaker": "closed", "consecutive_failures": 0}


async def test_the_half_open_probe_closes_the_breaker_when_the_backend_is_back(
        backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url, "breaker": {"failures": 2, "reset": "300ms"}})
    backend.stop()
    for _ in range(2):
        with pytest.raises(BackendUnreachable):
            await endpoint.request("GET", "/")
    backend.start()
    with pytest.raises(CircuitOpen):
        await endpoint.request("GET", "/")
    assert backend.requests == []
    await anyio.sleep(0.35)
    assert endpoint.health()["targets"][0]["breaker"] == "half-open"
    assert (await endpoint.request("GET", "/probe")).status == 200
    assert endpoint.health()["targets"][0]["breaker"] == "closed"
    assert (await endpoint.request("GET", "/next")).status == 200
    assert [r.path for r in backend.requests] == ["/probe", "/next"]


async def test_a_failed_probe_opens_the_breaker_again(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    backend.set_behaviour(status=503)
    endpoint = make_endpoint({"url": backend.url, "breaker": {"failures": 1, "reset": "200ms"}})
    assert (await endpoint.request("GET", "/")).status == 503
    await anyio.sleep(0.25)
    assert (await endpoint.request("GET", "/probe")).status == 503
    with pytest.raises(CircuitOpen):
        await endpoint.request("GET", "/")
    assert len(backend.requests) == 2


async def test_only_one_probe_goes_while_half_open(backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url, "breaker": {"failures": 1, "reset": "100ms"}})
    backend.set_behaviour(statuses=[503])
    assert (await endpoint.request("GET", "/")).status == 503
    await anyio.sleep(0.15)
    backend.set_behaviour(delay=0.3)
    outcomes: list[str] = []

    async def call() -> None:
        try:
            outcomes.append(str((await endpoint.request("GET", "/")).status))
        except CircuitOpen:
            outcomes.append("open")

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(call)
    assert sorted(outcomes) == ["200", "open", "open", "open", "open"]


async def test_a_cancelled_probe_does_not_wedge_the_breaker(backend: BackendServer,
                                                            make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": backend.url, "breaker": {"failures": 1, "reset": "100ms"}})
    backend.set_behaviour(statuses=[503])
    await endpoint.request("GET", "/")
    await anyio.sleep(0.15)
    backend.set_behaviour(delay=2.0)
    with anyio.move_on_after(0.2):
        await endpoint.request("GET", "/cancelled-probe")
    backend.set_behaviour()
    assert (await endpoint.request("GET", "/real-probe")).status == 200
    assert endpoint.health()["targets"][0]["breaker"] == "closed"


async def test_with_several_urls_an_open_breaker_only_skips_its_url(
        backend: BackendServer, second_backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"urls": [backend.url, second_backend.url], "breaker": {"failures": 1, "reset": "30s"}})
    backend.set_behaviour(status=503)
    assert (await endpoint.request("GET", "/")).status == 503  # the first URL's breaker opens
    for _ in range(3):
        assert (await endpoint.request("GET", "/")).status == 200
    assert (len(backend.requests), len(second_backend.requests)) == (1, 3)
    assert [u["breaker"] for u in endpoint.health()["targets"]] == ["open", "closed"]


async def test_without_a_breaker_failures_never_short_circuit(make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": dead_url()})
    for _ in range(10):
        with pytest.raises(BackendUnreachable):
            await endpoint.request("GET", "/")
    assert endpoint.health()["targets"][0]["breaker"] == "off"
    assert endpoint.health()["targets"][0]["consecutive_failures"] == 10
