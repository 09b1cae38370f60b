"""The customer-360 example as it stands in flows/, served by a real engine, against three slow
JSON backends on loopback; the gateway's JWT when GATEWAY_JWKS names a key set."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.engine import REPO, run_engine

ANSWERS = {"profile": {"name": "Ada"}, "orders": [{"id": "1001"}], "loyalty": {"points": 7}}
DELAYS = {"profile": 0.3, "orders": 0.6, "loyalty": 0.9}


class _Systems:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.loyalty_down = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                system = self.path.split("/")[1]
                outer.calls.append(self.path)
                time.sleep(DELAYS[system])
                if system == "loyalty" and outer.loyalty_down:
                    self.send_response(503)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = json.dumps(ANSWERS[system]).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self) -> dict[str, str]:
        return {f"{name.upper()}_URL": f"{self.url}/{name}" for name in ANSWERS}


@pytest.fixture
def systems() -> Iterator[_Systems]:
    made = _Systems()
    try:
        yield made
    finally:
        made.server.shutdown()
        made.server.server_close()


def test_the_overview_gathers_concurrently_caches_and_limits(systems: _Systems, tmp_path: Path) -> None:
    env = {**systems.env(), "GATEWAY_JWKS": ""}
    with run_engine(REPO / "flows", env=env, log_dir=tmp_path) as engine, httpx.Client(base_url=engine.url) as client:
        started = time.monotonic()
        first = client.get("/customers/c-1/overview", headers={"X-Client-Id": "a"})
        took = time.monotonic() - started
        second = client.get("/customers/c-1/overview", headers={"X-Client-Id": "a"})
        systems.loyalty_down = True
        partial = client.get("/customers/c-2/overview", headers={"X-Client-Id": "b"})
        burst = [client.get("/customers/c-1/overview", headers={"X-Client-Id": "c"}) for _ in range(40)]
        log = engine.log()
    assert first.status_code == 200
    assert first.json() == {**ANSWERS, "caller": None}
    assert took < 1.7  # the slowest system takes 0.9 s; one after another would be 1.8 s
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert partial.json() == {**ANSWERS, "loyalty": None, "partial": True, "caller": None}
    assert sorted(systems.calls) == sorted([f"/{s}/customers/c-{n}" for s in ANSWERS for n in (1, 2)])
    assert [r.status_code for r in burst].count(429) >= 1
    refused = next(r for r in burst if r.status_code == 429)
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert "customer-360" in log and "runs OPEN" in log


def test_with_a_jwks_the_gateways_jwt_is_required(systems: _Systems, tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "gateway-jwks.json"
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "gw-1", "use": "sig"}]}))
    env = {**systems.env(), "GATEWAY_JWKS": str(jwks), "GATEWAY_ISSUER": "https://gw.test"}
    token = jwt.encode({"iss": "https://gw.test", "sub": "alice", "exp": int(time.time()) + 60}, key,
                       algorithm="RS256", headers={"kid": "gw-1"})
    with run_engine(REPO / "flows", env=env, log_dir=tmp_path) as engine, httpx.Client(base_url=engine.url) as client:
        refused = client.get("/customers/c-1/overview")
        allowed = client.get("/customers/c-1/overview", headers={"X-JWT-Assertion": token})
        log = engine.log()
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert allowed.status_code == 200
    assert allowed.json()["caller"] == "alice"
    assert "runs OPEN" not in log
