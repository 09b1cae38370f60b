"""The facade as `interlace run` serves it (the drain guard, the engine's HTTP protocol, uvicorn),
in this process: keep-alive and pipelined answers written whole, each in order and complete, a
request that leaves nothing behind for the cyclic collector, and cache hits answered in the
protocol exactly as the flow's task would answer them."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from engine import metrics
from engine.drain import DrainGuard
from engine.front import Facade
from engine.runtime import Runtime
from engine.server import ServeOptions, _config, _Server
from tests.support import rawhttp
from tests.support.backends import BackendServer
from tests.support.engine import write_flows

FLOWS = """
flows:
  hello:
    source: {http: {method: GET, path: /hello}}
    steps:
      - set: {headers: {X-Flow: Hello}}
      - respond: {json: {hello: "${query.name || 'world'}"}}
  echo:
    source: {http: {method: POST, path: /echo}}
    steps:
      - log: echoing
"""


@asynccontextmanager
async def serving(tmp_path: Path, flows: str = FLOWS, keep_alive: float = 75.0) -> AsyncIterator[int]:
    """The facade on a free loopback port, served as serve_worker serves it."""
    runtime = Runtime(write_flows(tmp_path, flows))
    await runtime.start(runtime.load())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = _Server(_config(DrainGuard(runtime.app), ServeOptions(tmp_path, keep_alive=keep_alive), facade=True))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):  # uvicorn says it has started only through this flag
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        await runtime.stop()


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on one connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = await reader.read()
    writer.close()
    return received


def test_pipelined_requests_are_answered_whole_and_in_order(tmp_path: Path) -> None:
    async def run() -> list[rawhttp.RawResponse]:
        async with serving(tmp_path) as port:
            raw = await exchange(port, b"".join([
                b"GET /hello?name=a HTTP/1.1\r\nHost: x\r\nX-Request-ID: first-one\r\n\r\n",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
                b"GET /hello?name=c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ]))
        return rawhttp.parse_responses(raw)

    first, echoed, last = asyncio.run(run())
    assert (first.status, first.json()) == (200, {"hello": "a"})
    assert first.header("x-request-id") == "first-one"
    assert first.header("x-flow") == "Hello"  # names go out lower-case, as uvicorn sends them
    assert first.header("date") and first.header("content-length") == str(len(first.body))
    assert first.header("connection") is None  # kept alive
    assert (echoed.status, echoed.body, echoed.header("content-type")) == (200, b"hello", "text/plain")
    assert last.json() == {"hello": "c"} and last.header("connection") == "close"


def test_a_served_request_leaves_no_reference_cycle(tmp_path: Path) -> None:
    """uvicorn's request cycle held the scope, and the scope held the cycle (the engine's
    connection state): every request left ~11 objects that only the cyclic collector frees."""
    async def run() -> list[object]:
        async with serving(tmp_path) as port:
            await exchange(port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # warm
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for _ in range(20):
                    writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                gc.collect()
                found = list(gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
            writer.close()
            return found

    garbage = asyncio.run(run())
    kinds = {type(thing).__name__ for thing in garbage}
    assert "RequestResponseCycle" not in kinds, kinds


CACHED = """
endpoints:
  crm: {http: {url: "BACKEND"}}
flows:
  cached:
    source: {http: {method: POST, path: /cached, request: {content_type: application/json}}}
    steps:
      - cache:
          key: "item:${query.id || 'none'}:${payload.k}"
          ttl: 1h
          header: X-Cache
          steps:
            - call: {endpoint: crm, path: /echo}
"""

# one keep-alive connection, one request after the other: misses (the backend's answer), hits,
# refusals on the cached route (415, 405, a body its key cannot read), an unsafe request id, a hit
# over HTTP/1.0 (which closes the connection)
CACHED_REQUESTS = [
    b"POST /cached?id=1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: r1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 10\r\n\r\n{\"k\": \"a\"}",
    b"POST /cached?id=1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: r2\r\nContent-Type: application/json\r\n"
    b"Content-Length: 10\r\n\r\n{\"k\": \"a\"}",
    b"POST /cached?id=1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: r3\r\nContent-Type: application/json\r\n"
    b"Content-Length: 10\r\n\r\n{\"k\": \"b\"}",
    b"POST /cached?id=1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: r4\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 10\r\n\r\n{\"k\": \"a\"}",
    b"GET /cached?id=1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: r5\r\n\r\n",
    b"POST /cached?id=1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: r6\r\nContent-Type: application/json\r\n"
    b"Content-Length: 7\r\n\r\n{\"k\": 1",
    b"POST /cached?id=1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: bad id\r\nContent-Type: application/json\r\n"
    b"Content-Length: 10\r\n\r\n{\"k\": \"b\"}",
    b"POST /cached HTTP/1.1\r\nHost: x\r\nX-Request-ID: r8\r\nContent-Type: application/json\r\n"
    b"Content-Length: 10\r\n\r\n{\"k\": \"a\"}",
    b"POST /cached?id=1 HTTP/1.0\r\nHost: x\r\nX-Request-ID: r9\r\nContent-Type: application/json\r\n"
    b"Content-Length: 10\r\nConnection: keep-alive\r\n\r\n{\"k\": \"a\"}",
]


async def _one_by_one(port: int, requests: list[bytes]) -> list[rawhttp.RawResponse]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    for request in requests:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        answers.extend(rawhttp.parse_responses(head + await reader.readexactly(length)))
    assert await reader.read() == b""  # the last one closed the connection
    writer.close()
    return answers


Served = tuple[list[rawhttp.RawResponse], list[float], list[str]]


def _count_quick_answers(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Facade.answer_now noting each of its verdicts (True: answered in the protocol)."""
    answered_now: list[bool] = []
    answer_now = Facade.answer_now

    def counted(self: Facade, *request: object) -> bool:
        answered_now.append(answer_now(self, *request))  # type: ignore[arg-type]
        return answered_now[-1]

    monkeypatch.setattr(Facade, "answer_now", counted)
    return answered_now


def _serve_logged(folder: Path, flows: str, requests: list[bytes], caplog: pytest.LogCaptureFixture,
                  measure: Callable[[], list[float]]) -> Served:
    """``requests`` one by one on one connection to ``flows`` served from ``folder``: the
    answers, how much each of ``measure``'s metrics moved, and the request lines logged."""
    async def run() -> list[rawhttp.RawResponse]:
        async with serving(folder, flows) as port:
            return await _one_by_one(port, requests)

    before = measure()
    caplog.clear()
    with caplog.at_level(logging.INFO, "interlace.request"):
        answers = asyncio.run(run())
    lines = [r.getMessage().rsplit(" ", 2)[0] for r in caplog.records if r.name == "interlace.request"]
    return answers, [b - a for a, b in zip(before, measure(), strict=True)], lines


def _cached_metrics() -> list[float]:
    labels = {"flow": "cached", "route": "/cached"}
    return [metrics.REGISTRY.get_sample_value(name, labels) or 0.0 for name in (
        "interlace_http_request_body_bytes_count", "interlace_http_request_body_bytes_sum",
        "interlace_http_response_body_bytes_count", "interlace_http_response_body_bytes_sum")] + [
        metrics.REGISTRY.get_sample_value("interlace_http_request_duration_seconds_count",
                                          {**labels, "method": method, "status": status}) or 0.0
        for method, status in (("POST", "200"), ("POST", "415"), ("GET", "405"))]


def test_cache_hits_answered_in_the_protocol_are_the_flows_own_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A hit in memory on a route whose flow is one cache step is answered in the engine's
    protocol, with no task; its answer, metrics and request line are the ones the flow's task
    gives, request for request (the same requests served with that path switched off)."""
    def serve(folder: Path) -> Served:
        return _serve_logged(folder, CACHED.replace("BACKEND", backend.url), CACHED_REQUESTS, caplog, _cached_metrics)

    with BackendServer() as backend:
        answered_now = _count_quick_answers(monkeypatch)
        quick = serve(tmp_path / "quick")
        # asked for every POST but the first (the facade builds its middleware stack on its first
        # request); it answered the hits, the misses and refusals went on to the flow's task
        assert answered_now == [True, False, False, False, True, False, True]
        monkeypatch.setattr(Facade, "quick", lambda *_: False)
        general = serve(tmp_path / "general")
        assert len(answered_now) == 7
        assert len(backend.requests) == 6  # (1, a), (1, b) and (none, a), each time

    for answers in (quick[0], general[0]):
        statuses = [(a.status, a.header("x-cache")) for a in answers]
        assert statuses == [(200, "miss"), (200, "hit"), (200, "miss"), (415, None), (405, None),
                            (400, None), (200, "hit"), (200, "miss"), (200, "hit")], statuses
    for one, other in zip(quick[0], general[0], strict=True):
        assert (one.status, one.body) == (other.status, other.body)
        assert [(k, v) for k, v in one.headers if k not in ("date", "x-request-id")] == \
            [(k, v) for k, v in other.headers if k not in ("date", "x-request-id")]
    ids = [a.header("x-request-id") for a in quick[0]]
    assert ids[:6] + ids[7:] == ["r1", "r2", "r3", "r4", "r5", "r6", "r8", "r9"]
    assert ids[6] not in ("bad id", None) and ids[6] != general[0][6].header("x-request-id")  # a new one each
    assert [a.header("x-request-id") for a in general[0]][:6] == ids[:6]
    assert quick[0][7].header("connection") is None and quick[0][8].header("connection") == "close"
    assert quick[1] == general[1] and quick[1][4] == 6  # the same metrics; six answered 200
    assert quick[2] == general[2] and len(quick[2]) == 9  # the same request lines, one each


def test_pipelined_hits_and_misses_are_answered_in_order(tmp_path: Path) -> None:
    """A hit answered in the protocol never overtakes the request before it on its connection."""
    def request(rid: str, key: str, last: bool = False) -> bytes:
        body = b'{"k": "%s"}' % key.encode()
        return (b"POST /cached?id=1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: %s\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n%s\r\n%s" % (rid.encode(), len(body), b"Connection: close\r\n" if last
                                                      else b"", body))

    async def run() -> list[rawhttp.RawResponse]:
        async with serving(tmp_path, CACHED.replace("BACKEND", backend.url)) as port:
            await _one_by_one(port, [request("w1", "a"), request("w2", "a", last=True)])  # (1, a) kept
            return rawhttp.parse_responses(await exchange(port, b"".join([
                request("p1", "a"), request("p2", "b"), request("p3", "a"), request("p4", "b"),
                request("p5", "a", last=True)])))

    with BackendServer() as backend:
        answers = asyncio.run(run())
    assert [(a.header("x-request-id"), a.header("x-cache")) for a in answers] == [
        ("p1", "hit"), ("p2", "miss"), ("p3", "hit"), ("p4", "hit"), ("p5", "hit")]
    assert [a.json() for a in answers] == [{"k": "a"}, {"k": "b"}, {"k": "a"}, {"k": "b"}, {"k": "a"}]


def test_a_connection_is_closed_once_idle_for_the_keep_alive_timeout_and_not_before(tmp_path: Path) -> None:
    """One keep-alive timer per connection, not one per request: a connection whose requests
    come closer together than the timeout stays open however long it lasts; once idle for the
    timeout it is closed."""
    async def run() -> tuple[float, float]:
        async with serving(tmp_path, keep_alive=1.0) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            loop = asyncio.get_running_loop()
            began = loop.time()
            for _ in range(5):  # 2.4 s in all, never idle 1 s
                writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
                await asyncio.sleep(0.6)
            served = loop.time() - began
            idle_from = loop.time() - 0.6
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the engine
            writer.close()
            return served, loop.time() - idle_from

    served, idle = asyncio.run(run())
    assert served > 2.0  # open well past one timeout
    assert 0.9 < idle < 2.5, idle  # closed about one timeout after the last answer


KEPT = """
flows:
  kept:
    source: {http: {method: POST, path: /kept}}
    steps:
      - cache:
          key: the-one
          ttl: 1h
          steps:
            - set: {headers: {X-Kept: one}}
"""


def _kept(rid: str, body: bytes, content_type: bytes | None = None, version: bytes = b"1.1") -> bytes:
    return (b"POST /kept HTTP/%s\r\nHost: x\r\nX-Request-ID: %s\r\n%sContent-Length: %d\r\n%s\r\n%s" % (
        version, rid.encode(), b"Content-Type: %s\r\n" % content_type if content_type else b"", len(body),
        b"Connection: keep-alive\r\n" if version == b"1.0" else b"", body))


def test_a_kept_answer_replayed_in_the_protocol_is_the_flows_own_for_every_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The protocol keeps each answer's encoding: the answer of a fixed key (no message made to
    find it) whose steps only set a header keeps the request's body and no content type, so each
    hit sends the content type its own request came with, as the flow's task does."""
    requests = [_kept("k1", b"abc"), _kept("k2", b"abc"), _kept("k3", b"zzz", b"text/plain"), _kept("k4", b"q"),
                _kept("k5", b"{}", b"application/json"), _kept("k6", b"zzz", b"text/plain"),
                _kept("k7", b"", version=b"1.0")]
    def body_bytes() -> list[float]:
        labels = {"flow": "kept", "route": "/kept"}
        return [metrics.REGISTRY.get_sample_value(name, labels) or 0.0
                for name in ("interlace_http_request_body_bytes_sum", "interlace_http_response_body_bytes_sum")]

    def serve(folder: Path) -> Served:
        return _serve_logged(folder, KEPT, requests, caplog, body_bytes)

    answered_now = _count_quick_answers(monkeypatch)
    quick = serve(tmp_path / "quick")
    assert answered_now == [True] * 6  # every request but the first (a miss: the flow's task) was a hit
    monkeypatch.setattr(Facade, "quick", lambda *_: False)
    general = serve(tmp_path / "general")
    for answers in (quick[0], general[0]):
        assert [(a.body, a.header("content-type"), a.header("x-kept")) for a in answers] == [
            (b"abc", None, "one"), (b"abc", None, "one"), (b"abc", "text/plain", "one"), (b"abc", None, "one"),
            (b"abc", "application/json", "one"), (b"abc", "text/plain", "one"), (b"abc", None, "one")]
    for one, other in zip(quick[0], general[0], strict=True):
        assert (one.status, one.body) == (other.status, other.body)
        assert [(k, v) for k, v in one.headers if k != "date"] == [(k, v) for k, v in other.headers if k != "date"]
    assert [a.header("x-request-id") for a in quick[0]] == [f"k{n}" for n in range(1, 8)]
    assert quick[1] == general[1] == [3.0 * 2 + 3 + 1 + 2 + 3, 3.0 * 7]
    assert quick[2] == general[2] and len(quick[2]) == 7


FRESH = """
endpoints:
  crm: {http: {url: "BACKEND"}}
flows:
  fresh:
    source: {http: {method: POST, path: /fresh}}
    steps:
      - cache:
          key: the-one
          ttl: 1h
          respect_request: true
          header: X-Cache
          steps:
            - call: {endpoint: crm, path: /echo}
"""


def _fresh(rid: str, body: bytes, control: bytes = b"") -> bytes:
    return (b"POST /fresh HTTP/1.1\r\nHost: x\r\nX-Request-ID: %s\r\nContent-Type: text/plain\r\n%s"
            b"Content-Length: %d\r\n\r\n%s" % (rid.encode(), b"Cache-Control: %s\r\n" % control if control else b"",
                                               len(body), body))


def test_a_callers_cache_control_sends_a_hit_the_flows_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With respect_request, a request asking no-cache or no-store is never answered from the
    protocol's kept answer: the flow's task refreshes (or bypasses) the cache as it would."""
    requests = [_fresh("f1", b"one"), _fresh("f2", b"two"), _fresh("f3", b"three", b"no-cache"),
                _fresh("f4", b"four"), _fresh("f5", b"five", b"no-store"), _fresh("f6", b"six", b"max-age=0"),
                _fresh("f7", b"seven").replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")]
    def serve(folder: Path, backend: BackendServer) -> list[rawhttp.RawResponse]:
        async def run() -> list[rawhttp.RawResponse]:
            async with serving(folder, FRESH.replace("BACKEND", backend.url)) as port:
                return await _one_by_one(port, requests)

        return asyncio.run(run())

    answered_now = _count_quick_answers(monkeypatch)
    with BackendServer() as backend:
        quick = serve(tmp_path / "quick", backend)
        quick_calls = len(backend.requests)
    assert answered_now == [True, False, True, False, True, True]
    monkeypatch.setattr(Facade, "quick", lambda *_: False)
    with BackendServer() as backend:
        general = serve(tmp_path / "general", backend)
        assert len(backend.requests) == quick_calls == 3  # the miss, the refresh, the bypass
    for answers in (quick, general):
        assert [(a.body, a.header("x-cache")) for a in answers] == [
            (b"one", "miss"), (b"one", "hit"), (b"three", "miss"), (b"three", "hit"), (b"five", None),
            (b"three", "hit"), (b"three", "hit")]
    for one, other in zip(quick, general, strict=True):
        assert (one.status, one.body) == (other.status, other.body)
        assert [(k, v) for k, v in one.headers if k != "date"] == [(k, v) for k, v in other.headers if k != "date"]
