"""Every YAML snippet of the docs and the README validates against the schema it shows:
flow files against the flow schema, suites (``*.test.yaml``, ``cases:``) against the suite
schema, a bare list against a flow's ``steps``.  A snippet of another format says so on its
first line (``# .ci/pipeline.yaml``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from engine.schema import project_schema
from engine.testing.schema import suite_schema

REPO = Path(__file__).resolve().parents[2]
# every page: a new page's snippets are checked without anyone having to list it
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# snippets in another format than Interlace's, named by their first line
OTHER_FORMATS = ("# .ci/",)


def snippets() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        if page.name == "reference.md":  # generated from the registry; tests/spec checks its examples
            continue
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^```yaml\n(.*?)^```", text, re.S | re.M):
            line = text[: match.start()].count("\n") + 2
            found.append((f"{page.relative_to(REPO)}:{line}", match.group(1)))
    return found


def _where(error: Any) -> str:
    return "/".join(map(str, error.absolute_path)) or "(top)"


@pytest.mark.parametrize(("where", "text"), snippets(), ids=[w for w, _ in snippets()])
def test_the_snippet_validates(where: str, text: str) -> None:
    first = text.splitlines()[0] if text else ""
    if first.startswith(OTHER_FORMATS):
        return
    document = YAML(typ="safe").load(text)
    schema = project_schema()
    flow_keys = set(schema["$defs"]["flow"]["properties"])
    if ".test.yaml" in first or (isinstance(document, dict) and "cases" in document):
        validator = Draft202012Validator(suite_schema())
    elif isinstance(document, list):  # a bare step list: the steps of some flow
        validator = Draft202012Validator({"$ref": "#/$defs/steps", "$defs": schema["$defs"]})
    elif isinstance(document, dict) and set(document) <= flow_keys - set(schema["properties"]):
        # a piece of one flow (say its on_error), checked as a flow without its required keys
        fragment = {k: v for k, v in schema["$defs"]["flow"].items() if k != "required"}
        validator = Draft202012Validator({**fragment, "$defs": schema["$defs"]})
    else:
        validator = Draft202012Validator(schema)
    problems = [f"{_where(e)}: {e.message[:200]}" for e in validator.iter_errors(document)]
    assert not problems, f"{where}: " + "; ".join(problems)


def test_the_snippets_were_found() -> None:
    assert len(snippets()) >= 25
    pages = {where.split(":")[0] for where, _ in snippets()}
    assert {"docs/connectors.md", "docs/patterns.md", "docs/flows.md", "README.md"} <= pages
