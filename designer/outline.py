"""What the canvas draws, read from a file's text: flows, their lanes of steps, endpoints.

Which keys of a step hold nested step lists (the lanes of ``choice``, ``try``, ``filter``...)
is read from each step kind's schema in the registry (a ``{"$ref": "#/$defs/steps"}``), so a
new step kind's branches are drawn without a change here.  Every step carries its path from
the document root (what the edits name), its first and last line (to place the loader's
``file:line:column`` messages on it) and its config as plain data (for the forms).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.registry import STEPS_REF, StepKind, step_kinds
from engine.schema import STEP_META_KEYS
from engine.yamlio import YamlMap, YamlSeq, parse_yaml, plain

Outline = dict[str, Any]


def parse(text: str, name: str) -> Any:
    return parse_yaml(text, Path(name))


def last_line(node: Any) -> int:
    """The last line (0-based) any key, value or item of ``node`` starts on."""
    line = getattr(node, "line", 0)
    if isinstance(node, YamlMap):
        for key in node:
            line = max(line, node.key_marks[key][0], node.value_marks[key][0], last_line(node[key]))
    elif isinstance(node, YamlSeq):
        for index, item in enumerate(node):
            line = max(line, node.item_marks[index][0], last_line(item))
    return line


def _is_steps_ref(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("$ref") == STEPS_REF["$ref"]


def lanes_of(schema: Any, config: Any, base: list[Any], branches: tuple[str, ...] = ()) -> list[tuple[list[Any], Any]]:
    """(path, step list or None) of every nested step list the schema declares in ``config``.

    A declared branch key that is absent still gives a lane (with None), so that a step can be
    dropped into an empty ``otherwise`` or ``catch``.
    """
    found: list[tuple[list[Any], Any]] = []
    if not isinstance(schema, dict):
        return found
    if _is_steps_ref(schema):
        return [(base, config if isinstance(config, list) else None)]
    for alternative in [*schema.get("oneOf", []), *schema.get("anyOf", [])]:
        found.extend(lanes_of(alternative, config, base))
    properties = schema.get("properties")
    if isinstance(properties, dict) and (isinstance(config, dict) or config is None):
        for key, sub in properties.items():
            if isinstance(config, dict) and key in config:
                found.extend(lanes_of(sub, config[key], [*base, key]))
            elif _is_steps_ref(sub) and key in branches:
                found.append(([*base, key], None))
    items = schema.get("items")
    if isinstance(items, dict) and isinstance(config, list):
        for index, item in enumerate(config):
            found.extend(lanes_of(items, item, [*base, index]))
    return found


def _lane_label(doc_config: Any, relative: list[Any]) -> str:
    """``steps``, ``catch``, ``when[1]: ${payload.x}``: the lane's key, with its condition if any."""
    label = "".join(f"[{part}]" if isinstance(part, int) else (f".{part}" if i else str(part))
                    for i, part in enumerate(relative))
    label = label.removesuffix(".steps") if len(relative) > 1 else label
    parent: Any = doc_config
    for part in relative[:-1]:
        parent = parent[part] if isinstance(parent, (dict, list)) else None
    if isinstance(parent, dict) and isinstance(parent.get("if"), str):
        label += f": {parent['if']}"
    return label


def summary(config: Any) -> str:
    """One line about a step's config, for its box on the canvas."""
    if isinstance(config, dict):
        for key in ("endpoint", "message", "if", "path", "var", "jmespath", "name", "status"):
            if key in config and not isinstance(config[key], (dict, list)):
                text = f"{key}: {config[key]}"
                break
        else:
            text = json.dumps(plain(config), ensure_ascii=False, default=str)
    else:
        text = json.dumps(plain(config), ensure_ascii=False, default=str) if not isinstance(config, str) else config
    return text if len(text) <= 60 else text[:57] + "..."


class _Builder:
    def __init__(self, kinds: dict[str, StepKind]) -> None:
        self.kinds = kinds

    def lane(self, key: str, label: str, path: list[Any], steps: Any, end_line: int) -> dict[str, Any]:
        items = []
        if isinstance(steps, YamlSeq):
            for index, item in enumerate(steps):
                start = steps.item_marks[index][0]
                next_start = steps.item_marks[index + 1][0] - 1 if index + 1 < len(steps) else None
                end = max(last_line(item), start) if next_start is None else max(next_start, start)
                items.append(self.step([*path, index], item, start, min(end, max(end_line, start))))
        return {"key": key, "label": label, "path": path, "steps": items}

    def step(self, path: list[Any], node: Any, start: int, end: int) -> dict[str, Any]:
        kinds = [k for k in node if k not in STEP_META_KEYS] if isinstance(node, dict) else []
        kind_name = str(kinds[0]) if len(kinds) == 1 else None
        kind = self.kinds.get(kind_name) if kind_name else None
        config = node.get(kind_name) if kind_name and isinstance(node, dict) else None
        out: dict[str, Any] = {
            "path": path, "kind": kind_name, "known": kind is not None,
            "id": node.get("id") if isinstance(node, dict) else None,
            "description": node.get("description") if isinstance(node, dict) else None,
            "line": start + 1, "end": end + 1, "config": plain(config), "summary": summary(config),
            "lanes": [],
        }
        if kind is not None:
            for relative, steps in lanes_of(kind.schema, config, [], kind.branches):
                lane_path = [*path, kind_name, *relative]
                out["lanes"].append(self.lane(str(relative[0]) if relative else "steps",
                                              _lane_label(config, relative), lane_path, steps, end))
        return out


def build_outline(doc: Any) -> Outline:
    """The canvas's view of a parsed file (``parse``'s result)."""
    builder = _Builder(step_kinds())
    outline: Outline = {"flows": [], "sequences": [], "endpoints": [], "namespaces": None}
    if not isinstance(doc, dict):
        return outline
    if isinstance(doc.get("namespaces"), dict):
        outline["namespaces"] = plain(doc["namespaces"])
    end_of_file = last_line(doc)
    for name, node in (doc.get("endpoints") or {}).items() if isinstance(doc.get("endpoints"), dict) else []:
        kind = next(iter(node), None) if isinstance(node, dict) else None
        outline["endpoints"].append({"name": str(name), "kind": kind, "path": ["endpoints", name],
                                     "line": doc["endpoints"].key_marks[name][0] + 1,
                                     "config": plain(node.get(kind)) if kind else None})
    for name, node in (doc.get("sequences") or {}).items() if isinstance(doc.get("sequences"), dict) else []:
        end = last_line(node) if node else doc["sequences"].key_marks[name][0]
        # a plain sequence is its step list; a template is {description, params, steps}
        template = isinstance(node, dict)
        steps_path = ["sequences", name, "steps"] if template else ["sequences", name]
        steps = node.get("steps") if template else node
        outline["sequences"].append({"name": str(name), "path": ["sequences", name],
                                     "line": doc["sequences"].key_marks[name][0] + 1, "end": end + 1,
                                     "template": template,
                                     "description": node.get("description") if template else None,
                                     "params": plain(node.get("params")) if template else None,
                                     "lanes": [builder.lane("steps", "steps", steps_path, steps, end)]})
    for name, node in (doc.get("flows") or {}).items() if isinstance(doc.get("flows"), dict) else []:
        if not isinstance(node, dict):
            continue
        end = min(last_line(node), end_of_file)
        flow = {"name": str(name), "path": ["flows", name], "line": doc["flows"].key_marks[name][0] + 1,
                "end": end + 1, "description": node.get("description"), "source": plain(node.get("source")),
                "lanes": [builder.lane("steps", "steps", ["flows", name, "steps"], node.get("steps"), end),
                          builder.lane("on_error", "on_error", ["flows", name, "on_error"], node.get("on_error"),
                                       end)]}
        outline["flows"].append(flow)
    return outline


def step_at(outline: Outline, line: int) -> list[Any] | None:
    """The path of the innermost step whose lines hold ``line`` (1-based)."""
    best: list[Any] | None = None

    def visit(lanes: list[dict[str, Any]]) -> None:
        nonlocal best
        for lane in lanes:
            for step in lane["steps"]:
                if step["line"] <= line <= step["end"]:
                    best = step["path"]
                    visit(step["lanes"])

    for flow in outline["flows"]:
        visit(flow["lanes"])
    for sequence in outline["sequences"]:
        visit(sequence["lanes"])
    return best
