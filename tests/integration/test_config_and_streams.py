"""Configuration from env and secret files, media types, large bodies, correlation in logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.backends import BackendServer
from tests.support.engine import facade_client, run_engine, write_flows


@pytest.mark.anyio
async def test_env_and_secret_files_configure_endpoints_and_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                      ) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "api-key").write_text("s3cr3t\n")
    monkeypatch.setenv("INTERLACE_SECRETS_DIR", str(secrets))
    with BackendServer() as backend:
        write_flows(tmp_path / "flows", """
        endpoints:
          backend:
            http:
              url: ${env.BACKEND}
              headers: {X-Api-Key: "${secret.\\"api-key\\"}"}
        flows:
          f:
            source: {http: {method: GET, path: /f}}
            steps:
              - call: {endpoint: backend, method: POST, path: /echo, body: {region: "${env.REGION}"}}
        """)
        async with facade_client(tmp_path / "flows", env={"BACKEND": backend.url, "REGION": "eu"}) as client:
            reply = await client.get("/f")
        seen = backend.requests[-1]
    assert reply.json() == {"region": "eu"}
    assert seen.headers["x-api-key"] == "s3cr3t"


@pytest.mark.anyio
async def test_a_route_that_declares_its_media_type_answers_415_to_others(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    flows:
      f:
        source: {http: {method: POST, path: /f, request: {content_type: application/json}}}
        steps: [{respond: {json: {ok: true}}}]
      x:
        source: {http: {method: POST, path: /x}}
        steps: [{transform: {xml_to_json: {}}}]
    """)
    async with facade_client(tmp_path) as client:
        refused = await client.post("/f", content=b"<a/>", headers={"content-type": "application/xml"})
        accepted = await client.post("/f", json={})
        wrong_for_step = await client.post("/x", json={"a": 1})
    assert refused.status_code == 415
    assert refused.json()["type"].endswith("/unsupported-media-type")
    assert accepted.status_code == 200
    assert wrong_for_step.status_code == 415
    assert "needs a XML payload" in wrong_for_step.json()["detail"]


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[BackendServer, Path]]:
    with BackendServer() as backend:
        folder = write_flows(tmp_path / "flows", f"""
        endpoints:
          backend: {{http: {{url: "{backend.url}"}}}}
        flows:
          direct:
            source: {{http: {{method: POST, path: /direct, max_body: 64MiB}}}}
            steps:
              - log: forwarding
              - call: {{endpoint: backend, path: /echo}}
          small:
            source: {{http: {{method: POST, path: /small, max_body: 1KiB}}}}
            steps:
              - call: {{endpoint: backend, path: /echo}}
        """)
        yield backend, folder


def test_large_chunked_bodies_stream_through_and_oversize_ones_get_413(proxy: tuple[BackendServer, Path]) -> None:
    backend, folder = proxy
    size = 24 * 1024 * 1024

    def chunks() -> Iterator[bytes]:
        block = bytes(range(256)) * 4096  # 1 MiB
        for _ in range(size // len(block)):
            yield block

    with run_engine(folder) as engine, httpx.Client(timeout=60) as client:
        headers = {"content-type": "application/octet-stream", "x-request-id": "big-1"}
        reply = client.post(f"{engine.url}/direct", content=chunks(), headers=headers)
        assert reply.status_code == 200
        assert len(reply.content) == size
        assert reply.content[:256] == bytes(range(256))
        assert reply.headers["x-request-id"] == "big-1"
        refused = client.post(f"{engine.url}/small", content=b"x" * 4096,
                              headers={"content-type": "application/octet-stream"})
        assert refused.status_code == 413
        assert refused.headers["content-type"] == "application/problem+json"
        assert len(backend.requests) == 1  # the oversize body never reached the backend
        log = engine.log()
    assert "[big-1] forwarding" in log


def test_unreachable_backend_is_a_502_problem_with_the_correlation_id(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", """
    endpoints:
      dead: {http: {url: "http://127.0.0.1:9"}}
    flows:
      f:
        source: {http: {method: GET, path: /f}}
        steps: [{call: {endpoint: dead}}]
    """)
    with run_engine(folder) as engine:
        reply = httpx.get(f"{engine.url}/f", headers={"x-request-id": "trace-me"})
        log = engine.log()
    problem = reply.json()
    assert reply.status_code == 502
    assert problem["type"].endswith("/backend-unreachable")
    assert problem["correlation_id"] == "trace-me"
    assert "Traceback" not in reply.text
    assert "[trace-me]" in log


def test_a_missing_secret_or_env_variable_is_a_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.loader import LoadErrors, load_project

    monkeypatch.setenv("INTERLACE_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    folder = write_flows(tmp_path / "flows", """
    endpoints:
      a: {http: {url: "${env.NOT_SET_ANYWHERE}"}}
      b: {http: {url: "http://127.0.0.1:9", headers: {X-Key: "${secret.nokey}"}}}
    flows:
      f:
        source: {http: {method: GET, path: /f}}
        steps: [{respond: {}}]
    """)
    with pytest.raises(LoadErrors) as caught:
        load_project(folder, serving=True)  # what `interlace run` loads with
    messages = [e.message for e in caught.value.errors]
    assert "endpoint 'a': ${env.NOT_SET_ANYWHERE} is not set: no such environment variable" in messages[0]
    assert "endpoint 'b': ${secret.nokey} is not set: no such secret" in messages[1]


@pytest.mark.anyio
async def test_backend_addresses_stay_out_of_answers(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    endpoints:
      dead: {http: {url: "http://user:pw@127.0.0.1:9/internal-path"}}
    flows:
      f:
        source: {http: {method: GET, path: /f}}
        steps: [{call: {endpoint: dead}}]
    """)
    async with facade_client(tmp_path) as client:
        reply = await client.get("/f")
    assert reply.status_code == 502
    assert reply.json()["detail"] == "endpoint 'dead' is unreachable"
    for leak in ("127.0.0.1", "internal-path", "pw", "Errno"):
        assert leak not in reply.text
