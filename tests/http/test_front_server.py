"""The facade as `interlace run` serves it (the drain guard, the engine's HTTP protocol, uvicorn),
in this process: keep-alive and pipelined answers written whole, each in order and complete, and
a request that leaves nothing behind for the cyclic collector."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from engine.drain import DrainGuard
from engine.runtime import Runtime
from engine.server import ServeOptions, _config, _Server
from tests.support import rawhttp
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
async def serving(tmp_path: Path) -> AsyncIterator[int]:
    """The facade on a free loopback port, served as serve_worker serves it."""
    runtime = Runtime(write_flows(tmp_path, FLOWS))
    await runtime.start(runtime.load())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = _Server(_config(DrainGuard(runtime.app), ServeOptions(tmp_path), facade=True))
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
