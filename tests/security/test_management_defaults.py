"""Management is never open to the network by default, and the generated manifests still work.

Before: management bound the facade's address (0.0.0.0 in the container) without any token
unless INTERLACE_MANAGEMENT_TOKEN happened to be set, and `interlace k8s` never set one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest

from deploy.k8s import Options, base_resources, management_secret
from engine.loader import load_project
from engine.server import is_loopback
from tests.support.engine import PING, REPO, run_engine, write_flows
from tests.support.services import free_port

pytestmark = pytest.mark.timeout(120)

TOKEN = "test-token-0123456789abcdef"


def without_token() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "INTERLACE_MANAGEMENT_TOKEN"}


def test_loopback_is_told_apart() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "", "10.0.0.5", "pod.example"))


def test_management_defaults_to_loopback_apart_from_the_facade(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", PING)
    port, management_port = free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(folder), "--host", "0.0.0.0",
                                "--port", str(port), "--management-port", str(management_port)],
                               cwd=REPO, env=without_token(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{management_port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        listening = Path("/proc/net/tcp").read_text() + Path("/proc/net/tcp6").read_text()
        # 0100007F is 127.0.0.1 in /proc/net/tcp: management listens there only, the facade everywhere
        assert f"0100007F:{management_port:04X}" in listening
        assert f"00000000:{management_port:04X}" not in listening and f"00000000:{port:04X}" in listening
    finally:
        process.terminate()
        process.wait(20)


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_management_on_the_network_without_a_token_is_refused(tmp_path: Path, host: str) -> None:
    folder = write_flows(tmp_path / "flows", PING)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(folder), "--port", str(free_port()),
                           "--management-host", host, "--management-port", str(free_port())],
                          cwd=REPO, env=without_token(), capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert f"refusing to serve management (flows, endpoints, metrics, reload) on {host} without a token" \
        in done.stderr
    assert "Traceback" not in done.stderr


def test_insecure_management_is_an_explicit_choice_and_warned(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", PING)
    with run_engine(folder, "--management-host", "0.0.0.0", "--insecure-management", env=without_token()) as engine:
        assert httpx.get(f"{engine.management_url}/flows").status_code == 200
        assert "without a token (--insecure-management)" in engine.log()


def container_env(resources: dict[str, dict[str, Any]], secrets: dict[str, str]) -> dict[str, str]:
    """The environment a pod of the generated Deployment gets: envFrom the ConfigMap, then env,
    with secretKeyRef read from ``secrets`` ({secret/key: value}); a missing one is left out."""
    container = resources["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    env = dict(resources["configmap.yaml"]["data"])
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            if f"{ref['name']}/{ref['key']}" in secrets:
                env[item["name"]] = secrets[f"{ref['name']}/{ref['key']}"]
    return env


def test_the_manifests_reference_a_token_and_their_probes_reach_management(tmp_path: Path) -> None:
    project = load_project(REPO / "flows")
    options = Options()
    resources = base_resources(project, options)
    for resource in resources.values():
        kubernetes_validate.validate(resource, "1.33.0", strict=True)
    container = resources["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    token_ref = next(e for e in container["env"] if e["name"] == "INTERLACE_MANAGEMENT_TOKEN")
    assert token_ref["valueFrom"]["secretKeyRef"] == {"name": management_secret(options), "key": "token"}
    assert "optional" not in token_ref["valueFrom"]["secretKeyRef"]  # no Secret, no pod: never an open one

    # the pod's environment, as the kubelet builds it, with free ports for this machine
    env = container_env(resources, {f"{management_secret(options)}/token": TOKEN})
    assert env["INTERLACE_MANAGEMENT_HOST"] == "0.0.0.0" and env["INTERLACE_MANAGEMENT_TOKEN"] == TOKEN
    port, management_port = free_port(), free_port()
    env |= {"INTERLACE_PORT": str(port), "INTERLACE_MANAGEMENT_PORT": str(management_port),
            "INTERLACE_SECRETS_DIR": str(tmp_path)}
    flows = shutil.copytree(REPO / "flows", tmp_path / "flows")  # the store's SQLite file is written there
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(flows)], cwd=REPO,
                               env={**without_token(), **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probes = {name: container[name]["httpGet"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        deadline = time.monotonic() + 20
        for name, probe in probes.items():
            assert ports[probe["port"]] == int(resources["configmap.yaml"]["data"]["INTERLACE_MANAGEMENT_PORT"])
            url = f"http://127.0.0.1:{management_port}{probe['path']}"  # the kubelet has no token
            while True:
                try:
                    if httpx.get(url, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline and process.poll() is None, name
                time.sleep(0.05)
        flows = f"http://127.0.0.1:{management_port}/flows"
        assert httpx.get(flows).status_code == 401
        assert httpx.get(flows, headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    finally:
        process.terminate()
        process.wait(20)

    # without the Secret the same environment never serves management open
    env_without = container_env(resources, {}) | {"INTERLACE_PORT": str(free_port()),
                                                  "INTERLACE_MANAGEMENT_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(flows)], cwd=REPO,
                          env={**without_token(), **env_without}, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "without a token" in done.stderr
