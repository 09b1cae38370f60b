"""authenticate: JWTs signed in the test with keys made now, verified against a JWKS file and a
JWKS URL served on loopback; API keys from secrets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.support.engine import facade_client, write_flows

pytestmark = pytest.mark.anyio

ISSUER = "https://gateway.test"


def _jwk(private: Any, kid: str) -> dict[str, Any]:
    if isinstance(private, rsa.RSAPrivateKey):
        exported = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key())
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        exported = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key())
    else:
        exported = jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key())
    return {**json.loads(exported), "kid": kid, "use": "sig"}


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {"rsa": rsa.generate_private_key(65537, 2048), "ec": ec.generate_private_key(ec.SECP256R1()),
            "ed": ed25519.Ed25519PrivateKey.generate(), "stranger": rsa.generate_private_key(65537, 2048)}


def _token(key: Any, kid: str, alg: str, **claims: Any) -> str:
    body = {"iss": ISSUER, "sub": "alice", "aud": "facade", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def _flows(jwks: str, extra: str = "") -> str:
    return f"""
flows:
  me:
    source: {{http: {{method: GET, path: /me}}}}
    steps:
      - authenticate:
          jwt:
            header: X-JWT-Assertion
            jwks: "{jwks}"
            issuer: {ISSUER}
            audience: facade
            required_claims: [sub]{extra}
      - respond: {{json: {{caller: "${{auth.sub}}", method: "${{auth.method}}"}}}}
"""


async def test_tokens_of_every_algorithm_verify_against_a_jwks_file(tmp_path: Path, keys: dict[str, Any]) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [_jwk(keys["rsa"], "r1"), _jwk(keys["ec"], "e1"),
                                                             _jwk(keys["ed"], "d1")]}))
    write_flows(tmp_path, _flows("jwks.json"))
    async with facade_client(tmp_path) as client:
        answers = [await client.get("/me", headers={"X-JWT-Assertion": token}) for token in (
            _token(keys["rsa"], "r1", "RS256"), _token(keys["ec"], "e1", "ES256"), _token(keys["ed"], "d1", "EdDSA"))]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].json() == {"caller": "alice", "method": "jwt"}


def _relabelled(key: Any, header: bytes) -> str:
    """An RS256 token of ``key`` with another header segment."""
    return ".".join([base64.urlsafe_b64encode(header).decode().rstrip("="), *_token(key, "r1", "RS256").split(".")[1:]])


def _hmac_signed(key: Any) -> str:
    """A token signed HS256 with the RSA key's public PEM as the secret (the classic alg confusion)."""
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head, body = _relabelled(key, b'{"alg":"HS256","kid":"r1"}').split(".")[:2]
    mac = hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


@pytest.mark.parametrize(("case", "reason"), [
    ("missing", "needs a token"),
    ("garbage", "it is not a JWT"),
    ("expired", "it has expired"),
    ("issuer", "its issuer is not the one expected"),
    ("audience", "its audience is not this service"),
    ("no-sub", "it has no sub claim"),
    ("stranger", "its signature does not verify"),
    ("unknown-kid", "a key the gateway's key set does not have"),
    ("none-alg", "is not accepted"),
    ("alg-for-another-key-type", "its algorithm does not fit the key"),
    ("alg-a-list", "is not accepted"),  # was a 500: a list looked up in the set of algorithms (unhashable)
    ("alg-an-object", "is not accepted"),
    ("hs256-with-the-public-key", "is not accepted"),  # alg confusion: the RSA key's PEM as an HMAC secret
])
async def test_bad_tokens_are_401_problems(tmp_path: Path, keys: dict[str, Any], case: str, reason: str) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [_jwk(keys["rsa"], "r1")]}))
    write_flows(tmp_path, _flows("jwks.json", "\n            leeway: 1s"))
    rsa_key = keys["rsa"]
    tokens = {
        "garbage": "not.a.jwt",
        "expired": _token(rsa_key, "r1", "RS256", exp=int(time.time()) - 60),
        "issuer": _token(rsa_key, "r1", "RS256", iss="https://elsewhere"),
        "audience": _token(rsa_key, "r1", "RS256", aud="another"),
        "no-sub": jwt.encode({"iss": ISSUER, "aud": "facade", "exp": int(time.time()) + 60}, rsa_key,
                             algorithm="RS256", headers={"kid": "r1"}),
        "stranger": _token(keys["stranger"], "r1", "RS256"),
        "unknown-kid": _token(rsa_key, "r9", "RS256"),
        "none-alg": jwt.encode({"iss": ISSUER, "sub": "x", "aud": "facade", "exp": int(time.time()) + 60}, None,
                               algorithm="none"),
        # an RSA-signed token relabelled ES256: the RSA key it names cannot check an ES256 signature
        "alg-for-another-key-type": ".".join([base64.urlsafe_b64encode(b'{"alg":"ES256","kid":"r1"}').decode()
                                              .rstrip("="), *_token(rsa_key, "r1", "RS256").split(".")[1:]]),
        "alg-a-list": _relabelled(rsa_key, b'{"alg":["RS256"],"kid":"r1"}'),
        "alg-an-object": _relabelled(rsa_key, b'{"alg":{"RS256":1},"kid":"r1"}'),
        "hs256-with-the-public-key": _hmac_signed(rsa_key),
    }
    headers = {} if case == "missing" else {"X-JWT-Assertion": tokens[case]}
    async with facade_client(tmp_path) as client:
        reply = await client.get("/me", headers=headers)
    assert reply.status_code == 401
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.headers["www-authenticate"].startswith('Bearer realm="me"')
    assert reason in reply.json()["detail"]
    if case != "missing":
        assert tokens[case] not in reply.text


async def test_requests_at_once_each_get_their_own_token_s_answer(tmp_path: Path, keys: dict[str, Any]) -> None:
    """Tokens that reach the check together are checked together: every request still gets its own
    caller, and a bad signature among them its own 401."""
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [_jwk(keys["rsa"], "r1"), _jwk(keys["ec"], "e1")]}))
    write_flows(tmp_path, _flows("jwks.json"))
    tokens = [_token(keys["stranger"], "r1", "RS256", sub=f"user-{n}") if n % 5 == 3 else
              _token(keys["ec"], "e1", "ES256", sub=f"user-{n}") if n % 5 == 4 else
              _token(keys["rsa"], "r1", "RS256", sub=f"user-{n}") for n in range(30)]
    async with facade_client(tmp_path) as client:
        await client.get("/me", headers={"X-JWT-Assertion": _token(keys["rsa"], "r1", "RS256")})  # keys learnt
        await client.get("/me", headers={"X-JWT-Assertion": _token(keys["ec"], "e1", "ES256")})
        answers = await asyncio.gather(*(client.get("/me", headers={"X-JWT-Assertion": token}) for token in tokens))
    for n, reply in enumerate(answers):
        if n % 5 == 3:
            assert reply.status_code == 401
            assert "its signature does not verify" in reply.json()["detail"]
        else:
            assert reply.status_code == 200
            assert reply.json() == {"caller": f"user-{n}", "method": "jwt"}


async def test_required_claim_values_are_403(tmp_path: Path, keys: dict[str, Any]) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [_jwk(keys["rsa"], "r1")]}))
    write_flows(tmp_path, _flows("jwks.json", "\n            claims: {scope: orders.read}"))
    async with facade_client(tmp_path) as client:
        allowed = await client.get("/me", headers={"X-JWT-Assertion": _token(keys["rsa"], "r1", "RS256",
                                                                               scope="profile orders.read")})
        refused = await client.get("/me", headers={"X-JWT-Assertion": _token(keys["rsa"], "r1", "RS256",
                                                                               scope="profile")})
    assert allowed.status_code == 200
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/forbidden")


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, Any]]]:
    served: dict[str, Any] = {"keys": [], "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served["hits"] += 1
            body = json.dumps({"keys": served["keys"]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", served
    finally:
        server.shutdown()
        server.server_close()


async def test_a_jwks_url_is_fetched_and_a_rotated_key_picked_up(tmp_path: Path, keys: dict[str, Any],
                                                                 jwks_server: tuple[str, dict[str, Any]]) -> None:
    url, served = jwks_server
    served["keys"] = [_jwk(keys["rsa"], "old")]
    write_flows(tmp_path, _flows(url))
    async with facade_client(tmp_path) as client:
        first = await client.get("/me", headers={"X-JWT-Assertion": _token(keys["rsa"], "old", "RS256")})
        served["keys"] = [_jwk(keys["rsa"], "old"), _jwk(keys["ec"], "new")]
        rotated = await client.get("/me", headers={"X-JWT-Assertion": _token(keys["ec"], "new", "ES256")})
    assert first.status_code == 200
    assert rotated.status_code == 401  # asked again too soon: the set is re-read at most every 30 s
    assert served["hits"] == 1


async def test_api_keys_from_secrets(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "partner-a-key").write_text("k-aaaa\n")
    flows = tmp_path / "flows"
    write_flows(flows, """
    flows:
      keyed:
        source: {http: {method: GET, path: /keyed}}
        steps:
          - authenticate:
              api_key:
                keys: {partner-a: '${secret."partner-a-key"}', partner-b: '${secret."partner-b-key"}'}
          - respond: {json: {partner: "${auth.key}"}}
    """)
    import os

    os.environ["INTERLACE_SECRETS_DIR"] = str(secrets)
    try:
        async with facade_client(flows) as client:
            good = await client.get("/keyed", headers={"X-Api-Key": "k-aaaa"})
            bad = await client.get("/keyed", headers={"X-Api-Key": "k-bbbb"})
            empty = await client.get("/keyed", headers={"X-Api-Key": ""})
    finally:
        del os.environ["INTERLACE_SECRETS_DIR"]
    assert good.json() == {"partner": "partner-a"}
    assert bad.status_code == empty.status_code == 401
    assert "k-bbbb" not in bad.text
