"""Reading flow files with ruamel.yaml, keeping where every key and value came from."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from engine.model import Location


class YamlSyntaxError(ValueError):
    def __init__(self, location: Location, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def read_yaml(path: Path) -> Any:
    """Parse one file, keeping positions; a syntax error names its line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise YamlSyntaxError(Location(path, 1, 1), f"not UTF-8 text ({exc.reason})") from exc
    try:
        return _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise YamlSyntaxError(Location(path, line, column), problem) from exc
    except YAMLError as exc:
        raise YamlSyntaxError(Location(path, 1, 1), str(exc)) from exc


def locate(file: Path, node: Any, path: Iterable[Any] = (), *, key: bool = False) -> Location:
    """Where the value at ``path`` under ``node`` stands (or its key, with ``key=True``).

    Walks as deep as the path goes; where a step cannot be followed, the last known
    position stands in, so an error always points somewhere useful.
    """
    line, column = _own_position(node)
    current = node
    keys = list(path)
    for i, step in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(current, CommentedMap) and step in current:
            pos = current.lc.key(step) if (key and last) else current.lc.value(step)
            line, column = pos[0] + 1, pos[1] + 1
            current = current[step]
        elif isinstance(current, CommentedSeq) and isinstance(step, int) and 0 <= step < len(current):
            pos = current.lc.item(step)
            line, column = pos[0] + 1, pos[1] + 1
            current = current[step]
        else:
            break
    return Location(file, line, column)


def _own_position(node: Any) -> tuple[int, int]:
    lc = getattr(node, "lc", None)
    if lc is not None and lc.line is not None:
        return lc.line + 1, lc.col + 1
    return 1, 1


def plain(node: Any) -> Any:
    """The node as plain dicts, lists and scalars (for configs handed to runtime objects)."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node
