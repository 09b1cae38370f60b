"""`interlace build` against a real registry on loopback: pushed images pull back with skopeo,
unpack with umoci and hold the flows; the same flows give the same digest; credentials and TLS;
and, where runc can run a container here, the built image serves a flow."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.k8s import FACADE_PORT, MANAGEMENT_PORT, RUNTIME_UID
from deploy.oci.layer import build_layer
from tests.support.registry import FLOWS_PATH, RunningRegistry, make_base_layout, running_registry, skopeo
from tests.support.services import free_port, require_command
from tests.support.token_service import token_service

REPO = Path(__file__).resolve().parents[2]
FLOW = """\
flows:
  greet:
    source:
      http:
        method: GET
        path: /greet/{who}
    steps:
      - respond:
          json:
            greeting: hello ${path.who}
"""


def interlace(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def built(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    pinned = result.stdout.strip()
    assert "@sha256:" in pinned, result.stdout
    return pinned.rsplit("@", 1)[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_base_layout(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, base: str) -> Iterator[RunningRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        # the base in the registry, where `interlace build` looks by default
        skopeo("copy", "--dest-tls-verify=false", base, f"docker://{running.address}/interlace/runtime:0.1.0")
        yield running


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "greet.yaml").write_text(FLOW)
    (folder / "greet.test.yaml").write_text("suite: greet\ncases: []\n")
    (folder / "xslt").mkdir()
    (folder / "xslt" / "shape.xsl").write_text('<xsl:stylesheet version="1.0" '
                                               'xmlns:xsl="http://www.w3.org/1999/XSL/Transform"/>\n')
    (folder / ".editorconfig").write_text("root = true\n")
    return folder


def pull_and_unpack(reference: str, folder: Path, tls_verify: bool = False, creds: str | None = None
                    ) -> tuple[Path, dict[str, Any]]:
    """skopeo copies the image into an OCI layout; umoci unpacks it: (root filesystem, image config)."""
    umoci = require_command("umoci", "umoci")
    layout = folder / "pulled"
    extra = ["--src-creds", creds] if creds else []
    skopeo("copy", f"--src-tls-verify={str(tls_verify).lower()}", *extra, f"docker://{reference}",
           f"oci:{layout}:image")
    bundle = folder / "bundle"
    subprocess.run([umoci, "unpack", "--image", f"{layout}:image", str(bundle)], check=True, capture_output=True)
    config = json.loads(skopeo("inspect", "--config", f"oci:{layout}:image").stdout)
    return bundle, config


def test_pushed_image_pulls_back_with_the_flows_entrypoint_and_ports(registry: RunningRegistry, flows: Path,
                                                                      tmp_path: Path) -> None:
    result = interlace("build", str(flows), "--tag", f"{registry.address}/shop/orders:1.0")
    digest = built(result)
    assert "mounted from interlace/runtime" in result.stderr  # the base's layer never left the registry
    assert "push    manifest" in result.stderr
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry.address}/shop/orders:1.0").stdout)
    assert inspected["Digest"] == digest

    bundle, config = pull_and_unpack(f"{registry.address}/shop/orders@{digest}", tmp_path)
    baked = bundle / "rootfs" / FLOWS_PATH.lstrip("/")
    assert (baked / "greet.yaml").read_text() == FLOW
    assert (baked / "xslt" / "shape.xsl").read_bytes() == (flows / "xslt" / "shape.xsl").read_bytes()
    assert not (baked / "greet.test.yaml").exists()  # suites stay out of the image
    assert not (baked / ".editorconfig").exists()
    assert (bundle / "rootfs" / "etc" / "os-release").exists()  # the base's layer is under the flows
    runtime = config["config"]
    assert isinstance(runtime, dict)
    assert runtime["Entrypoint"] == ["interlace", "run"] and runtime["Cmd"] == [FLOWS_PATH]
    assert set(runtime["ExposedPorts"]) == {f"{FACADE_PORT}/tcp", f"{MANAGEMENT_PORT}/tcp"}
    assert runtime["User"] == f"{RUNTIME_UID}:{RUNTIME_UID}"
    assert runtime["Labels"]["io.interlace.flows"] == "greet"
    assert config["history"][-1]["created_by"] == f"interlace build: 2 files into {FLOWS_PATH}"


def test_same_flows_give_the_same_digest_and_a_change_a_new_one(registry: RunningRegistry, flows: Path,
                                                                 tmp_path: Path) -> None:
    first = built(interlace("build", str(flows), "--tag", f"{registry.address}/shop/orders:a"))
    # another checkout of the same flows: other times, other permissions, another folder
    copy = tmp_path / "elsewhere" / "flows"
    shutil.copytree(flows, copy)
    for path in copy.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
        path.chmod(0o775 if path.is_dir() else 0o664)
    second = built(interlace("build", str(copy), "--tag", f"{registry.address}/shop/orders:b", "--quiet"))
    assert second == first
    (copy / "greet.yaml").write_text(FLOW.replace("hello", "hi"))
    third = built(interlace("build", str(copy), "--tag", f"{registry.address}/shop/orders:c"))
    assert third != first


def test_output_writes_an_oci_layout_with_the_digest_a_push_gives(registry: RunningRegistry, flows: Path,
                                                                  tmp_path: Path, base: str) -> None:
    layout = tmp_path / "layout"
    result = interlace("build", str(flows), "--tag", "shop/orders:2.0", "--output", str(layout), "--base",
                       f"{registry.address}/interlace/runtime:0.1.0")
    digest = built(result)
    index = json.loads((layout / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == ["2.0"]
    assert index["manifests"][0]["digest"] == digest
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    inspected = json.loads(skopeo("inspect", f"oci:{layout}:2.0").stdout)
    assert inspected["Digest"] == digest and len(inspected["Layers"]) == 2
    pushed = built(interlace("build", str(flows), "--tag", f"{registry.address}/shop/orders:2.0"))
    assert pushed == digest  # same flows, same base: the layout and the registry hold the same image
    umoci = require_command("umoci", "umoci")
    subprocess.run([umoci, "unpack", "--image", f"{layout}:2.0", str(tmp_path / "bundle")], check=True,
                   capture_output=True)
    assert (tmp_path / "bundle" / "rootfs" / FLOWS_PATH.lstrip("/") / "greet.yaml").read_text() == FLOW


def test_a_base_from_a_layout_is_copied_into_the_registry(registry: RunningRegistry, flows: Path, base: str,
                                                          tmp_path: Path) -> None:
    result = interlace("build", str(flows), "--tag", f"{registry.address}/other/facade:1", "--base", base)
    digest = built(result)
    assert "copied from the base" in result.stderr
    bundle, _ = pull_and_unpack(f"{registry.address}/other/facade@{digest}", tmp_path)
    assert (bundle / "rootfs" / "etc" / "os-release").read_text() == "NAME=interlace-test-base\n"
    # the same base layout somewhere else on disk: the same image
    moved = tmp_path / "moved-base"
    shutil.copytree(base.removeprefix("oci:").rsplit(":", 1)[0], moved)
    again = interlace("build", str(flows), "--tag", f"{registry.address}/other/facade:2",
                      "--base", f"oci:{moved}:runtime")
    assert built(again) == digest


def test_invalid_flows_build_nothing(registry: RunningRegistry, flows: Path) -> None:
    (flows / "broken.yaml").write_text("flows:\n  broken:\n    source:\n      http: {method: GET, path: /b}\n"
                                       "    steps:\n      - call: {endpoint: nowhere}\n")
    result = interlace("build", str(flows), "--tag", f"{registry.address}/shop/broken:1")
    assert result.returncode == 1
    assert f"{flows / 'broken.yaml'}:6:26: call: unknown endpoint 'nowhere'" in result.stderr
    assert "nothing was built" in result.stderr
    assert "shop/broken" not in registry.catalog()


def test_mistakes_in_the_command_get_clear_errors(registry: RunningRegistry, flows: Path) -> None:
    no_registry = interlace("build", str(flows), "--tag", "orders:1")
    assert no_registry.returncode == 1 and "name the registry to push to" in no_registry.stderr
    bad_tag = interlace("build", str(flows), "--tag", f"{registry.address}/Shop/Orders:1")
    assert bad_tag.returncode == 1 and "must be lowercase" in bad_tag.stderr
    nobody = interlace("build", str(flows), "--tag", f"127.0.0.1:{free_port()}/shop/orders:1")
    assert nobody.returncode == 1 and "cannot reach the registry" in nobody.stderr
    no_base = interlace("build", str(flows), "--tag", f"{registry.address}/shop/orders:1", "--base",
                        f"{registry.address}/interlace/runtime:9.9")
    assert no_base.returncode == 1 and "MANIFEST_UNKNOWN" in no_base.stderr
    not_a_folder = interlace("build", str(flows / "greet.yaml"), "--tag", f"{registry.address}/shop/orders:1")
    assert not_a_folder.returncode == 1 and "not a folder" in not_a_folder.stderr
    other_platform = interlace("build", str(flows), "--tag", f"{registry.address}/shop/orders:1", "--platform",
                               "linux/s390x")
    assert other_platform.returncode == 1 and "not the linux/s390x asked for" in other_platform.stderr
    (flows.parent / "a-file").write_text("")
    unwritable = interlace("build", str(flows), "--tag", "shop/orders:1", "--base",
                           f"{registry.address}/interlace/runtime:0.1.0", "--output", str(flows.parent / "a-file"))
    assert unwritable.returncode == 1 and "interlace build:" in unwritable.stderr
    no_layout = interlace("build", str(flows), "--tag", f"{registry.address}/shop/orders:1", "--base",
                          f"oci:{flows.parent / 'nothing'}")
    assert no_layout.returncode == 1 and "not an OCI image layout" in no_layout.stderr
    outputs = [no_registry, bad_tag, nobody, no_base, not_a_folder, other_platform, unwritable, no_layout]
    assert not any("Traceback" in result.stderr for result in outputs)


def test_tls_registry_with_credentials(tmp_path: Path, flows: Path, base: str) -> None:
    secret = "s3cret-Pa55"
    with running_registry(tmp_path / "secure", tls=True, username="ci-bot", password=secret) as secure:
        skopeo("copy", "--dest-cert-dir", str(_cert_dir(secure, tmp_path)), "--dest-creds", f"ci-bot:{secret}",
               base, f"docker://{secure.address}/interlace/runtime:0.1.0")
        tag = f"{secure.address}/shop/orders:1.0"
        anonymous = interlace("build", str(flows), "--tag", tag, "--ca-file", str(secure.ca_file))
        assert anonymous.returncode == 1 and "asks for credentials" in anonymous.stderr
        untrusted = interlace("build", str(flows), "--tag", tag, "--username", "ci-bot",
                              env={"INTERLACE_REGISTRY_PASSWORD": secret})
        assert untrusted.returncode == 1 and "--ca-file" in untrusted.stderr
        wrong = interlace("build", str(flows), "--tag", tag, "--ca-file", str(secure.ca_file), "--username", "ci-bot",
                          env={"INTERLACE_REGISTRY_PASSWORD": "wrong-password"})
        assert wrong.returncode == 1 and "credentials were refused" in wrong.stderr
        assert "wrong-password" not in wrong.stderr + wrong.stdout
        pushed = interlace("build", str(flows), "--tag", tag, "--ca-file", str(secure.ca_file), "--username",
                           "ci-bot", env={"INTERLACE_REGISTRY_PASSWORD": secret})
        digest = built(pushed)
        assert secret not in pushed.stderr + pushed.stdout
        # the auth file container tools keep works as well
        auth_file = tmp_path / "auth.json"
        token = base64.b64encode(f"ci-bot:{secret}".encode()).decode()
        auth_file.write_text(json.dumps({"auths": {secure.address: {"auth": token}}}))
        again = interlace("build", str(flows), "--tag", f"{secure.address}/shop/orders:1.1", "--ca-file",
                          str(secure.ca_file), env={"REGISTRY_AUTH_FILE": str(auth_file)})
        assert built(again) == digest
        inspected = json.loads(skopeo("inspect", "--cert-dir", str(_cert_dir(secure, tmp_path)), "--creds",
                                      f"ci-bot:{secret}", f"docker://{tag}").stdout)
        assert inspected["Digest"] == digest


def _cert_dir(registry: RunningRegistry, tmp_path: Path) -> Path:
    folder = tmp_path / "certs"
    folder.mkdir(exist_ok=True)
    assert registry.ca_file is not None
    shutil.copy(registry.ca_file, folder / "ca.crt")
    return folder


def test_layers_are_deterministic_tar_entries(flows: Path) -> None:
    layer = build_layer(flows, FLOWS_PATH, mtime=1_700_000_000)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    # folders first (each before what it holds), then files, each in path order
    assert names == ["srv", "srv/interlace", "srv/interlace/flows", "srv/interlace/flows/xslt",
                     "srv/interlace/flows/greet.yaml", "srv/interlace/flows/xslt/shape.xsl"]
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, 1_700_000_000)}
    assert {m.mode for m in members if m.isfile()} == {0o644}
    assert layer.blob[4:8] == b"\0\0\0\0"  # no time in the gzip header


def test_a_symlink_out_of_the_folder_is_refused(registry: RunningRegistry, flows: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the image")
    (flows / "data.txt").symlink_to(outside)
    result = interlace("build", str(flows), "--tag", f"{registry.address}/shop/orders:link")
    assert result.returncode == 1 and "outside" in result.stderr and "--exclude" in result.stderr
    assert built(interlace("build", str(flows), "--tag", f"{registry.address}/shop/orders:link",
                           "--exclude", "data.txt"))


def test_the_built_image_serves_its_flows_in_a_container(registry: RunningRegistry, flows: Path,
                                                         tmp_path: Path) -> None:
    """runc runs the unpacked image as its non-root user on a read-only root filesystem.  The
    base's Python is this machine's, bind-mounted read-only (no Python base image can be pulled
    here); the flows, the entrypoint, the user and the working directory come from the image."""
    runc = require_command("runc", "runc")
    digest = built(interlace("build", str(flows), "--tag", f"{registry.address}/shop/orders:run"))
    bundle, _ = pull_and_unpack(f"{registry.address}/shop/orders@{digest}", tmp_path)
    port, management_port = free_port(), free_port()
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["args"] == ["interlace", "run", FLOWS_PATH]
    assert spec["process"]["user"]["uid"] == RUNTIME_UID
    spec["process"]["terminal"] = False
    spec["process"]["env"] += ["INTERLACE_HOST=127.0.0.1", f"INTERLACE_PORT={port}",
                               f"INTERLACE_MANAGEMENT_PORT={management_port}"]
    spec["root"]["readonly"] = True
    # the host's loopback, so the test reaches the ports; a cluster gives the pod its own network
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
    # /tmp first: the clone itself may live under /tmp, and a later tmpfs would hide it
    spec["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "nodev", "size=65536k"]})
    python_home = Path(os.path.realpath(sys.executable)).parents[1]
    host_dirs = {"/usr", "/lib", "/lib64", "/bin", str(python_home), str(REPO)}
    for source in sorted(d for d in host_dirs if os.path.isdir(d)):
        spec["mounts"].append({"destination": source, "type": "bind", "source": source, "options": ["rbind", "ro"]})
    (bundle / "config.json").write_text(json.dumps(spec))
    name = f"interlace-test-{os.getpid()}"
    log = (tmp_path / "container.log").open("w")
    container = subprocess.Popen([runc, "run", "--bundle", str(bundle), name], stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{management_port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if container.poll() is not None:
                output = (tmp_path / "container.log").read_text()
                if "cgroup" in output or "namespace" in output or "permission denied" in output.lower():
                    pytest.skip(f"runc cannot run a container on this machine: {output.strip()[:300]}")
                pytest.fail(f"the container exited with {container.returncode}: {output}")
            assert time.monotonic() < deadline, (tmp_path / "container.log").read_text()
            time.sleep(0.1)
        answer = httpx.get(f"http://127.0.0.1:{port}/greet/cluster")
        assert answer.status_code == 200 and answer.json() == {"greeting": "hello cluster"}
        subprocess.run([runc, "kill", name, "TERM"], check=True, capture_output=True)
        assert container.wait(30) == 0  # SIGTERM drains and exits 0 inside the container too
    finally:
        if container.poll() is None:
            subprocess.run([runc, "kill", name, "KILL"], capture_output=True)
            container.wait(10)
        subprocess.run([runc, "delete", "--force", name], capture_output=True)
        log.close()


def test_registry_with_bearer_tokens(tmp_path: Path, flows: Path, base: str) -> None:
    """A registry behind a token service: the build exchanges its credentials for a token per
    scope, and a mount asks for pull on the base's repository as well."""
    with token_service(tmp_path / "tokens", "ci-bot", "t0ken-Pa55") as tokens, \
            running_registry(tmp_path / "registry", token_auth=(tokens.realm, tokens.certificate)) as secured:
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "ci-bot:t0ken-Pa55", base,
               f"docker://{secured.address}/interlace/runtime:0.1.0")
        tag = f"{secured.address}/shop/orders:1.0"
        refused = interlace("build", str(flows), "--tag", tag, "--username", "ci-bot",
                            env={"INTERLACE_REGISTRY_PASSWORD": "nope"})
        assert refused.returncode == 1 and "refused a token" in refused.stderr
        tokens.scopes_asked.clear()
        result = interlace("build", str(flows), "--tag", tag, "--username", "ci-bot",
                           env={"INTERLACE_REGISTRY_PASSWORD": "t0ken-Pa55"})
        digest = built(result)
        assert "mounted from interlace/runtime" in result.stderr
        asked = [" ".join(scopes) for scopes in tokens.scopes_asked]
        assert "repository:interlace/runtime:pull" in asked
        assert "repository:shop/orders:pull,push repository:interlace/runtime:pull" in asked
        inspected = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", "ci-bot:t0ken-Pa55",
                                      f"docker://{tag}").stdout)
        assert inspected["Digest"] == digest


def test_a_multi_platform_base_gives_the_platform_asked_for(registry: RunningRegistry, flows: Path, base: str,
                                                            tmp_path: Path) -> None:
    """A base published as an image index: the build takes the entry of --platform and says
    which platforms there are when the one asked for is missing."""
    layout = tmp_path / "multi"
    shutil.copytree(base.removeprefix("oci:").rsplit(":", 1)[0], layout)
    index = json.loads((layout / "index.json").read_text())
    image = index["manifests"][0]
    manifest = json.loads((layout / "blobs" / "sha256" / image["digest"].split(":")[1]).read_text())
    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    native = {"os": config["os"], "architecture": config["architecture"]}
    entries = [{"mediaType": image["mediaType"], "digest": image["digest"], "size": image["size"], "platform": p}
               for p in ({"os": "linux", "architecture": "s390x"}, native)]
    platform_index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                 "manifests": entries}).encode()
    digest = "sha256:" + hashlib.sha256(platform_index).hexdigest()
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(platform_index)
    index["manifests"] = [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest,
                           "size": len(platform_index),
                           "annotations": {"org.opencontainers.image.ref.name": "runtime"}}]
    (layout / "index.json").write_text(json.dumps(index))
    skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:runtime",
           f"docker://{registry.address}/multi/runtime:1")
    wanted = f"{native['os']}/{native['architecture']}"
    result = interlace("build", str(flows), "--tag", f"{registry.address}/multi/facade:1", "--base",
                       f"{registry.address}/multi/runtime:1", "--platform", wanted)
    built(result)
    assert image["digest"] in result.stderr  # the platform's own manifest, not the index, is the base
    missing = interlace("build", str(flows), "--tag", f"{registry.address}/multi/facade:1", "--base",
                        f"{registry.address}/multi/runtime:1", "--platform", "linux/riscv64")
    assert missing.returncode == 1
    offered = ", ".join(sorted(["linux/s390x", wanted]))
    assert f"has no linux/riscv64 image (it has {offered})" in missing.stderr
