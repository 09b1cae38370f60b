"""The runtime base image's Containerfile agrees with what `interlace build` and `interlace k8s`
assume of it, and build-base.sh says what it needs where no engine can build it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from deploy.image import DEFAULT_FLOWS_PATH, FLOWS_PATH_LABEL
from deploy.k8s import FACADE_PORT, MANAGEMENT_PORT, RUNTIME_UID

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = (REPO / "deploy" / "Containerfile").read_text()


def instructions(name: str) -> list[str]:
    """The arguments of every ``NAME`` instruction of the final stage, continuation lines joined."""
    text = CONTAINERFILE.replace("\\\n", " ")
    final_stage = text[text.rindex("\nFROM "):]
    return [line.split(None, 1)[1].strip() for line in final_stage.splitlines() if line.startswith(name + " ")]


def test_runs_as_the_non_root_user_the_manifests_name() -> None:
    assert instructions("USER") == [f"{RUNTIME_UID}:{RUNTIME_UID}"]
    assert f"--uid {RUNTIME_UID}" in CONTAINERFILE


def test_exposes_the_facade_and_management_ports() -> None:
    assert instructions("EXPOSE") == [f"{FACADE_PORT} {MANAGEMENT_PORT}"]
    env = " ".join(instructions("ENV"))
    assert f"INTERLACE_PORT={FACADE_PORT}" in env and f"INTERLACE_MANAGEMENT_PORT={MANAGEMENT_PORT}" in env
    assert "INTERLACE_HOST=0.0.0.0" in env  # reachable from the pod's network, not only its loopback


def test_serves_the_folder_interlace_build_fills() -> None:
    assert instructions("ENTRYPOINT") == ['["interlace", "run"]']
    assert instructions("CMD") == [f'["{DEFAULT_FLOWS_PATH}"]']
    label = " ".join(instructions("LABEL"))
    assert f'{FLOWS_PATH_LABEL}="{DEFAULT_FLOWS_PATH}"' in label


def test_nothing_is_written_at_run_time() -> None:
    # bytecode compiled into the image, none written beside it: a read-only root filesystem works
    assert "compileall" in CONTAINERFILE
    assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(instructions("ENV"))


def test_build_base_says_what_it_needs_without_an_engine(tmp_path: Path) -> None:
    # a PATH with bash and the core tools only: no buildah, podman or docker
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "head", "dirname", "cat"):
        source = next(Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists())
        (bin_dir / tool).symlink_to(source)
    result = subprocess.run(["bash", str(REPO / "deploy" / "build-base.sh"), "127.0.0.1:5000"], capture_output=True,
                            text=True, env={**os.environ, "PATH": str(bin_dir)}, timeout=30)
    assert result.returncode == 2
    assert "no buildah, podman or reachable Docker engine" in result.stderr
    usage = subprocess.run(["bash", str(REPO / "deploy" / "build-base.sh")], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 64 and re.search(r"REGISTRY/interlace/runtime:VERSION", usage.stdout)
