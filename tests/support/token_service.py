"""A registry token service on loopback, the way a registry's Bearer authentication expects one:
it checks Basic credentials and answers a JWT (RS256, signed with openssl, the signing
certificate in ``x5c``) granting the scopes asked for.  The registry (Debian's docker-registry,
configured with ``auth: token``) verifies those tokens against the certificate."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

SERVICE = "interlace-test-registry"
ISSUER = "interlace-test-tokens"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenService:
    realm: str
    certificate: Path
    scopes_asked: list[list[str]] = field(default_factory=list)


def _signing_pair(folder: Path) -> tuple[Path, Path, str]:
    key, cert = folder / "token.key", folder / "token.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    f"/CN={ISSUER}", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return key, cert, base64.b64encode(der).decode()


def _token(key: Path, x5c: str, subject: str, scopes: list[str]) -> str:
    access = []
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
    now = int(time.time())
    header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
    claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
              "jti": secrets.token_hex(8), "access": access}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=signing_input.encode(),
                               check=True, capture_output=True).stdout
    return f"{signing_input}.{_b64url(signature)}"


@contextmanager
def token_service(folder: Path, username: str, password: str) -> Iterator[TokenService]:
    folder.mkdir(parents=True, exist_ok=True)
    key, cert, x5c = _signing_pair(folder)
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    asked: list[list[str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            scopes = query.get("scope", [])
            asked.append(scopes)
            body = json.dumps({"token": _token(key, x5c, username, scopes)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TokenService(f"http://127.0.0.1:{server.server_address[1]}/token", cert, asked)
    finally:
        server.shutdown()
        server.server_close()
