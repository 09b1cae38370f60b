"""The facade as a Starlette application: create_app, routes, TestClient, ASGITransport,
mounting in a host app, middleware from Python and from the project's settings, reload."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from engine import LoadErrors, create_app
from engine.compiler import compile_project
from engine.front import FlowRoute
from engine.loader import load_project
from tests.support.backends import BackendServer
from tests.support.engine import run_engine, write_flows
from tests.support.services import free_port

FLOWS = """
endpoints:
  backend: {{http: {{url: "{backend}"}}}}
flows:
  hello:
    source: {{http: {{method: GET, path: /hello}}}}
    steps:
      - respond: {{json: {{greeting: "Hello, ${{query.name || 'world'}}!"}}}}
  order:
    source: {{http: {{method: GET, path: "/orders/{{id}}"}}}}
    steps:
      - call: {{endpoint: backend, method: GET, path: "/orders/${{path.id}}"}}
      - respond: {{json: {{id: "${{path.id}}", backend_path: "${{headers.\\"x-backend-path\\"}}"}}}}
  big:
    source: {{http: {{method: GET, path: /big}}}}
    steps:
      - respond: {{text: "{big}"}}
"""


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


def flows(folder: Path, backend: BackendServer, extra: str = "") -> Path:
    return write_flows(folder, extra + FLOWS.format(backend=backend.url, big="x" * 2000))


def test_create_app_is_a_starlette_app_whose_routes_are_the_flows(tmp_path: Path, backend: BackendServer) -> None:
    app = create_app(flows(tmp_path, backend))
    assert isinstance(app, Starlette)
    assert [(r.name, r.path, sorted(r.methods or ())) for r in app.routes if isinstance(r, Route)] == [
        ("hello", "/hello", ["GET"]), ("order", "/orders/{id}", ["GET"]), ("big", "/big", ["GET"])]
    assert all(isinstance(r, FlowRoute) for r in app.routes)
    assert app.url_path_for("order", id="1001") == "/orders/1001"
    assert app.url_path_for("hello") == "/hello"


def test_create_app_raises_the_load_errors(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    flows:
      broken:
        source: {http: {method: GET, path: /x}}
        steps:
          - respnd: {json: {}}
    """)
    with pytest.raises(LoadErrors) as caught:
        create_app(tmp_path)
    assert "flows.yaml:5:" in str(caught.value) and "respnd" in str(caught.value)


def test_testclient_runs_the_lifespan_and_the_flows(tmp_path: Path, backend: BackendServer) -> None:
    app = create_app(flows(tmp_path, backend))
    with TestClient(app) as client:
        assert app.project.opened  # the lifespan opened the endpoints
        assert client.get("/hello", params={"name": "Ada"}).json() == {"greeting": "Hello, Ada!"}
        reply = client.get("/orders/7")
        assert reply.status_code == 200 and reply.json() == {"id": "7", "backend_path": "/orders/7"}
        missing = client.get("/nowhere")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        wrong = client.post("/hello")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD"  # a GET route answers HEAD too
    assert not app.project.opened  # and the shutdown closed them


@pytest.mark.anyio
async def test_asgi_transport_without_lifespan_opens_the_endpoints_on_first_use(
        tmp_path: Path, backend: BackendServer) -> None:
    app = create_app(flows(tmp_path, backend))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://facade") as client:
        assert not app.project.opened
        answers = await asyncio.gather(*(client.get(f"/orders/{n}") for n in range(5)))
        assert [a.json()["id"] for a in answers] == ["0", "1", "2", "3", "4"]
        assert app.project.opened
    await app.close()


def test_mounted_under_a_prefix_in_a_fastapi_host(tmp_path: Path, backend: BackendServer) -> None:
    from fastapi import FastAPI

    integration = create_app(flows(tmp_path, backend))
    host = FastAPI()

    @host.get("/own")
    def own() -> dict[str, str]:
        return {"served_by": "host"}

    host.mount("/integration", integration, name="integration")
    with TestClient(host) as client:  # the host's lifespan does not reach the mounted app
        assert client.get("/own").json() == {"served_by": "host"}
        assert client.get("/integration/hello").json() == {"greeting": "Hello, world!"}
        reply = client.get("/integration/orders/42")
        assert reply.json() == {"id": "42", "backend_path": "/orders/42"}
        missing = client.get("/integration/nope")
        assert missing.status_code == 404 and missing.json()["instance"] == "/nope"
    assert host.url_path_for("integration:order", id="9") == "/integration/orders/9"
    assert integration.project.opened  # opened on first use


@pytest.mark.anyio
async def test_a_starlette_host_closes_the_mounted_flows_in_its_lifespan(
        tmp_path: Path, backend: BackendServer) -> None:
    integration = create_app(flows(tmp_path, backend))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with integration.running():
            yield

    host = Starlette(routes=[Mount("/api", integration)], lifespan=lifespan)
    with TestClient(host) as client:
        assert integration.project.opened
        assert client.get("/api/orders/1").status_code == 200
    assert not integration.project.opened


class Stamp:
    """A plain ASGI middleware a user might add: stamps every answer, records the scope."""

    seen: list[dict[str, Any]] = []

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        Stamp.seen.append({"client": scope.get("client"), "scheme": scope.get("scheme")})

        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-stamp", self.name.encode())]
            await send(message)

        await self.app(scope, receive, stamped)


def test_middleware_from_python(tmp_path: Path, backend: BackendServer) -> None:
    app = create_app(flows(tmp_path, backend), middleware=[Middleware(Stamp, name="from-create-app")])
    app.add_middleware(GZipMiddleware, minimum_size=100)
    with TestClient(app) as client:
        reply = client.get("/big", headers={"accept-encoding": "gzip"})
        assert reply.headers["content-encoding"] == "gzip"
        assert reply.text == "x" * 2000
        assert reply.headers["x-stamp"] == "from-create-app"
        assert client.get("/hello").headers["x-stamp"] == "from-create-app"


def test_an_error_in_python_middleware_answers_problem_json(tmp_path: Path, backend: BackendServer) -> None:
    class Broken:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                raise RuntimeError("secret-detail-42")
            await self.app(scope, receive, send)

    app = create_app(flows(tmp_path, backend), middleware=[Middleware(Broken)])
    with TestClient(app, raise_server_exceptions=False) as client:
        reply = client.get("/hello")
    assert reply.status_code == 500
    assert reply.headers["content-type"] == "application/problem+json"
    assert "secret-detail-42" not in reply.text


def test_routes_added_from_python_serve_beside_the_flows(tmp_path: Path, backend: BackendServer) -> None:
    app = create_app(flows(tmp_path, backend))

    async def version(_: Request) -> PlainTextResponse:
        return PlainTextResponse("1.2.3")

    app.add_route("/version", version)
    with TestClient(app) as client:
        assert client.get("/version").text == "1.2.3"
        assert client.get("/hello").status_code == 200
        assert client.get("/nothing").status_code == 404


SETTINGS = """
settings:
  http:
    proxy_headers: {trusted: ["127.0.0.1", "testclient"]}
    trusted_hosts: [api.example.com, "*.internal.example.com", "127.0.0.1"]
    cors:
      allow_origins: ["https://app.example.com"]
      allow_methods: [GET, POST]
      allow_headers: [content-type]
      expose_headers: [x-request-id]
    gzip: {minimum_size: 1KiB}
"""


def test_project_settings_declare_cors_gzip_trusted_hosts_and_proxy_headers(
        tmp_path: Path, backend: BackendServer) -> None:
    app = create_app(flows(tmp_path, backend, SETTINGS), middleware=[Middleware(Stamp, name="inner")])
    Stamp.seen.clear()
    with TestClient(app, base_url="http://api.example.com") as client:
        preflight = client.options("/hello", headers={"origin": "https://app.example.com",
                                                      "access-control-request-method": "GET"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        simple = client.get("/hello", headers={"origin": "https://app.example.com"})
        assert simple.headers["access-control-allow-origin"] == "https://app.example.com"
        assert simple.headers["access-control-expose-headers"] == "x-request-id"
        other = client.get("/hello", headers={"origin": "https://evil.example.org"})
        assert "access-control-allow-origin" not in other.headers

        big = client.get("/big", headers={"accept-encoding": "gzip"})
        assert big.headers["content-encoding"] == "gzip" and big.text == "x" * 2000
        small = client.get("/hello", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in small.headers  # under the declared minimum size

        assert client.get("/hello", headers={"host": "a.internal.example.com"}).status_code == 200
        refused = client.get("/hello", headers={"host": "evil.example.org"})
        assert refused.status_code == 400
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["title"] == "Host not allowed"

        Stamp.seen.clear()
        client.get("/hello", headers={"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"})
        assert Stamp.seen[-1]["client"][0] == "203.0.113.7" and Stamp.seen[-1]["scheme"] == "https"


def test_project_settings_are_validated_with_positions(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    settings:
      http:
        cors: {allow_origin: ["*"]}
        trusted_hosts: ["api.*.com"]
    flows:
      ping:
        source: {http: {method: GET, path: /ping}}
        steps: [{respond: {text: pong}}]
    """)
    write_flows(tmp_path, "settings: {http: {gzip: true}}\n", name="more.yaml")
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    text = str(caught.value)
    assert "flows.yaml:3:" in text and "allow_origin" in text and "allow_origins" in text


def test_settings_declared_twice_and_bad_host_patterns(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    settings:
      http:
        trusted_hosts: ["api.*.com"]
    flows:
      ping:
        source: {http: {method: GET, path: /ping}}
        steps: [{respond: {text: pong}}]
    """)
    write_flows(tmp_path, "settings: {http: {gzip: true}}\n", name="more.yaml")
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    text = str(caught.value)
    assert "flows.yaml:3:21: settings: host pattern 'api.*.com'" in text
    assert "more.yaml:1:1: settings are already declared at" in text


@pytest.mark.anyio
async def test_reload_swaps_the_routes_and_requests_in_flight_finish_on_their_flows(
        tmp_path: Path, backend: BackendServer) -> None:
    folder = flows(tmp_path, backend)
    app = create_app(folder)
    backend.set_behaviour(delay=0.5)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://facade") as client:
        in_flight = asyncio.ensure_future(client.get("/orders/1"))
        for _ in range(500):  # until the request waits on the slow backend
            if backend.requests:
                break
            await asyncio.sleep(0.01)
        write_flows(folder, """
        flows:
          hello:
            source: {http: {method: GET, path: /hello}}
            steps: [{respond: {json: {greeting: reloaded}}}]
          added:
            source: {http: {method: GET, path: "/added/{n:int}"}}
            steps: [{respond: {json: {n: "${path.n}"}}}]
        """)
        project = load_project(folder, compile_flows=False)
        old = app.swap(compile_project(project))
        assert [r.name for r in app.routes] == ["hello", "added"]
        assert app.url_path_for("added", n=3) == "/added/3"
        assert (await client.get("/hello")).json() == {"greeting": "reloaded"}
        assert (await client.get("/orders/1")).status_code == 404
        finished = await in_flight
        assert finished.status_code == 200 and finished.json()["id"] == "1"
    await old.close()
    await app.close()


@contextlib.contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port, in a thread."""
    import threading

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            import time

            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_create_app_served_over_sockets_by_uvicorn(tmp_path: Path, backend: BackendServer) -> None:
    app = create_app(flows(tmp_path, backend))
    host = Starlette(routes=[Route("/own", lambda _: JSONResponse({"host": True})), Mount("/flows", app)])
    with serving(host) as url:
        assert httpx.get(f"{url}/flows/orders/5").json() == {"id": "5", "backend_path": "/orders/5"}
        assert httpx.get(f"{url}/own").json() == {"host": True}
    with serving(app) as url:
        reply = httpx.get(f"{url}/hello", params={"name": "Sockets"})
        assert reply.json() == {"greeting": "Hello, Sockets!"}


def test_interlace_run_applies_the_project_settings(tmp_path: Path, backend: BackendServer) -> None:
    folder = flows(tmp_path / "flows", backend, SETTINGS)
    with run_engine(folder) as engine:
        reply = httpx.get(f"{engine.url}/big", headers={"accept-encoding": "gzip",
                                                        "origin": "https://app.example.com"})
        assert reply.headers["content-encoding"] == "gzip"
        assert reply.headers["access-control-allow-origin"] == "https://app.example.com"
        assert reply.text == "x" * 2000
        refused = httpx.get(f"{engine.url}/hello", headers={"host": "evil.example.org"})
        assert refused.status_code == 400 and refused.json()["status"] == 400
