"""Loading a flow folder: parse, validate against the generated schema, compile.

Every error names its file, line and column and says what was expected; all of a folder's
errors are reported together, and a folder with any error never serves.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine.model import Endpoint, Flow, HttpSource, Location, Project, Sequence, SoapSource, SourceSpec
from engine.redact import without_userinfo
from engine.schema import STEP_META_KEYS, outline_schema
from engine.schemacheck import SchemaValidator
from engine.yamlio import YamlSyntaxError, locate, plain, read_yaml

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

FLOW_SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = (".test.yaml", ".test.yml")


@dataclass(frozen=True)
class LoadError:
    file: Path
    line: int
    column: int
    message: str

    @classmethod
    def at(cls, location: Location, message: str) -> LoadError:
        return cls(location.file, location.line, location.column, message)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class LoadErrors(Exception):
    """A flow folder that must not serve, with every error found in it."""

    def __init__(self, errors: list[LoadError]) -> None:
        self.errors = sorted(errors, key=lambda e: (str(e.file), e.line, e.column))
        super().__init__("\n".join(str(e) for e in self.errors))


def flow_files(root: Path) -> list[Path]:
    """The flow files of a folder: its own ``*.yaml``/``*.yml``, not test suites, not subfolders."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.iterdir()
                  if p.is_file() and p.name.endswith(FLOW_SUFFIXES) and not p.name.endswith(TEST_SUFFIXES)
                  and not p.name.startswith("."))


def load_project(root: Path, *, compile_flows: bool = True, serving: bool = False) -> Project:
    """Read, validate and (by default) compile every flow file of ``root``.

    Raises LoadErrors with everything wrong; the compiled form is on ``project.compiled``.
    Only ``serving=True`` (``interlace run``) needs the values of the ``${env.X}`` and
    ``${secret.X}`` the endpoints read; otherwise an unset one is a note on
    ``project.compiled.notes``.
    """
    root = Path(root)
    if not root.exists():
        raise LoadErrors([LoadError(root, 1, 1, "no such file or folder")])
    errors: list[LoadError] = []
    project = Project(root=root)
    files = flow_files(root)
    if not files:
        raise LoadErrors([LoadError(root, 1, 1, "no flow files (*.yaml) in this folder")])
    for file in files:
        project.files.append(file)
        try:
            document = read_yaml(file)
        except YamlSyntaxError as exc:
            errors.append(LoadError.at(exc.location, exc.message))
            continue
        if document is None or document == {}:
            # an emptied file is a mistake far more often than a wish (a truncated save, a bad merge):
            # it must not quietly take its flows away
            errors.append(LoadError(file, 1, 1, "the file is empty: a flow file declares flows, endpoints or "
                                                "sequences (delete the file to remove its flows)"))
            continue
        file_errors = schema_errors(file, document, _outline_validator())
        if file_errors:
            errors.extend(file_errors)
            _note_names(project, document)
            continue
        _collect(project, file, document, errors)
    _check_routes(project, errors)
    if not errors and not project.flows:
        errors.append(LoadError(root, 1, 1, f"no flows in {'this file' if root.is_file() else 'this folder'}: "
                                            f"there is nothing to serve (a flow file's flows: declares them)"))
    if compile_flows:
        # compiled even when some file is wrong, so that one pass reports every error: the
        # steps of the good files are checked too (names declared in the wrong ones still count)
        from engine.compiler import compile_project

        compiled = compile_project(project, serving=serving)
        errors.extend(compiled.errors)
        project.compiled = compiled
    if errors:
        raise LoadErrors(errors)
    return project


def _note_names(project: Project, document: Any) -> None:
    """The endpoint and sequence names of a file whose outline is wrong: declared, so the other
    files' steps that use them are not reported as naming unknown ones."""
    if not isinstance(document, dict):
        return
    for section, names in (("endpoints", project.broken_endpoints), ("sequences", project.broken_sequences)):
        value = document.get(section)
        if isinstance(value, dict):
            names.update(str(name) for name in value)


@cache
def _outline_validator() -> SchemaValidator:
    return SchemaValidator(outline_schema())


def _collect(project: Project, file: Path, doc: Any, errors: list[LoadError]) -> None:
    namespaces = {str(k): str(v) for k, v in (doc.get("namespaces") or {}).items()}
    if doc.get("settings") is not None:
        where = locate(file, doc, ("settings",), key=True)
        if project.settings_location is not None:
            errors.append(LoadError.at(where, f"settings are already declared at {project.settings_location}; "
                                              "declare them in one file of the folder"))
        else:
            from engine.settings import check

            project.settings = plain(doc["settings"])
            project.settings_location = where
            project.settings_node, project.settings_file = doc["settings"], file
            for path, message in check(project.settings, file.parent):
                errors.append(LoadError.at(locate(file, doc, ("settings", *path)), f"settings: {message}"))
    seen_flows = {f.name: f for f in project.flows}
    for name, node in (doc.get("endpoints") or {}).items():
        where = locate(file, doc, ("endpoints", name), key=True)
        if name in project.endpoints:
            errors.append(LoadError.at(where, f"endpoint {name!r} is already declared at "
                                              f"{project.endpoints[name].location}"))
            continue
        kind = next(iter(node))
        project.endpoints[name] = Endpoint(str(name), str(kind), plain(node[kind]), where, node)
    for name, node in (doc.get("sequences") or {}).items():
        where = locate(file, doc, ("sequences", name), key=True)
        if name in project.sequences:
            errors.append(LoadError.at(where, f"sequence {name!r} is already declared at "
                                              f"{project.sequences[name].location}"))
            continue
        if isinstance(node, dict):  # a template: {description, params, steps}
            project.sequences[name] = Sequence(str(name), node["steps"], namespaces, file, where,
                                               node.get("description"), plain(node.get("params") or {}))
        else:
            project.sequences[name] = Sequence(str(name), node, namespaces, file, where)
    for name, node in (doc.get("resources") or {}).items():
        _collect_resource(project, file, doc, str(name), node, errors)
        seen_flows.update({f.name: f for f in project.flows})
    for name, node in (doc.get("flows") or {}).items():
        where = locate(file, doc, ("flows", name), key=True)
        if name in seen_flows:
            errors.append(LoadError.at(where, f"flow {name!r} is already declared at {seen_flows[name].location}"))
            continue
        try:
            source = _http_source(node["source"].get("http"))
        except ValueError as exc:  # max_body: a size the schema's types let through (-1, 1e400)
            where = locate(file, node, ("source", "http", "max_body"))
            errors.append(LoadError.at(where, f"max_body: {exc}"))
            continue
        flow_ns = {**namespaces, **{str(k): str(v) for k, v in (node.get("namespaces") or {}).items()}}
        flow = Flow(str(name), node.get("description"), source, node["steps"], node.get("on_error"),
                    flow_ns, file, where, node, _soap_source(node["source"].get("soap")))
        other = next((k for k in node["source"] if k not in ("http", "soap")), None)
        if other is not None:
            flow.trigger = SourceSpec(str(other), plain(node["source"][other]),
                                      locate(file, node, ("source", other), key=True))
        project.flows.append(flow)
        seen_flows[flow.name] = flow


def _collect_resource(project: Project, file: Path, doc: Any, name: str, node: Any, errors: list[LoadError]) -> None:
    from engine.dataservice import read_resource, route_flows

    where = locate(file, doc, ("resources", name), key=True)
    try:
        resource = read_resource(name, plain(node), where)
    except ValueError as exc:
        errors.append(LoadError.at(locate(file, doc, ("resources", name, "key")), f"resource {name!r}: {exc}"))
        return
    taken = {f.name for f in project.flows}
    for flow in route_flows(resource, file, node):
        if flow.name in taken:
            errors.append(LoadError.at(where, f"resource {name!r}: its flow {flow.name!r} is already declared"))
            continue
        project.flows.append(flow)


_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?}")


def _http_source(node: Any) -> HttpSource | None:
    if node is None:
        return None
    methods = [str(m) for m in node.get("methods") or [node.get("method", "POST")]]
    path = str(node["path"])
    from engine.units import parse_size

    max_body = parse_size(node["max_body"]) if node.get("max_body") is not None else None
    return HttpSource(methods, path, _PARAM.findall(path), plain(node.get("request")), plain(node.get("responses")),
                      plain(node.get("query")), max_body)


def _soap_source(node: Any) -> SoapSource | None:
    if node is None:
        return None
    from engine.units import parse_size

    config = plain(node)
    max_body = parse_size(config.pop("max_body")) if config.get("max_body") is not None else None
    return SoapSource(**config, max_body=max_body)


def _route_key(path: str) -> str:
    """Two templates that match the same requests are the same route, whatever their names."""
    return _PARAM.sub("{}", path.rstrip("/") or "/")


def _check_routes(project: Project, errors: list[LoadError]) -> None:
    taken: dict[tuple[str, str], Flow] = {}
    for flow in project.flows:
        if flow.source is None:
            continue
        for method in flow.source.methods:
            key = (method, _route_key(flow.source.path))
            other = taken.get(key)
            if other is not None:
                where = locate(flow.file, flow.node, ("source", "http", "path"))
                errors.append(LoadError.at(where, f"duplicate route {method} {flow.source.path}: flow "
                                                  f"{other.name!r} at {other.location} serves it already"))
            else:
                taken[key] = flow
    for flow in project.flows:
        if flow.soap is None:
            continue
        for method in ("GET", "POST"):
            other = taken.get((method, _route_key(flow.soap.path)))
            if other is not None:
                where = locate(flow.file, flow.node, ("source", "soap", "path"))
                errors.append(LoadError.at(where, f"the SOAP service {flow.soap.path} takes {method} on its path, "
                                                  f"and flow {other.name!r} at {other.location} serves it already"))
                break


# --- turning jsonschema's errors into messages a person can act on -----------------------------


class Validator(Protocol):
    """jsonschema's validators, and engine.schemacheck.SchemaValidator."""

    def iter_errors(self, instance: Any) -> Iterator[ValidationError]: ...


def schema_errors(file: Path, node: Any, validator: Validator,
                  base: Iterable[Any] = ()) -> list[LoadError]:
    base = tuple(base)
    out = []
    for error in sorted(validator.iter_errors(node), key=lambda e: list(map(str, e.absolute_path))):
        path, message, on_key = describe(error)
        out.append(LoadError.at(locate(file, node, path, key=on_key) if not base
                                else locate(file, node, (*base, *path), key=on_key), message))
    return out


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) <= 80 else f"a string of {len(value)} characters"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def describe(error: ValidationError) -> tuple[list[Any], str, bool]:
    """(path to point at, message, whether to point at the key rather than the value).

    Messages quote the values they refuse; a URL's user and password never go with them."""
    path, message, on_key = _describe(error)
    return path, without_userinfo(message), on_key


def _describe(error: ValidationError) -> tuple[list[Any], str, bool]:
    path = list(error.absolute_path)
    validator = error.validator
    where = f" in {_path_text(path)}" if path else ""
    if validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in error.schema.get("properties", {})]
        key = extras[0] if extras else "?"
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        expected = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        return [*path, key], f"unknown key {key!r}{where}{suggestion}{expected}", True
    if validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else "?"
        return path, f"missing required key {missing!r}{where}", bool(path)
    if validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        words = " or ".join(_TYPE_WORDS.get(str(w), str(w)) for w in wanted)
        return path, f"expected {words}{where}, got {_type_name(error.instance)}", False
    if validator == "enum":
        options = ", ".join(map(str, error.validator_value))
        return path, f"expected one of {options}{where}, got {_type_name(error.instance)}", False
    if validator in ("minProperties", "maxProperties") and isinstance(error.instance, dict):
        names = sorted(error.schema.get("properties", {}))
        if validator == "maxProperties":
            return path, f"give only one of {', '.join(names)}{where}, not {', '.join(map(str, error.instance))}", \
                False
        return path, f"expected one of {', '.join(names)}{where}", False
    if validator == "propertyNames":
        return path, f"invalid name{where}: {error.message}", False
    if validator == "pattern":
        return path, f"{_type_name(error.instance)}{where} does not match the pattern {error.validator_value}", False
    if validator == "not" and isinstance(error.validator_value, dict) and "required" in error.validator_value:
        together = list(error.validator_value["required"])
        return path, f"give only one of {', '.join(map(str, together))}{where}, not both", False
    unknown = _no_step_kind(error)
    if unknown is not None:
        return unknown
    given = _exclusive_keys_given(error)
    if given:
        return path, f"give only one of {', '.join(given)}{where}, not {'both' if len(given) == 2 else 'several'}", \
            False
    if validator in ("oneOf", "anyOf") and error.context:
        meant = _meant_alternative(error.context, path)
        if meant is not None:  # the value is of the kind one alternative takes: say what else it broke
            return _describe(meant)
        # of no alternative's kind: list the kinds (an integer's bounds do not matter to 99.5)
        here = [e for e in error.context if list(e.absolute_path) == path and e.validator in _KIND_KEYWORDS]
        if here and all(e.validator in ("type", "pattern", "const") for e in here):
            wanted_words: list[str] = []
            for e in here:
                if e.validator == "type":
                    wanted = e.validator_value if isinstance(e.validator_value, list) else [e.validator_value]
                    wanted_words += [_TYPE_WORDS.get(str(w), str(w)) for w in wanted]
                elif e.validator == "pattern" and "\\$\\{" in str(e.validator_value):
                    wanted_words.append("a ${...} expression")
                elif e.validator == "const":
                    wanted_words.append(repr(e.validator_value))
            if wanted_words:
                unique = list(dict.fromkeys(wanted_words))
                return path, f"expected {' or '.join(unique)}{where}, got {_type_name(error.instance)}", False
        best = min(error.context, key=lambda e: len(list(e.absolute_path)) * -1)
        inner_path, inner, on_key = _describe(best)
        return inner_path, inner, on_key
    return path, f"{error.message}{where}", False


def unknown_step_kind(name: str, kinds: Iterable[str]) -> str:
    """What a step naming a kind the registry lacks is told (the compiler, and a check against
    the editors' schema, alike)."""
    known = list(kinds)
    hint = difflib.get_close_matches(name, known, n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown step kind {name!r}{suggestion}; expected one of: {', '.join(known)}"


def step_kind_count(named: list[Any], kinds: Iterable[str]) -> str:
    """What a step naming no kind, or several, is told."""
    message = ("a step needs one step kind" if not named
               else f"a step has one step kind, found {len(named)}: {', '.join(map(str, named))}")
    return f"{message} (kinds: {', '.join(kinds)})"


def _no_step_kind(error: ValidationError) -> tuple[list[Any], str, bool] | None:
    """A step of the editors' schema (project_schema: an anyOf of one alternative per kind, each
    titled and requiring its kind's key) naming no known kind: told as the compiler tells it
    (``unknown step kind 'lgo' (did you mean 'log'?)``), not with the first alternative's
    ``missing required key 'aggregate'``.  None for any other error."""
    alternatives = error.validator_value
    if error.validator not in ("anyOf", "oneOf") or not isinstance(error.instance, dict) \
            or not isinstance(alternatives, list) or not alternatives:
        return None
    kinds = [s.get("title") for s in alternatives if isinstance(s, dict) and s.get("required") == [s.get("title")]]
    if len(kinds) != len(alternatives) or any(kind in error.instance for kind in kinds):
        return None
    path = list(error.absolute_path)
    named = [key for key in error.instance if key not in STEP_META_KEYS]
    if len(named) != 1:
        return path, step_kind_count(named, map(str, kinds)), False
    return [*path, named[0]], unknown_step_kind(str(named[0]), map(str, kinds)), True


def _exclusive_keys_given(error: ValidationError) -> list[str]:
    """The keys given of a ``oneOf: [{required: [a]}, {required: [b]}]`` (keys that exclude each
    other) valid under several alternatives; [] for any other error."""
    alternatives = error.validator_value
    if error.validator != "oneOf" or error.context or not isinstance(error.instance, dict) \
            or not isinstance(alternatives, list) \
            or not all(isinstance(s, dict) and list(s) == ["required"] for s in alternatives):
        return []
    return [str(key) for s in alternatives for key in s["required"] if key in error.instance]


# What tells a oneOf's alternatives apart: a value failing one of these where it stands is not of
# the alternative's kind at all (a list given to "a string"), so that alternative is not the one meant.
_KIND_KEYWORDS = frozenset({"type", "const", "enum", "pattern"})


def _meant_alternative(context: Iterable[ValidationError], path: list[Any]) -> ValidationError | None:
    """The error to report from the alternative the value was meant for, or None when it is of no
    alternative's kind (then the message lists the kinds).

    ``keys: []`` against "a string, or a non-empty list" is meant for the list: its own error
    (minItems) is the cause, not the string's type.  Of several alternatives of the right kind, the
    one whose error lies deepest got furthest; its deepest error is reported, with its position."""
    by_alternative: dict[Any, list[ValidationError]] = {}
    for sub in context:
        index = sub.relative_schema_path[0] if sub.relative_schema_path else None
        by_alternative.setdefault(index, []).append(sub)
    meant = [subs for subs in by_alternative.values()
             if not any(s.validator in _KIND_KEYWORDS and list(s.absolute_path) == path for s in subs)]
    if not meant:
        return None
    deepest = [max(subs, key=lambda s: len(s.absolute_path)) for subs in meant]
    return max(deepest, key=lambda s: len(s.absolute_path))  # the first of equals: the schema's order


def _path_text(path: list[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
