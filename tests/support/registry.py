"""A real OCI registry on loopback (Debian's docker-registry), with or without TLS and htpasswd
credentials, and a runtime base image made with umoci and pushed with skopeo, for the tests of
`interlace build`."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.services import free_port, require_command

RUNTIME_UID = 10001
FLOWS_PATH = "/srv/interlace/flows"


@dataclass(frozen=True)
class RunningRegistry:
    address: str  # 127.0.0.1:PORT
    storage: Path
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None

    def catalog(self) -> list[str]:
        scheme = "https" if self.ca_file else "http"
        auth = (self.username, self.password) if self.username and self.password else None
        answer = httpx.get(f"{scheme}://{self.address}/v2/_catalog", verify=_trust(self.ca_file), auth=auth)
        answer.raise_for_status()
        return list(answer.json().get("repositories") or [])


@contextmanager
def running_registry(folder: Path, *, tls: bool = False, username: str | None = None,
                     password: str | None = None, token_auth: tuple[str, Path] | None = None
                     ) -> Iterator[RunningRegistry]:
    """``token_auth``: (realm, signing certificate) of a token service for Bearer authentication."""
    binary = require_command("docker-registry", "docker-registry")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    storage = folder / "storage"
    lines = ["version: 0.1", "log:", "  level: error", "storage:", "  filesystem:", f"    rootdirectory: {storage}",
             "http:", f"  addr: 127.0.0.1:{port}", "  secret: interlace-tests-only"]
    ca_file = None
    if tls:
        require_command("openssl", "openssl")
        ca_file, key = folder / "registry.crt", folder / "registry.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(ca_file)], check=True, capture_output=True)
        lines += ["  tls:", f"    certificate: {ca_file}", f"    key: {key}"]
    if username and password:
        htpasswd = require_command("htpasswd", "apache2-utils")
        users = folder / "htpasswd"
        subprocess.run([htpasswd, "-Bbc", str(users), username, password], check=True, capture_output=True)
        lines += ["auth:", "  htpasswd:", "    realm: interlace-tests", f"    path: {users}"]
    if token_auth:
        from tests.support.token_service import ISSUER, SERVICE

        realm, certificate = token_auth
        lines += ["auth:", "  token:", f"    realm: {realm}", f"    service: {SERVICE}", f"    issuer: {ISSUER}",
                  f"    rootcertbundle: {certificate}"]
    config = folder / "registry.yml"
    config.write_text("\n".join(lines) + "\n")
    log = (folder / "registry.log").open("w")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/v2/"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url, verify=_trust(ca_file), timeout=1).status_code in (200, 401):
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {(folder / 'registry.log').read_text()}")
            time.sleep(0.05)
        yield RunningRegistry(f"127.0.0.1:{port}", storage, ca_file, username, password)
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _trust(ca_file: Path | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else True


def make_base_layout(folder: Path) -> str:
    """A small runtime base image as an OCI layout, made with umoci: the runtime's user, ports,
    entrypoint and flows label, with a PATH that finds this virtual environment's `interlace`
    (the test that runs the image bind-mounts the environment; no Python base can be pulled here).
    Returns ``oci:DIR:runtime``."""
    umoci = require_command("umoci", "umoci")
    layout = folder / "base-layout"
    rootfs = folder / "base-rootfs"
    (rootfs / FLOWS_PATH.lstrip("/")).mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "os-release").write_text("NAME=interlace-test-base\n")
    (rootfs / "etc" / "passwd").write_text(f"root:x:0:0::/root:/bin/sh\ninterlace:x:{RUNTIME_UID}:{RUNTIME_UID}::"
                                           "/nonexistent:/usr/sbin/nologin\n")
    image = f"{layout}:runtime"
    venv_bin = str(Path(sys.executable).parent)
    for command in (["init", "--layout", str(layout)], ["new", "--image", image],
                    ["insert", "--image", image, str(rootfs), "/"],
                    ["config", "--image", image, "--config.user", f"{RUNTIME_UID}:{RUNTIME_UID}",
                     "--config.entrypoint", "interlace", "--config.entrypoint", "run", "--config.cmd", FLOWS_PATH,
                     "--config.exposedports", "8290/tcp", "--config.exposedports", "9201/tcp",
                     "--config.workingdir", "/srv/interlace",
                     "--config.env", f"PATH={venv_bin}:/usr/local/bin:/usr/bin:/bin",
                     "--config.env", "INTERLACE_HOST=0.0.0.0", "--config.env", "PYTHONDONTWRITEBYTECODE=1",
                     "--config.label", f"io.interlace.flows.path={FLOWS_PATH}",
                     "--history.created_by", "interlace tests: runtime base"]):
        subprocess.run([umoci, *command], check=True, capture_output=True, text=True)
    return f"oci:{image}"


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_command("skopeo", "skopeo")
    # skopeo reads a policy file; give it one that accepts anything, as the tests sign nothing
    policy = Path(os.environ.get("TMPDIR", "/tmp")) / "interlace-skopeo-policy.json"
    if not policy.exists():
        policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    result = subprocess.run([binary, "--policy", str(policy), *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {result.stderr}")
    return result
