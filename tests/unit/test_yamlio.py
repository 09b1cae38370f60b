"""Reading flow files: YAML 1.2 values, positions of every key and value, errors with positions.

The expected values are what ruamel's own resolver and SafeConstructor made of them before
engine.yamlio answered the C composer's tag questions itself (checked on every YAML file of the
repository as well): the fast path must not change a single value.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

import pytest

from engine.yamlio import YamlMap, YamlSeq, YamlSyntaxError, locate, read_yaml


def read(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "f.yaml"
    path.write_text(text, encoding="utf-8")
    return read_yaml(path)


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "plain"), ("'quoted'", "quoted"), ('"dq"', "dq"), ("''", ""), ("", None), ("~", None), ("null", None),
    ("NULL", None), ("true", True), ("False", False), ("yes", "yes"), ("no", "no"), ("on", "on"), ("12", 12),
    ("+12", 12), ("-3", -3), ("010", 10), ("0o10", 8), ("0x1F", 31), ("0b101", 5), ("1_000", 1000),
    ("1.5", 1.5), ("-.5", -0.5), ("1e3", 1000.0), (".inf", math.inf), ("-.inf", -math.inf), ("1:30", "1:30"),
    ("2024-01-02", datetime.date(2024, 1, 2)), ("'12'", "12"), ("!!str 12", "12"), ("!!int '7'", 7),
    ("!!binary aGVsbG8=", b"hello"), ("${env.X || 'y'}", "${env.X || 'y'}"), ("- 1", None),
    ("'-'", "-"), (".", "."), ("1.0.0", "1.0.0"), ("30s", "30s"), ("10MiB", "10MiB"), ("/x/{id}", "/x/{id}"),
])
def test_scalars_read_as_yaml_1_2(tmp_path: Path, text: str, expected: Any) -> None:
    if text == "- 1":  # not a scalar: a list
        assert read(tmp_path, f"v:\n  {text}\n")["v"] == [1]
        return
    value = read(tmp_path, f"v: {text}\n")["v"]
    assert value == expected and type(value) is type(expected)


def test_nan_and_a_yaml_1_1_directive(tmp_path: Path) -> None:
    assert math.isnan(read(tmp_path, "v: .NaN\n")["v"])
    # ruamel reads every file with the 1.2 rules, whatever the directive says
    assert read(tmp_path, "%YAML 1.1\n---\na: yes\nb: 010\n") == {"a": "yes", "b": 10}


def test_positions_of_keys_values_and_items(tmp_path: Path) -> None:
    doc = read(tmp_path, "flows:\n  one:\n    steps:\n      - log: 'hi'\n      - set: {var: x}\n")
    assert isinstance(doc, YamlMap) and isinstance(doc["flows"]["one"]["steps"], YamlSeq)
    file = tmp_path / "f.yaml"
    assert str(locate(file, doc, ("flows", "one"), key=True)) == f"{file}:2:3"
    assert str(locate(file, doc, ("flows", "one", "steps", 1))) == f"{file}:5:9"
    assert str(locate(file, doc, ("flows", "one", "steps", 0, "log"), text_offset=1)) == f"{file}:4:16"
    assert doc["flows"]["one"]["steps"][0].value_marks["log"] == (3, 13, 1)


def test_merge_keys_and_aliases(tmp_path: Path) -> None:
    doc = read(tmp_path, "base: &b {x: 1, y: 2}\nc: &c {q: 1}\nother:\n  <<: [*b, *c]\n  z: 3\nlist: [*b]\n")
    assert doc["other"] == {"x": 1, "y": 2, "q": 1, "z": 3} and doc["list"] == [{"x": 1, "y": 2}]
    assert doc["other"].key_marks["x"] == (0, 10)  # where the merged key was written
    assert read(tmp_path, "b: &b {x: 1}\no:\n  !!merge <<: *b\n")["o"] == {"x": 1}


@pytest.mark.parametrize(("text", "where", "message"), [
    ("a: 1\na: 2\n", "2:1", "duplicate key 'a' (first at line 1)"),
    ("1: a\ntrue: b\n", "2:1", "duplicate key True (first at line 1)"),
    ("? [a, b]\n: 1\n", "1:3", "a key must be a plain value, not a mapping or list"),
    ("a: [1, 2\n", "2:1", "while parsing a flow sequence did not find expected ',' or ']'"),
    ("a:\n\t- x\n", "2:1", "while scanning for the next token found character that cannot start any token"),
    ("a: 1\n---\nb: 2\n", "2:1", "expected a single document in the stream but found another document"),
    ("a: !custom foo\n", "1:4", "could not determine a constructor for the tag '!custom'"),
    ("a: *nope\n", "1:4", "found undefined alias"),
    ("a: <<\n", "1:4", "could not determine a constructor for the tag 'tag:yaml.org,2002:merge'"),
    ("a: -\n", "1:4", "block sequence entries are not allowed in this context"),
])
def test_errors_name_line_and_column(tmp_path: Path, text: str, where: str, message: str) -> None:
    with pytest.raises(YamlSyntaxError) as caught:
        read(tmp_path, text)
    assert str(caught.value) == f"{tmp_path / 'f.yaml'}:{where}: {message}"


def test_empty_files_and_bad_encoding(tmp_path: Path) -> None:
    assert read(tmp_path, "") is None and read(tmp_path, "# only a comment\n") is None
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"a: \xff\n")
    with pytest.raises(YamlSyntaxError, match=r"bad\.yaml:1:1: not UTF-8 text"):
        read_yaml(path)
