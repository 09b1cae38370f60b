"""Snag 2: `interlace build` from the docs on a machine with no container engine.

docs/deploy.md's "A first build on this machine" runs as written (a base made as a local OCI
layout with umoci, the image written as a layout); without a base it can reach, the build says
what it tried and what to do next."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.services import free_port, require_command

REPO = Path(__file__).resolve().parents[2]


def walkthrough() -> tuple[list[str], list[str]]:
    page = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    section = page.split("### A first build on this machine", 1)[1]
    commands, output = re.findall(r"^```(?:sh)?\n(.*?)^```", section, re.S | re.M)[:2]
    return [c for c in commands.splitlines() if c.strip()], [o for o in output.splitlines() if o.strip()]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    require_command("umoci", "umoci")
    for name in ("flows", "deploy", ".venv"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def run(command: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command.split("  #")[0]], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_the_first_build_of_docs_deploy_md_runs_as_written(workdir: Path) -> None:
    commands, expected = walkthrough()
    results = [run(command, workdir) for command in commands]
    for command, result in zip(commands, results, strict=True):
        assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
    assert results[0].stdout.strip() == "oci:build/base:runtime"
    printed = (results[-1].stderr + results[-1].stdout).splitlines()
    for line in expected:
        pattern = ".*".join(re.escape(part) for part in line.split("..."))
        assert any(re.fullmatch(pattern, got) for got in printed), f"{line!r} not in:\n" + "\n".join(printed)
    index = json.loads((workdir / "build" / "orders-image" / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == ["1.0"]


def test_a_base_on_top_of_another_layout(workdir: Path) -> None:
    assert run("deploy/make-base-layout.sh build/first", workdir).returncode == 0
    made = run("deploy/make-base-layout.sh build/second --from oci:build/first:runtime", workdir)
    assert made.returncode == 0 and made.stdout.strip() == "oci:build/second:runtime", made.stderr
    built = run(".venv/bin/interlace build flows/ --tag shop/orders:2 --base oci:build/second:runtime "
                "--output build/image", workdir)
    assert built.returncode == 0, built.stderr


def test_without_a_reachable_base_the_build_says_what_to_do(workdir: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}/interlace/runtime"
    result = run(".venv/bin/interlace build flows/ --tag shop/orders:1 --output build/image", workdir,
                 env={"INTERLACE_PUBLISHED_BASE": nowhere, "INTERLACE_BASE_IMAGE": ""})
    assert result.returncode == 1
    message = result.stderr
    assert "no base image to build on:" in message
    assert f"{nowhere}:0.1.0: cannot reach the registry" in message
    assert "--base REGISTRY/interlace/runtime:0.1.0" in message
    assert "deploy/build-base.sh REGISTRY" in message
    assert "deploy/make-base-layout.sh DIR (umoci), then --base oci:DIR:runtime" in message
    assert "Traceback" not in message
