"""Simple JSONPaths built without jsonpath-ng's parser are the trees the parser makes."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from jsonpath_ng.ext.parser import ExtendedJsonPathParser

from engine.steps.basic import parse_jsonpath, simple_jsonpath

PARSER = ExtendedJsonPathParser()
NAMES = ["a", "b1", "_", "_x", "customer_info", "len", "sorted", "this", "id", "in", "not", "and", "or", "sub",
         "split", "str", "keys", "where", "wherenot", "whereabouts", "true", "false", "trueish", "false_x", "True",
         "x-y", "@a", "1a", "é", "a b", "w"]


def tree(path: Any) -> Any:
    """Types and fields of a jsonpath-ng tree, all the way down."""
    if hasattr(path, "__dict__"):
        return type(path), {k: tree(v) for k, v in vars(path).items()}
    if isinstance(path, tuple):
        return tuple(tree(v) for v in path)
    return path


def outcome(path: Any) -> Any:
    document: dict[str, Any] = {"a": [{"b1": 1}], "_": {"x": 2}, "w": [[1], {"x": 3}]}
    try:
        return path.update_or_create(copy.deepcopy(document), 5)
    except Exception as exc:  # jsonpath-ng's own failures must be the same too
        return type(exc)


def candidates() -> list[str]:
    rng = random.Random(3)
    out = ["$", "$.", "$..a", "$[*]", "$.a[*]", "$['a']", "$[-1]", "$[01]", "$[0 ]", "$ .a", "$.a.", "a.b", "$.a[0]b",
           "$[1][2].c", "$.a[10].b[0]"]
    for name in NAMES:
        out += [f"$.{name}", f"$.a.{name}", f"$.{name}[0]", f"$[0].{name}"]
    for _ in range(300):
        text = "$"
        for _ in range(rng.randint(0, 4)):
            text += f".{rng.choice(NAMES)}" if rng.random() < 0.7 else f"[{rng.choice(['0', '1', '12', '007'])}]"
        out.append(text)
    return out


def test_simple_paths_are_the_parsers_trees() -> None:
    built = 0
    for text in candidates():
        simple = simple_jsonpath(text)
        if simple is None:
            continue
        built += 1
        parsed = PARSER.parse(text)
        assert tree(simple) == tree(parsed), text
        assert outcome(simple) == outcome(parsed), text
    assert built > 100


@pytest.mark.parametrize("text", ["$.where", "$.true", "$.false_x", "$[-1]", "$..a", "$['a']", "$.a[*]", "a.b"])
def test_the_rest_goes_to_the_parser(text: str) -> None:
    assert simple_jsonpath(text) is None


def test_parse_jsonpath_still_parses_everything_else() -> None:
    assert tree(parse_jsonpath("$.items[*].id")) == tree(PARSER.parse("$.items[*].id"))
    assert tree(parse_jsonpath("$.customer_info")) == tree(PARSER.parse("$.customer_info"))
