"""Loading flow folders: every mistake reported with file, line, column and what was expected."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from engine.loader import LoadErrors, load_project

ENDPOINT = """
endpoints:
  backend:
    http: {url: "http://127.0.0.1:9"}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def errors_of(folder: Path) -> list[str]:
    with pytest.raises(LoadErrors) as caught:
        load_project(folder)
    return [f"{Path(e.file).name}:{e.line}:{e.column}: {e.message}" for e in caught.value.errors]


def test_a_valid_folder_loads_and_compiles(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", ENDPOINT + """
flows:
  one:
    source: {http: {method: GET, path: "/items/{id}"}}
    steps:
      - call: {endpoint: backend, path: "/items/${path.id}"}
""")
    project = load_project(tmp_path)
    assert [f.name for f in project.flows] == ["one"]
    assert project.flows[0].source is not None
    assert project.flows[0].source.path_params == ["id"]
    assert project.compiled is not None and len(project.compiled.flows) == 1


def test_yaml_syntax_error_has_its_position(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", """
flows:
  one:
    source: {http: {path: /x}
    steps: []
""")
    [error] = errors_of(tmp_path)
    assert error.startswith("bad.yaml:4:")


def test_unknown_key_points_at_the_key_and_suggests(tmp_path: Path) -> None:
    write(tmp_path, "f.yaml", """
flows:
  one:
    source: {http: {path: /x}}
    stepz: []
""")
    errors = errors_of(tmp_path)
    assert any(e.startswith("f.yaml:4:5: unknown key 'stepz' in flows.one (did you mean 'steps'?)") for e in errors)
    assert any("missing required key 'steps'" in e for e in errors)


def test_unknown_step_kind_and_wrong_types(tmp_path: Path) -> None:
    write(tmp_path, "f.yaml", ENDPOINT + """
flows:
  one:
    source: {http: {path: /x}}
    steps:
      - lgo: hello
      - respond: {status: [1]}
      - call: {endpoint: backend, pth: /x}
""")
    errors = errors_of(tmp_path)
    assert errors[0].startswith("f.yaml:9:9: unknown step kind 'lgo' (did you mean 'log'?)")
    assert errors[1].startswith("f.yaml:10:27: respond: expected an integer or a string in status, got a list")
    assert errors[2].startswith("f.yaml:11:35: call: unknown key 'pth'")


def test_bad_expression_points_into_the_string(tmp_path: Path) -> None:
    write(tmp_path, "f.yaml", """
flows:
  one:
    source: {http: {path: /x}}
    steps:
      - log: "value ${payload.[}"
""")
    [error] = errors_of(tmp_path)
    assert error.startswith("f.yaml:5:")
    assert "invalid expression" in error
    column = int(error.split(":")[2])
    assert column > 14  # inside the string, not at the step


def test_unknown_endpoint_and_sequence(tmp_path: Path) -> None:
    write(tmp_path, "f.yaml", ENDPOINT + """
flows:
  one:
    source: {http: {path: /x}}
    steps:
      - call: {endpoint: nowhere}
      - sequence: missing
""")
    errors = errors_of(tmp_path)
    assert errors[0].startswith("f.yaml:9:26: call: unknown endpoint 'nowhere' (endpoints: backend)")
    assert errors[1].startswith("f.yaml:10:19: sequence: unknown sequence 'missing'")


def test_duplicate_routes_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """
flows:
  one:
    source: {http: {method: GET, path: "/items/{id}"}}
    steps: [{respond: {}}]
""")
    write(tmp_path, "b.yaml", """
flows:
  two:
    source: {http: {method: GET, path: "/items/{key}"}}
    steps: [{respond: {}}]
""")
    [error] = errors_of(tmp_path)
    assert error.startswith("b.yaml:3:40: duplicate route GET /items/{key}: flow 'one'")


def test_xslt_that_does_not_compile(tmp_path: Path) -> None:
    (tmp_path / "broken.xsl").write_text(
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">\n'
        '  <xsl:template match="/"><xsl:value-of select="//["/></xsl:template>\n</xsl:stylesheet>\n')
    write(tmp_path, "f.yaml", """
flows:
  one:
    source: {http: {path: /x}}
    steps:
      - transform: {xslt: broken.xsl}
      - transform: {xslt: absent.xsl}
""")
    errors = errors_of(tmp_path)
    assert errors[0].startswith("f.yaml:5:27: transform: broken.xsl:2:")
    assert "file not found: absent.xsl" in errors[1]


def test_sequence_cycles_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "f.yaml", """
sequences:
  a: [{sequence: b}]
  b: [{sequence: a}]
flows:
  one:
    source: {http: {path: /x}}
    steps: [{sequence: a}]
""")
    [error] = errors_of(tmp_path)
    assert "loop forever" in error


def test_every_error_of_a_folder_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "flows:\n  one:\n    source: {http: {path: x}}\n    steps: []\n")
    write(tmp_path, "b.yaml", "flows: [1, 2]\n")
    errors = errors_of(tmp_path)
    assert len(errors) == 2
    assert errors[0].startswith("a.yaml:3:27:") and "does not match the pattern ^/" in errors[0]
    assert errors[1].startswith("b.yaml:1:8: expected a mapping in flows")


def test_the_example_flows_are_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    assert load_project(root / "flows").flows
    assert len(load_project(root / "flows" / "bench").flows) == 6


def test_url_and_urls_together_are_refused_in_words(tmp_path: Path) -> None:
    write(tmp_path, "f.yaml", """
endpoints:
  a:
    http: {url: "http://127.0.0.1:1", urls: ["http://127.0.0.1:2"]}
flows:
  f:
    source: {http: {path: /f}}
    steps: [{respond: {}}]
""")
    [error] = errors_of(tmp_path)
    assert error == "f.yaml:3:11: give only one of url, urls in endpoints.a.http, not both"
