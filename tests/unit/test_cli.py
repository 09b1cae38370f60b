"""The command line: validate, schema and docs, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from engine.docs import reference

REPO = Path(__file__).resolve().parents[2]


def interlace(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def test_validate_the_examples() -> None:
    result = interlace("validate", "flows")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_validate_reports_errors_with_positions_and_fails(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("flows:\n  x:\n    source: {http: {path: /x}}\n    steps:\n      - respnd: {}\n")
    result = interlace("validate", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'a.yaml'}:5:9: unknown step kind 'respnd' (did you mean 'respond'?)" in result.stderr
    assert result.stderr.rstrip().endswith(f"1 error in {tmp_path}")


def test_schema_is_valid_json_schema_and_accepts_every_example() -> None:
    result = interlace("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for path in sorted((REPO / "flows").glob("*.yaml")) + sorted((REPO / "flows" / "bench").glob("*.yaml")):
        if path.name.endswith(".test.yaml"):
            continue
        document = YAML(typ="safe").load(path.read_text())
        errors = [e.message for e in validator.iter_errors(document)]
        assert errors == [], f"{path.name}: {errors}"


def test_schema_rejects_what_the_loader_rejects() -> None:
    validator = Draft202012Validator(json.loads(interlace("schema").stdout))
    bad = {"flows": {"x": {"source": {"http": {"path": "/x"}}, "steps": [{"log": "a", "respond": {}}]}}}
    assert list(validator.iter_errors(bad))


def test_reference_docs_are_generated_from_the_registry() -> None:
    committed = (REPO / "docs" / "reference.md").read_text()
    assert committed == reference(), "docs/reference.md is stale: run `interlace docs`"


def test_every_command_has_help() -> None:
    for command in ("run", "validate", "schema", "docs"):
        result = interlace(command, "--help")
        assert result.returncode == 0 and "usage: interlace" in result.stdout


def test_suite_schema_validates_the_example_suites() -> None:
    result = interlace("schema", "--suite")
    schema = json.loads(result.stdout)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for path in sorted((REPO / "flows").rglob("*.test.yaml")):
        errors = [e.message for e in validator.iter_errors(YAML(typ="safe").load(path.read_text()))]
        assert errors == [], f"{path.name}: {errors}"
