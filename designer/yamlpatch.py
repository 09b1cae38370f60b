"""Edits applied to a YAML file as text splices, so that nothing the edit does not touch moves.

The designer never regenerates a file.  Each edit names a place by its path from the document
root (mapping keys and list indices) and is applied to the text: the file is composed with
ruamel (nodes with their start and end marks), the span of the node concerned is found, and
only that span is replaced, removed or extended.  Comments, key order, blank lines, quoting,
anchors and keys the designer does not know stay byte for byte as they were.

Every edit is checked afterwards: the new text must parse to the old document with exactly
that one change.  If a splice cannot guarantee that (an unusual layout), the edit is refused
with a message rather than applied approximately.

Edits (JSON objects, as the designer's front end sends them)::

    {"op": "set", "path": [...], "value": V}            replace a value, or add a mapping key
    {"op": "remove", "path": [...]}                      remove a mapping key or a list item
    {"op": "insert", "path": [..., list], "index": i, "value": V}   insert into a list
    {"op": "move", "from": [...], "path": [..., list], "index": i}  move a list item (its text,
                                                                    comments included)
    {"op": "text", "text": "..."}                        the whole text, as typed in the source view
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Path = list[Any]
INDENT = 2


class PatchError(ValueError):
    """An edit that cannot be applied; the message says why and what to do instead."""


def _loader() -> YAML:
    try:
        return YAML(typ="safe", pure=False)
    except Exception:  # pragma: no cover - only without ruamel.yaml.clib
        return YAML(typ="safe", pure=True)


def compose(text: str) -> Node | None:
    try:
        return _loader().compose(text)  # type: ignore[no-any-return]
    except YAMLError as exc:
        raise PatchError(f"the file is not valid YAML, so it cannot be edited from the drawing: {exc}") from exc


def load_plain(text: str) -> Any:
    try:
        return _loader().load(text)
    except YAMLError as exc:
        raise PatchError(f"not valid YAML: {exc}") from exc


# --- serialising new values -------------------------------------------------------------------

_PLAIN_UNSAFE = re.compile(r"^[\s\-?:,\[\]{}#&*!|>'\"%@`]|[:#]\s|\s#|:$|\s$|^$|[\n\r\t]")


def scalar_text(value: Any, style: str | None = None) -> str:
    """One scalar in YAML, plain where that reads back as the same value, else quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    text = str(value)
    if style == "'" and "\n" not in text:
        return "'" + text.replace("'", "''") + "'"
    if style == '"':
        return json.dumps(text, ensure_ascii=False)
    if not _PLAIN_UNSAFE.search(text):
        try:
            if _loader().load(f"k: {text}\n") == {"k": text}:
                return text
        except YAMLError:
            pass
    return json.dumps(text, ensure_ascii=False)


def flow_text(value: Any, style: str | None = None) -> str:
    """A value on one line, in YAML's flow style."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key_text(k)}: {flow_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow_text(v) for v in value) + "]"
    text = scalar_text(value, style)
    if isinstance(value, str) and text[:1] not in ("'", '"'):
        try:
            if _loader().load(f"[{text}]") == [value]:
                return text
        except YAMLError:
            pass
        return json.dumps(value, ensure_ascii=False)
    return text


def _key_text(key: Any) -> str:
    return scalar_text(key) if not isinstance(key, str) else (
        key if re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_.$/-]*", key) else json.dumps(key, ensure_ascii=False))


def block_lines(value: Any) -> list[str]:
    """A value in block style, as lines relative to column 0 (a scalar is one line)."""
    if isinstance(value, dict) and value:
        lines: list[str] = []
        for key, item in value.items():
            head = f"{_key_text(key)}:"
            if isinstance(item, (dict, list)) and item:
                lines.append(head)
                lines.extend(" " * INDENT + line for line in block_lines(item))
            elif isinstance(item, str) and "\n" in item and _literal_ok(item):
                lines.append(head + " " + _literal_header(item))
                lines.extend(" " * INDENT + line for line in item.rstrip("\n").split("\n"))
            else:
                lines.append(f"{head} {_block_scalar(item)}")
        return lines
    if isinstance(value, list) and value:
        lines = []
        for item in value:
            inner = block_lines(item) if isinstance(item, (dict, list)) and item else [_block_scalar(item)]
            lines.append("- " + inner[0])
            lines.extend("  " + line for line in inner[1:])
        return lines
    return [flow_text(value)]


def _block_scalar(value: Any) -> str:
    return flow_text(value) if isinstance(value, (dict, list)) else scalar_text(value)


def _literal_ok(text: str) -> bool:
    return not text.startswith((" ", "\n")) and all(line == line.rstrip() for line in text.split("\n"))


def _literal_header(text: str) -> str:
    return "|" if text.endswith("\n") and not text.endswith("\n\n") else "|-"


def _indent(lines: list[str], column: int, first: bool = False) -> str:
    pad = " " * column
    return "\n".join((pad if (i or first) and line else "") + line for i, line in enumerate(lines))


# --- finding spans ---------------------------------------------------------------------------

@dataclass
class _Found:
    node: Node
    parent: Node | None
    key: Any  # the key in the parent mapping, or index in the parent list
    key_node: Node | None = None


def _walk(root: Node, path: Path) -> _Found:
    node: Node = root
    parent: Node | None = None
    key: Any = None
    key_node: Node | None = None
    for step in path:
        parent, key = node, step
        if isinstance(node, MappingNode):
            entry = _entry(node, step)
            if entry is None:
                raise PatchError(f"no key {step!r} at {_path_text(path)}")
            key_node, node = entry
        elif isinstance(node, SequenceNode):
            if not isinstance(step, int) or not 0 <= step < len(node.value):
                raise PatchError(f"no item {step!r} at {_path_text(path)}")
            key_node, node = None, node.value[step]
        else:
            raise PatchError(f"{_path_text(path)} goes into a plain value")
    return _Found(node, parent, key, key_node)


def _entry(node: MappingNode, key: Any) -> tuple[Node, Node] | None:
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.value == str(key):
            return key_node, value_node
    return None


def _path_text(path: Path) -> str:
    return "/".join(map(str, path)) or "(the document)"


def _content_end(text: str, node: Node) -> int:
    """Where the node's own text ends: its end mark without trailing blank lines and comments."""
    end: int = node.end_mark.index
    if isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        end = _content_end(text, last[1] if isinstance(node, MappingNode) else last)
        return max(end, int(node.start_mark.index))
    while end > node.start_mark.index and text[end - 1] in " \t\r\n":
        end -= 1
    return end


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    """The index of the newline ending the line that holds ``index`` (or the text's end)."""
    end = text.find("\n", index)
    return len(text) if end < 0 else end


def _column(text: str, index: int) -> int:
    return index - _line_start(text, index)


def _only_spaces_before(text: str, index: int) -> bool:
    return text[_line_start(text, index):index].strip() == ""


def _anchor(text: str, start: int) -> int:
    """Where an entry begins, with the comment lines right above it (no blank line between)."""
    column = _column(text, start)
    if not _only_spaces_before(text, start):
        return start
    anchor = start
    line_start = _line_start(text, start)
    while line_start > 0:
        prev_start = _line_start(text, line_start - 1)
        line = text[prev_start:line_start - 1]
        stripped = line.lstrip(" ")
        if stripped.startswith("#") and len(line) - len(stripped) == column:
            anchor = prev_start + column
            line_start = prev_start
        else:
            break
    return anchor


def _item_start(text: str, seq: SequenceNode, index: int) -> int:
    """Where a block list's item begins: its dash."""
    start = seq.value[index].start_mark.index
    dash = text.rfind("-", 0, start)
    if dash < 0 or text[dash + 1:start].strip():
        raise PatchError("a list item without its dash where it was expected; edit the YAML directly")
    return dash


def _entry_start(text: str, node: Node, index: int) -> int:
    if isinstance(node, SequenceNode):
        return _item_start(text, node, index)
    return int(node.value[index][0].start_mark.index)


def _entry_end(text: str, node: Node, index: int) -> int:
    item = node.value[index]
    return _content_end(text, item[1] if isinstance(node, MappingNode) else item)


# --- the edits ------------------------------------------------------------------------------

def apply_edits(text: str, edits: list[dict[str, Any]]) -> str:
    """Apply the edits in order; each is checked against the document it must produce."""
    for edit in edits:
        text = apply_edit(text, edit)
    return text


def apply_edit(text: str, edit: dict[str, Any]) -> str:
    op = edit.get("op")
    if op == "text":
        new_text = edit.get("text")
        if not isinstance(new_text, str):
            raise PatchError("a text edit needs the whole text")
        return new_text
    before = load_plain(text)
    expected = copy.deepcopy(before)
    path = _path(edit, "path")
    if op == "set":
        _set(expected, path, edit.get("value"))
        new_text = _splice_set(text, path, edit.get("value"))
    elif op == "remove":
        _remove(expected, path)
        new_text = _splice_remove(text, path)
    elif op == "insert":
        index = _index(edit)
        _insert(expected, path, index, edit.get("value"))
        new_text = _splice_insert(text, path, index, edit.get("value"))
    elif op == "move":
        source = _path(edit, "from")
        index = _index(edit)
        value = _get(expected, source)
        new_text = _splice_move(text, source, path, index)
        _remove(expected, source)
        _insert(expected, _shift_after_remove(source, path), _shift_index(source, path, index), value)
    else:
        raise PatchError(f"unknown edit {op!r}; expected set, remove, insert, move or text")
    after = load_plain(new_text)
    if after != expected:
        raise PatchError(f"the edit at {_path_text(path)} could not be applied to this file's layout without "
                         f"rewriting it; make this change in the YAML view")
    return new_text


def _path(edit: dict[str, Any], key: str) -> Path:
    path = edit.get(key)
    if not isinstance(path, list) or not all(isinstance(p, (str, int)) and not isinstance(p, bool) for p in path):
        raise PatchError(f"{key!r} must be a list of keys and indices")
    return path


def _index(edit: dict[str, Any]) -> int:
    index = edit.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise PatchError("'index' must be a whole number, 0 or more")
    return index


def _shift_after_remove(source: Path, target: Path) -> Path:
    """The target list's path once the source item is gone (an earlier sibling shifts it)."""
    parent, removed = source[:-1], source[-1]
    if len(target) > len(parent) and target[:len(parent)] == parent and isinstance(target[len(parent)], int) \
            and isinstance(removed, int) and target[len(parent)] > removed:
        return [*parent, target[len(parent)] - 1, *target[len(parent) + 1:]]
    return target


def _shift_index(source: Path, target: Path, index: int) -> int:
    if source[:-1] == target and isinstance(source[-1], int) and source[-1] < index:
        return index - 1
    return index


# the expected document, on plain data

def _get(doc: Any, path: Path) -> Any:
    for index, step in enumerate(path):
        try:
            doc = doc[_plain_key(doc, step)]
        except (KeyError, IndexError, TypeError):
            raise PatchError(f"nothing at {_path_text(path[:index + 1])}") from None
    return doc


def _plain_key(container: Any, step: Any) -> Any:
    if isinstance(container, dict) and step not in container:
        for key in container:
            if str(key) == str(step):
                return key
    return step


def _set(doc: Any, path: Path, value: Any) -> None:
    if not path:
        raise PatchError("set needs a path below the document")
    parent = _get(doc, path[:-1])
    if isinstance(parent, list) and not (isinstance(path[-1], int) and 0 <= path[-1] < len(parent)):
        raise PatchError(f"no item {path[-1]!r} at {_path_text(path)}")
    if not isinstance(parent, (dict, list)):
        raise PatchError(f"{_path_text(path[:-1])} is a plain value")
    parent[_plain_key(parent, path[-1])] = value


def _remove(doc: Any, path: Path) -> None:
    if not path:
        raise PatchError("the document itself cannot be removed")
    _get(doc, path)
    parent = _get(doc, path[:-1])
    del parent[_plain_key(parent, path[-1])]


def _insert(doc: Any, path: Path, index: int, value: Any) -> None:
    parent = _get(doc, path[:-1]) if path else None
    target = _get(doc, path) if parent is None or _plain_key(parent, path[-1]) in parent else None
    if target is None:
        if parent is None:
            raise PatchError("insert needs a list")
        parent[_plain_key(parent, path[-1])] = [value]
        return
    if not isinstance(target, list):
        raise PatchError(f"{_path_text(path)} is not a list")
    if index > len(target):
        raise PatchError(f"index {index} is past the end of {_path_text(path)} ({len(target)} items)")
    target.insert(index, value)


# the splices

def _root(text: str) -> Node:
    root = compose(text)
    if root is None:
        raise PatchError("the file is empty")
    return root


def _splice(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def _splice_set(text: str, path: Path, value: Any) -> str:
    root = _root(text)
    parent = _walk(root, path[:-1]).node
    last = path[-1]
    if isinstance(parent, MappingNode):
        entry = _entry(parent, last)
        if entry is None:
            return _add_key(text, parent, last, value)
        return _replace_value(text, entry[1], value, parent, entry[0])
    if isinstance(parent, SequenceNode) and isinstance(last, int) and 0 <= last < len(parent.value):
        return _replace_value(text, parent.value[last], value, parent, None)
    raise PatchError(f"nothing to set at {_path_text(path)}")


def _replace_value(text: str, node: Node, value: Any, parent: Node, key_node: Node | None) -> str:
    start, end = node.start_mark.index, _content_end(text, node)
    empty = isinstance(node, ScalarNode) and node.value == "" and not node.style
    flow_parent = bool(getattr(parent, "flow_style", False))
    if flow_parent or (isinstance(node, (MappingNode, SequenceNode)) and node.flow_style and node.value
                       and len(flow_text(value)) <= 100):
        style = node.style if isinstance(node, ScalarNode) and isinstance(value, str) else None
        return _splice(text, start, end if not empty else start, flow_text(value, style))
    if not isinstance(value, (dict, list)) or not value:
        style = node.style if isinstance(node, ScalarNode) and isinstance(value, str) else None
        if isinstance(value, str) and "\n" in value and _literal_ok(value) and key_node is not None:
            column = _column(text, key_node.start_mark.index) + INDENT
            body = _indent(value.rstrip("\n").split("\n"), column, first=True)
            new = _literal_header(value) + "\n" + body
        else:
            new = scalar_text(value, style) if not isinstance(value, (dict, list)) else flow_text(value)
        if empty:
            return _splice(text, start, start, " " + new if text[start - 1:start] == ":" else new)
        return _splice(text, start, end, new)
    lines = block_lines(value)
    if key_node is not None:
        # a mapping's value: on the lines below the key, one level in
        column = _column(text, key_node.start_mark.index) + INDENT
        colon = text.find(":", key_node.end_mark.index)
        comment_end = _line_end(text, colon)
        if empty or start > comment_end:
            # keep a comment after the colon; replace from the end of that line
            new_start = comment_end if "#" in text[colon:comment_end] else colon + 1
            return _splice(text, new_start, end if not empty else start, "\n" + _indent(lines, column, first=True))
        return _splice(text, colon + 1, end, "\n" + _indent(lines, column, first=True))
    # a list item: the first line after the dash, the rest at the item's column
    column = _column(text, start)
    return _splice(text, start, end, _indent(lines, column))


def _add_key(text: str, mapping: MappingNode, key: Any, value: Any) -> str:
    entry = f"{_key_text(key)}: "
    if mapping.flow_style or not mapping.value:
        inner = f"{_key_text(key)}: {flow_text(value)}"
        if not mapping.value:
            # {} (or an empty mapping) becomes a flow mapping with one key
            return _splice(text, mapping.start_mark.index, mapping.end_mark.index, "{" + inner + "}")
        close = text.rfind("}", 0, mapping.end_mark.index)
        last_end = _entry_end(text, mapping, len(mapping.value) - 1)
        return _splice(text, last_end, last_end, ", " + inner) if close >= last_end else text
    column = _column(text, mapping.value[0][0].start_mark.index)
    last_end = _line_end(text, _entry_end(text, mapping, len(mapping.value) - 1))
    lines = block_lines({key: value})
    del entry
    return _splice(text, last_end, last_end, "\n" + _indent(lines, column, first=True))


def _splice_remove(text: str, path: Path) -> str:
    if not path:
        raise PatchError("the document itself cannot be removed")
    root = _root(text)
    parent = _walk(root, path[:-1]).node
    last = path[-1]
    if isinstance(parent, MappingNode):
        keys = [k.value for k, _ in parent.value]
        if str(last) not in keys:
            raise PatchError(f"no key {last!r} at {_path_text(path)}")
        index = keys.index(str(last))
    elif isinstance(parent, SequenceNode) and isinstance(last, int) and 0 <= last < len(parent.value):
        index = last
    else:
        raise PatchError(f"nothing to remove at {_path_text(path)}")
    return _remove_entry(text, parent, index)


def _remove_entry(text: str, parent: Node, index: int) -> str:
    count = len(parent.value)
    if count == 1:
        empty = "{}" if isinstance(parent, MappingNode) else "[]"
        return _replace_collection_with(text, parent, empty)
    if getattr(parent, "flow_style", False):
        if index < count - 1:
            return _splice(text, _entry_start(text, parent, index), _entry_start(text, parent, index + 1), "")
        return _splice(text, _entry_end(text, parent, index - 1), _entry_end(text, parent, index), "")
    own_start = _entry_start(text, parent, index)
    if _only_spaces_before(text, own_start):
        # the entry's own lines (with the comments right above it); blank lines around stay
        start = _line_start(text, _anchor(text, own_start))
        end = min(len(text), _line_end(text, _entry_end(text, parent, index)) + 1)
        return _splice(text, start, end, "")
    if index < count - 1:
        # the first key of a list item, on the dash's line: the next key takes its place
        return _splice(text, own_start, _anchor(text, _entry_start(text, parent, index + 1)), "")
    start = _line_end(text, _entry_end(text, parent, index - 1))
    end = _line_end(text, _entry_end(text, parent, index))
    return _splice(text, start, end, "")


def _replace_collection_with(text: str, node: Node, new: str) -> str:
    """An emptied block collection: written as {} or [] right after its key's colon."""
    if getattr(node, "flow_style", False):
        return _splice(text, node.start_mark.index, node.end_mark.index, new)
    start = node.start_mark.index
    if isinstance(node, SequenceNode):
        start = _item_start(text, node, 0)
    end = _line_end(text, _content_end(text, node))  # with a comment after the last entry
    before = text.rfind(":", 0, start)
    between = text[before + 1:start] if before >= 0 else "x"
    if before >= 0 and between.strip() == "":
        return _splice(text, before + 1, end, " " + new)
    return _splice(text, start, end, new)


def _splice_insert(text: str, path: Path, index: int, value: Any) -> str:
    root = _root(text)
    try:
        found = _walk(root, path)
    except PatchError:
        if not path:
            raise
        return _splice_set(text, path, [value])
    seq = found.node
    if isinstance(seq, ScalarNode) and seq.value == "" and not seq.style:
        return _splice_set(text, path, [value])
    if not isinstance(seq, SequenceNode):
        raise PatchError(f"{_path_text(path)} is not a list")
    count = len(seq.value)
    if index > count:
        raise PatchError(f"index {index} is past the end of {_path_text(path)} ({count} items)")
    if not seq.value:
        return _splice_set(text, path, [value])
    if seq.flow_style:
        if index < count:
            at = seq.value[index].start_mark.index
            return _splice(text, at, at, flow_text(value) + ", ")
        at = _content_end(text, seq.value[-1])
        return _splice(text, at, at, ", " + flow_text(value))
    return _insert_block_item(text, seq, index, block_lines([value]))


def _insert_block_item(text: str, seq: SequenceNode, index: int, lines: list[str]) -> str:
    dash = _item_start(text, seq, 0)
    column = _column(text, dash)
    if not _only_spaces_before(text, dash):
        raise PatchError("a list that starts on its parent's line; edit the YAML directly")
    if index < len(seq.value):
        at = _anchor(text, _item_start(text, seq, index))
        # at is at the item's column on its line: insert whole lines before it
        line = _line_start(text, at)
        return _splice(text, line, line, _indent(lines, column, first=True) + "\n")
    at = _line_end(text, _content_end(text, seq.value[-1]))
    return _splice(text, at, at, "\n" + _indent(lines, column, first=True))


def _item_text(text: str, seq: SequenceNode, index: int) -> tuple[int, int, list[str]]:
    """A block list item's lines (with the comments right above it), relative to its column."""
    dash = _item_start(text, seq, index)
    if not _only_spaces_before(text, dash):
        raise PatchError("a list item that shares its line; edit the YAML directly")
    column = _column(text, dash)
    start = _line_start(text, _anchor(text, dash))
    end = _line_end(text, _content_end(text, seq.value[index]))
    lines = text[start:end].split("\n")
    out = []
    for line in lines:
        if line[:column].strip():
            raise PatchError("a list item whose lines are indented less than its dash; edit the YAML directly")
        out.append(line[column:])
    return start, end, out


def _splice_move(text: str, source: Path, target: Path, index: int) -> str:
    if source[:len(source) - 1] == target and isinstance(source[-1], int) and source[-1] in (index, index - 1):
        return text  # dropped where it already was
    if source == target[:len(source)]:
        raise PatchError("a step cannot be moved into itself")
    root = _root(text)
    found = _walk(root, source)
    seq = found.parent
    if not isinstance(seq, SequenceNode) or not isinstance(found.key, int):
        raise PatchError(f"{_path_text(source)} is not a list item")
    if seq.flow_style:
        value = _get(load_plain(text), source)
        text = _splice_remove(text, source)
        return _splice_insert(text, _shift_after_remove(source, target), _shift_index(source, target, index), value)
    _, _, lines = _item_text(text, seq, found.key)
    text = _splice_remove(text, source)
    target = _shift_after_remove(source, target)
    index = _shift_index(source, target, index)
    root = _root(text)
    try:
        target_node = _walk(root, target).node
    except PatchError:
        target_node = None
    if isinstance(target_node, SequenceNode) and target_node.value and not target_node.flow_style:
        return _insert_block_item(text, target_node, index, lines)
    # an empty or missing list: a fresh block list holding the item's text
    value = load_plain("\n".join(lines))
    value = value[0] if isinstance(value, list) and value else value
    return _splice_set(text, target, [value])
