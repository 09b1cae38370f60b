"""Reading test suites: the same YAML reader and error positions as flow files."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from engine.loader import LoadError, LoadErrors, schema_errors
from engine.model import Location
from engine.testing.schema import suite_schema
from engine.yamlio import YamlSyntaxError, locate, read_yaml

SUITE_SUFFIXES = (".test.yaml", ".test.yml")


@dataclass
class Case:
    name: str
    node: Any  # the case's YAML mapping, with positions
    location: Location
    suite: Suite
    # the case's own mistakes (an unknown key, a wrong type): it fails with them, the others run
    mistakes: list[LoadError] = field(default_factory=list)

    def at(self, *path: Any, key: bool = False) -> Location:
        return locate(self.suite.file, self.node, path, key=key)

    def mock_location(self, endpoint: str) -> Location:
        """Where the case (or else the suite) names a mocked endpoint."""
        if endpoint in (self.node.get("mocks") or {}):
            return self.at("mocks", endpoint, key=True)
        return locate(self.suite.file, self.suite.node, ("mocks", endpoint), key=True)

    @property
    def mocks(self) -> dict[str, list[tuple[Any, Location]]]:
        """Per endpoint, its rules with where they stand: the case's own first, then the suite's."""
        rules: dict[str, list[tuple[Any, Location]]] = {}
        for name, items in (self.node.get("mocks") or {}).items():
            rules.setdefault(name, []).extend(
                (rule, self.at("mocks", name, i)) for i, rule in enumerate(items))
        for name, items in (self.suite.node.get("mocks") or {}).items():
            rules.setdefault(name, []).extend(
                (rule, locate(self.suite.file, self.suite.node, ("mocks", name, i))) for i, rule in enumerate(items))
        return rules


@dataclass
class Suite:
    file: Path
    node: Any
    flows_dir: Path
    cases: list[Case] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.node.get("env") or {}).items()}

    @property
    def secrets(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.node.get("secrets") or {}).items()}


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(suite_schema())


def load_suite(file: Path) -> Suite:
    """Parse and validate one suite; LoadErrors names file:line:column of every mistake."""
    try:
        node = read_yaml(file)
    except YamlSyntaxError as exc:
        raise LoadErrors([LoadError.at(exc.location, exc.message)]) from None
    if node is None:
        raise LoadErrors([LoadError(file, 1, 1, "empty test suite: expected cases:")])
    suite_errors: list[LoadError] = []
    case_errors: dict[int, list[LoadError]] = {}
    for error in _validator().iter_errors(node):
        path = list(error.absolute_path)
        where = case_errors.setdefault(path[1], []) if len(path) >= 2 and path[0] == "cases" \
            and isinstance(path[1], int) and isinstance(node["cases"][path[1]], dict) else suite_errors
        where.extend(schema_errors(file, node, _Only(error)))
    if suite_errors:  # the shared part is wrong (flows, env, mocks, the list of cases): nothing can run
        raise LoadErrors([*suite_errors, *(e for errors in case_errors.values() for e in errors)])
    flows_dir = (file.parent / str(node.get("flows", "."))).resolve()
    if not flows_dir.is_dir():
        raise LoadErrors([LoadError.at(locate(file, node, ("flows",)), f"no such flow folder: {flows_dir}")])
    suite = Suite(file, node, flows_dir)
    for index, case in enumerate(node["cases"]):
        name = str(case["name"]) if isinstance(case.get("name"), str) else f"case {index + 1}"
        suite.cases.append(Case(name, case, locate(file, node, ("cases", index)), suite,
                                sorted(case_errors.get(index, []), key=lambda e: (e.line, e.column))))
    return suite


class _Only:
    """One jsonschema error, as a validator that finds just it (for schema_errors' wording)."""

    def __init__(self, error: Any) -> None:
        self.error = error

    def iter_errors(self, instance: Any) -> Any:
        return iter([self.error])


def find_suites(paths: list[Path]) -> list[Path]:
    """Suite files named, or found under the folders named (recursively)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.name.endswith(SUITE_SUFFIXES)
                                and ".venv" not in p.parts and not any(part.startswith(".") for part in p.parts)))
        else:
            found.append(path)
    return found
