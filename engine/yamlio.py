"""Reading flow files with ruamel.yaml, keeping where every key and value came from.

Files are composed with ruamel's C parser (LibYAML, ruamel.yaml.clib) into nodes that carry
their marks, then built into dicts and lists that remember each entry's line and column.
This is ten times faster than ruamel's round-trip loader, which matters for start-up and reload.

The C composer asks Python for the tag of every node (``resolve``).  ruamel's
``VersionedResolver`` answers that through two properties and a table rebuilt per call, and
``construct_object`` then builds each scalar through its generic machinery; with 200 flow files
that was 0.2 s of start-up (docs/performance.md).  ``_Composer`` answers with YAML 1.2's
implicit rules looked up once (the same rules and order as ruamel's, which reads every file
as 1.2: a ``%YAML 1.1`` directive does not change them), and strings, the bulk of a flow
file, are taken as they are; every other scalar still goes through ruamel's SafeConstructor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import MappingEndEvent, MappingStartEvent, SequenceEndEvent, SequenceStartEvent, StreamEndEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import BaseResolver, implicit_resolvers
from ruamel.yaml.tag import Tag

from engine.model import Location

MERGE_TAG = "tag:yaml.org,2002:merge"

# A flow file is written by people: these are far beyond any real one (the largest example is
# 6 KiB, 9 levels deep, ~600 values) and far below what hurts the process.
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 64  # the schema check and the compiler walk nested values recursively: 64 stays far from the
#                 interpreter's recursion limit (1,000 frames) wherever a flow file is read
MAX_NODES = 250_000  # values in one file once aliases are expanded
MAX_ALIASES = 1_000  # expansions of anchored mappings and lists in one file (merge keys included)
COMPOSE_SAFE_DEPTH = 1_000  # the C composer recursed 20,000 levels safely in a worker thread; crashed at 50,000


class YamlSyntaxError(ValueError):
    def __init__(self, location: Location, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


class YamlMap(dict[Any, Any]):
    """A mapping that knows where it, its keys and its values stand (0-based line, column)."""

    line = 0
    column = 0

    def __init__(self) -> None:
        super().__init__()
        self.key_marks: dict[Any, tuple[int, int]] = {}
        self.value_marks: dict[Any, tuple[int, int, int]] = {}  # line, column, quote width


class YamlSeq(list[Any]):
    line = 0
    column = 0

    def __init__(self) -> None:
        super().__init__()
        self.item_marks: list[tuple[int, int, int]] = []


def _yaml() -> YAML:
    try:
        return YAML(typ="safe", pure=False)
    except Exception:  # pragma: no cover - only without ruamel.yaml.clib
        return YAML(typ="safe", pure=True)


# YAML 1.2's implicit scalar rules, by first character, in ruamel's order; one Tag object per
# tag so that a string scalar is recognised by identity.
_TAGS: dict[str, Tag] = {}


def _tag(name: str) -> Tag:
    return _TAGS.setdefault(name, Tag(suffix=name))


STR_TAG = _tag(str(BaseResolver.DEFAULT_SCALAR_TAG))
_SEQ_TAG = _tag(str(BaseResolver.DEFAULT_SEQUENCE_TAG))
_MAP_TAG = _tag(str(BaseResolver.DEFAULT_MAPPING_TAG))
_MERGE_TAG = _tag(MERGE_TAG)
Rules = list[tuple[Tag, Callable[[str], Any]]]


@cache
def _implicit_rules() -> tuple[dict[str, Rules], Rules]:
    """(rules by first character, rules for any first character), compiled on first use."""
    by_first: dict[str | None, Rules] = {}
    for versions, name, regexp, first in implicit_resolvers:
        if (1, 2) in versions:
            for ch in first or [None]:  # type: ignore[list-item]
                by_first.setdefault(ch, []).append((_tag(name), regexp.match))
    anywhere = by_first.get(None, [])
    return {ch: [*rules, *anywhere] for ch, rules in by_first.items() if ch is not None}, anywhere


try:
    from _ruamel_yaml import CParser  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - only without ruamel.yaml.clib
    CParser = None


if CParser is not None:
    class _Composer(CParser):  # type: ignore[misc]
        """ruamel's C parser and composer with a resolver that costs one dict lookup a scalar."""

        def resolve(self, kind: Any, value: Any, implicit: Any) -> Tag:
            if kind is ScalarNode:
                if implicit[0]:
                    by_first, anywhere = _implicit_rules()
                    for tag, match in by_first.get(value[:1], anywhere):
                        if match(value):
                            return tag
                return STR_TAG
            return _SEQ_TAG if kind is SequenceNode else _MAP_TAG

        def descend_resolver(self, current_node: Any, current_index: Any) -> None:
            pass

        def ascend_resolver(self) -> None:
            pass


# a line starting with this many spaces, tabs or block indicators (- ? :) may nest that deep
_DEEP_LINE = re.compile(rf"^[ \t?:-]{{{COMPOSE_SAFE_DEPTH // 4}}}", re.MULTILINE)


def _may_nest_too_deep(text: str) -> bool:
    """False when the text cannot nest past COMPOSE_SAFE_DEPTH: every flow collection opens with a
    bracket, and a block collection at depth d starts at a column of at least d / 2 - 1."""
    brackets = text.count("[") + text.count("{")
    return brackets > COMPOSE_SAFE_DEPTH // 2 or _DEEP_LINE.search(text) is not None


def _check_depth(text: str, path: Path) -> None:
    """Count nesting on the parser's events (no recursion) and refuse past MAX_DEPTH."""
    if CParser is None:  # pragma: no cover - the pure composer recurses in Python: RecursionError is caught
        return
    parser = CParser(text)
    depth = 0
    try:
        while True:
            event = parser.get_event()
            kind = type(event)
            if kind is MappingStartEvent or kind is SequenceStartEvent:
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    raise YamlSyntaxError(Location(path, mark.line + 1, mark.column + 1), _too_deep())
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                depth -= 1
            elif kind is StreamEndEvent:
                return
    except MarkedYAMLError:
        return  # composing stops at the same error, no deeper than counted so far: it reports it
    finally:
        parser.dispose()


def _too_deep() -> str:
    return (f"nested deeper than {MAX_DEPTH} levels (or an alias inside its own anchor): "
            f"a flow file nests a few levels; split the structure")


def _compose(text: str) -> Node | None:
    if CParser is None:  # pragma: no cover - only without ruamel.yaml.clib
        return _yaml().compose(text)  # type: ignore[no-any-return]
    composer = _Composer(text)
    try:
        return composer.get_single_node()  # type: ignore[no-any-return]
    finally:
        composer.dispose()


def _mark(node: Node) -> tuple[int, int, int]:
    quote = 1 if isinstance(node, ScalarNode) and node.style in ("'", '"') else 0
    return node.start_mark.line, node.start_mark.column, quote


class _V12:
    processing_version = (1, 2)


class _Scalars(SafeConstructor):
    """ruamel's SafeConstructor for the scalars that are not plain strings, as YAML 1.2."""

    @property
    def resolver(self) -> Any:
        return _V12


class _Builder:
    def __init__(self, path: Path) -> None:
        self._constructor: SafeConstructor | None = None
        self.path = path
        self.depth = 0
        self.budget = MAX_NODES  # values still allowed, aliases expanded
        self.aliases = 0
        self._built: set[int] = set()  # collection nodes built once already: seeing one again is an alias

    def _scalar(self, node: Node) -> Any:
        if node.ctag is STR_TAG:
            return node.value
        if self._constructor is None:
            self._constructor = _Scalars()
        try:
            return self._constructor.construct_object(node, deep=True)
        except MarkedYAMLError:
            raise
        except Exception as exc:  # ruamel's int()/float() of a tagged scalar (!!int 0x1Fz, !!int '') raw
            tag = str(node.tag).rpartition(":")[2]
            raise YamlSyntaxError(self._where(node), f"{node.value!r} is not a valid !!{tag} value") from exc

    def _enter(self, node: Node) -> None:
        """Count a collection against the limits before building it."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise YamlSyntaxError(self._where(node), _too_deep())
        self.budget -= len(node.value)
        if self.budget < 0:
            raise YamlSyntaxError(self._where(node), f"more than {MAX_NODES:,} values once aliases are expanded: "
                                                     f"a flow file holds a few thousand at most")
        key = id(node)
        if key in self._built:
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise YamlSyntaxError(self._where(node), f"the anchors are expanded more than {MAX_ALIASES:,} "
                                                         f"times in this file (a flow file needs a few)")
        else:
            self._built.add(key)

    def build(self, node: Node) -> Any:
        if node.ctag is STR_TAG:  # most of a flow file; only scalars get this tag object
            return node.value
        if isinstance(node, MappingNode):
            return self._mapping(node)
        if isinstance(node, SequenceNode):
            self._enter(node)
            seq = YamlSeq()
            seq.line, seq.column = node.start_mark.line, node.start_mark.column
            marks = seq.item_marks
            for item in node.value:
                seq.append(self.build(item))
                marks.append(_mark(item))
            self.depth -= 1
            return seq
        return self._scalar(node)

    def _mapping(self, node: MappingNode) -> YamlMap:
        self._enter(node)
        result = YamlMap()
        result.line, result.column = node.start_mark.line, node.start_mark.column
        key_marks, value_marks = result.key_marks, result.value_marks
        for key_node, value_node in node.value:
            if key_node.ctag is STR_TAG:
                key = key_node.value
            elif key_node.ctag is _MERGE_TAG or key_node.tag == MERGE_TAG:
                merged = self.build(value_node)
                for source in merged if isinstance(merged, list) else [merged]:
                    if isinstance(source, YamlMap):
                        for key, value in source.items():
                            if key not in result:
                                result[key] = value
                                key_marks[key] = source.key_marks[key]
                                value_marks[key] = source.value_marks[key]
                continue
            else:
                key = self.build(key_node)
                if isinstance(key, (dict, list)):
                    raise YamlSyntaxError(self._where(key_node), "a key must be a plain value, not a mapping or list")
            if key in result:
                first = key_marks[key]
                raise YamlSyntaxError(self._where(key_node), f"duplicate key {key!r} (first at line {first[0] + 1})")
            result[key] = self.build(value_node)
            mark = key_node.start_mark
            key_marks[key] = (mark.line, mark.column)
            value_marks[key] = _mark(value_node)
        self.depth -= 1
        return result

    def _where(self, node: Node) -> Location:
        return Location(self.path, node.start_mark.line + 1, node.start_mark.column + 1)


def read_yaml(path: Path) -> Any:
    """Parse one file, keeping positions; a syntax error or a limit passed names its line and column."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise YamlSyntaxError(Location(path, 1, 1), f"the file is {size:,} bytes, more than the "
                                                        f"{MAX_FILE_BYTES // 1024 // 1024} MiB a flow file may have")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise YamlSyntaxError(Location(path, 1, 1), f"not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise YamlSyntaxError(Location(path, 1, 1), f"cannot read the file: {exc.strerror or exc}") from exc
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> Any:
    """``read_yaml`` of text already read (the designer parses the text it is editing)."""
    if len(text) > MAX_FILE_BYTES:
        raise YamlSyntaxError(Location(path, 1, 1), f"the text is {len(text):,} characters, more than the "
                                                    f"{MAX_FILE_BYTES // 1024 // 1024} MiB a flow file may have")
    try:
        if _may_nest_too_deep(text):
            _check_depth(text, path)
        node = _compose(text)
        return None if node is None else _Builder(path).build(node)
    except RecursionError as exc:  # pragma: no cover - only the pure-Python composer recurses in Python
        raise YamlSyntaxError(Location(path, 1, 1), _too_deep()) from exc
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise YamlSyntaxError(Location(path, line, column), problem) from exc
    except YAMLError as exc:
        raise YamlSyntaxError(Location(path, 1, 1), str(exc)) from exc


def locate(file: Path, node: Any, path: Iterable[Any] = (), *, key: bool = False, text_offset: int = 0) -> Location:
    """Where the value at ``path`` under ``node`` stands (or its key, with ``key=True``).

    Walks as deep as the path goes; where a step cannot be followed, the last known
    position stands in, so an error always points somewhere useful.  ``text_offset`` moves
    into a scalar's text (past its opening quote), for errors inside an expression.
    """
    line, column = getattr(node, "line", 0), getattr(node, "column", 0)
    quote = 0
    current = node
    keys = list(path)
    reached = True
    for i, step in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(current, YamlMap) and step in current:
            if key and last:
                line, column = current.key_marks[step]
                quote = 0
            else:
                line, column, quote = current.value_marks[step]
            current = current[step]
        elif isinstance(current, YamlSeq) and isinstance(step, int) and 0 <= step < len(current):
            line, column, quote = current.item_marks[step]
            current = current[step]
        else:
            reached = False
            break
    if text_offset and reached and isinstance(current, str) and "\n" not in current:
        column += quote + text_offset
    return Location(file, line + 1, column + 1)


def plain(node: Any) -> Any:
    """The node as plain dicts, lists and scalars (for configs handed to runtime objects)."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node
