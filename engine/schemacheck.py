"""Checking documents against the engine's own JSON Schemas without jsonschema on the way.

Start-up validates every flow file against the outline schema and every step against its
kind's schema.  jsonschema's validator interprets the schema at every node (a dispatch per
keyword, an evolved validator per subschema, a generator per keyword) and costs 0.1 s to
import; with 200 flow files the validation alone took 0.1-0.3 s (docs/performance.md).

``SchemaValidator`` compiles a schema once into nested Python closures that only answer
"valid or not", with draft 2020-12's meaning of every keyword it knows (the ones the
registries' schemas use).  When a document is valid, that is all that runs.  When it is not,
jsonschema, imported then, validates the document again and produces the errors, so every
message and position is what jsonschema reports.  A schema with a keyword the compiler does not
know is left to jsonschema whole.

The compiled check must never call valid what jsonschema calls invalid (``not`` and ``oneOf``
need both answers right, so every keyword is exact, not merely conservative);
``tests/unit/test_schemacheck.py`` compares the two on the registries' schemas and on
generated documents.  Equality (``enum``, ``const``, ``uniqueItems``) follows jsonschema's
``_utils.equal`` and ``uniq``: ``True`` is not ``1``, ``1`` is ``1.0``.
"""

from __future__ import annotations

import itertools
import numbers
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

Check = Callable[[Any], bool]

# Keywords that never make a document invalid (annotations, and format, which jsonschema only
# checks when given a format checker, and the loader gives none).
_ANNOTATIONS = frozenset({"$schema", "$comment", "$defs", "title", "description", "default", "examples",
                          "deprecated", "readOnly", "writeOnly", "format", "markdownDescription"})


class Unsupported(Exception):
    """A schema (or part of one) the compiler does not handle; jsonschema handles it instead."""


def _always(_: Any) -> bool:
    return True


def _never(_: Any) -> bool:
    return False


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Number)


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": _is_integer,
    "number": _is_number,
}

_TRUE, _FALSE = object(), object()


def _unbool(value: Any) -> Any:
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    return value


def equal(one: Any, two: Any) -> bool:
    """jsonschema's equality: True is not 1, containers compared member by member."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(equal(i, j) for i, j in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(key in two and equal(value, two[key]) for key, value in one.items())
    return bool(_unbool(one) == _unbool(two))


def unique(items: list[Any]) -> bool:
    """jsonschema's ``uniq``: sorted neighbours compared, or every pair when items do not sort."""
    try:
        ordered = sorted(_unbool(i) for i in items)
        return not any(equal(i, j) for i, j in zip(ordered, itertools.islice(ordered, 1, None), strict=False))
    except (NotImplementedError, TypeError):
        seen: list[Any] = []
        for item in items:
            item = _unbool(item)
            if any(equal(i, item) for i in seen):
                return False
            seen.append(item)
        return True


class _Compiler:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def compile(self, schema: Any, *, root: bool = False) -> Check:
        if schema is True:
            return _always
        if schema is False:
            return _never
        if not isinstance(schema, dict):
            raise Unsupported(f"schema {schema!r}")
        known = {"type", "enum", "const", "properties", "additionalProperties", "required", "minProperties",
                 "maxProperties", "propertyNames", "items", "minItems", "maxItems", "uniqueItems", "pattern",
                 "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                 "anyOf", "oneOf", "allOf", "not", "$ref"}
        for key in schema:
            if key not in known and key not in _ANNOTATIONS and not (root and key == "$id"):
                raise Unsupported(key)
        checks: list[Check] = []
        if "type" in schema:
            checks.append(self._type(schema["type"]))
        if "enum" in schema:
            checks.append(self._enum(schema["enum"]))
        if "const" in schema:
            const = schema["const"]
            checks.append(lambda v: equal(v, const))
        obj = self._object(schema)
        if obj is not None:
            checks.append(obj)
        arr = self._array(schema)
        if arr is not None:
            checks.append(arr)
        text = self._string(schema)
        if text is not None:
            checks.append(text)
        number = self._number(schema)
        if number is not None:
            checks.append(number)
        if "allOf" in schema:
            subs = [self.compile(s) for s in schema["allOf"]]
            checks.append(lambda v: all(c(v) for c in subs))
        if "anyOf" in schema:
            any_subs = [self.compile(s) for s in schema["anyOf"]]
            checks.append(lambda v: any(c(v) for c in any_subs))
        if "oneOf" in schema:
            one_subs = [self.compile(s) for s in schema["oneOf"]]
            checks.append(lambda v: sum(1 for c in one_subs if c(v)) == 1)
        if "not" in schema:
            negated = self.compile(schema["not"])
            checks.append(lambda v: not negated(v))
        if "$ref" in schema:
            checks.append(self._ref(schema["$ref"]))
        if not checks:
            return _always
        if len(checks) == 1:
            return checks[0]
        if len(checks) == 2:
            first, second = checks
            return lambda v: first(v) and second(v)
        return lambda v: all(c(v) for c in checks)

    def _type(self, types: Any) -> Check:
        names = [types] if isinstance(types, str) else list(types)
        try:
            preds = [_TYPES[name] for name in names]
        except (KeyError, TypeError):
            raise Unsupported(f"type {types!r}") from None
        if len(preds) == 1:
            return preds[0]
        return lambda v: any(p(v) for p in preds)

    def _enum(self, options: Any) -> Check:
        if not isinstance(options, list):
            raise Unsupported("enum")
        if all(isinstance(o, str) for o in options):
            strings = frozenset(options)
            # a string equals only a string (equal() compares with ==)
            return lambda v: isinstance(v, str) and v in strings
        return lambda v: any(equal(o, v) for o in options)

    def _object(self, schema: dict[str, Any]) -> Check | None:
        keys = ("properties", "additionalProperties", "required", "minProperties", "maxProperties", "propertyNames")
        if not any(k in schema for k in keys):
            return None
        props = {name: self.compile(sub) for name, sub in (schema.get("properties") or {}).items()}
        additional = schema.get("additionalProperties", True)
        extra: Check | None = None if additional is True else self.compile(additional)
        names = self.compile(schema["propertyNames"]) if "propertyNames" in schema else None
        required = tuple(schema.get("required", ()))
        low = schema.get("minProperties")
        high = schema.get("maxProperties")

        def check(value: Any) -> bool:
            if not isinstance(value, dict):
                return True
            if low is not None and len(value) < low:
                return False
            if high is not None and len(value) > high:
                return False
            for name in required:
                if name not in value:
                    return False
            for key, item in value.items():
                sub = props.get(key)
                if sub is not None:
                    if not sub(item):
                        return False
                elif extra is not None and not extra(item):
                    return False
                if names is not None and not names(key):
                    return False
            return True

        return check

    def _array(self, schema: dict[str, Any]) -> Check | None:
        if not any(k in schema for k in ("items", "minItems", "maxItems", "uniqueItems")):
            return None
        each = self.compile(schema["items"]) if "items" in schema else None
        low, high = schema.get("minItems"), schema.get("maxItems")
        distinct = bool(schema.get("uniqueItems", False))

        def check(value: Any) -> bool:
            if not isinstance(value, list):
                return True
            if low is not None and len(value) < low:
                return False
            if high is not None and len(value) > high:
                return False
            if each is not None and not all(each(item) for item in value):
                return False
            return not distinct or unique(value)

        return check

    def _string(self, schema: dict[str, Any]) -> Check | None:
        if not any(k in schema for k in ("pattern", "minLength", "maxLength")):
            return None
        search = re.compile(schema["pattern"]).search if "pattern" in schema else None
        low, high = schema.get("minLength"), schema.get("maxLength")

        def check(value: Any) -> bool:
            if not isinstance(value, str):
                return True
            if low is not None and len(value) < low:
                return False
            if high is not None and len(value) > high:
                return False
            return search is None or search(value) is not None

        return check

    def _number(self, schema: dict[str, Any]) -> Check | None:
        bounds = [(schema[k], k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
                  if k in schema]
        if not bounds:
            return None
        for bound, _ in bounds:
            if not _is_number(bound):
                raise Unsupported("a bound that is not a number")

        def check(value: Any) -> bool:
            if not _is_number(value):
                return True
            for bound, kind in bounds:
                if kind == "minimum" and value < bound:
                    return False
                if kind == "maximum" and value > bound:
                    return False
                if kind == "exclusiveMinimum" and value <= bound:
                    return False
                if kind == "exclusiveMaximum" and value >= bound:
                    return False
            return True

        return check

    def _ref(self, ref: Any) -> Check:
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise Unsupported(f"$ref {ref!r}")
        if ref in self.refs:
            return self.refs[ref]
        target: list[Check] = []

        def check(value: Any) -> bool:
            return target[0](value)

        self.refs[ref] = check  # before compiling the target: a schema may refer to itself
        node = self.root
        for part in ref[2:].split("/") if ref != "#" else ():
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise Unsupported(f"$ref {ref!r}")
            node = node[part]
        target.append(self.compile(node))
        return check


def compile_schema(schema: Any) -> Check | None:
    """A function telling whether a document is valid, or None for a schema left to jsonschema."""
    try:
        return _Compiler(schema).compile(schema, root=True)
    except (Unsupported, re.error):
        return None


class SchemaValidator:
    """``iter_errors`` and ``is_valid`` as jsonschema's Draft202012Validator has them, checking
    with the compiled schema first and asking jsonschema only about documents that fail it."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.check = compile_schema(schema)
        self._jsonschema: Draft202012Validator | None = None

    @property
    def jsonschema(self) -> Draft202012Validator:
        if self._jsonschema is None:
            self._jsonschema = offline_validator(self.schema)
        return self._jsonschema

    def iter_errors(self, instance: Any) -> Iterator[ValidationError]:
        if self.check is not None and self.check(instance):
            return iter(())
        return self.jsonschema.iter_errors(instance)  # type: ignore[no-any-return]

    def is_valid(self, instance: Any) -> bool:
        if self.check is not None and self.check(instance):
            return True
        return bool(self.jsonschema.is_valid(instance))


# keywords whose values are data, not schemas: a {"$ref": ...} inside them is no reference
_DATA_KEYWORDS = frozenset({"enum", "const", "examples", "default"})


class _NotRetrieved(Exception):
    pass


def _refuse(uri: str) -> Any:
    raise _NotRetrieved(uri)


def offline_registry() -> Any:
    """A referencing Registry holding the JSON Schema metaschemas and retrieving nothing: a
    document's schema is checked with what the flow folder loaded, never fetched at request time
    (jsonschema's default fetches an http $ref with urllib, on every document that fails)."""
    from jsonschema_specifications import REGISTRY  # type: ignore[import-untyped]
    from referencing import Registry

    return Registry(retrieve=_refuse).combine(REGISTRY)  # type: ignore[call-arg]


def offline_validator(schema: Any) -> Draft202012Validator:
    """jsonschema's validator of ``schema``, with ``offline_registry``."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema, registry=offline_registry())


def unresolved_ref(schema: Any) -> str | None:
    """Why a ``$ref`` of ``schema`` cannot be followed (it names another document, or a place the
    schema does not have), or None when every one can: found at load, not as a 500 on the
    first document that reaches it."""
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    if not isinstance(schema, dict):
        return None
    resource = DRAFT202012.create_resource(schema)
    registry = offline_registry().with_resource(resource.id() or "", resource)
    problems: list[str] = []

    def walk(node: Any, resolver: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, resolver)
            return
        if not isinstance(node, dict):
            return
        if isinstance(node.get("$id"), str):
            resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
        for keyword in ("$ref", "$dynamicRef"):
            ref = node.get(keyword)
            if isinstance(ref, str) and not problems:
                try:
                    resolver.lookup(ref)
                except (Unresolvable, _NotRetrieved):
                    problems.append(f"{keyword} {ref!r} names nothing in this schema (a schema refers to its own "
                                    f"parts, #/$defs/...; nothing is fetched)")
        for keyword, value in node.items():
            if keyword not in _DATA_KEYWORDS and (keyword != "properties" or isinstance(value, dict)):
                walk(value, resolver)

    walk(schema, registry.resolver(base_uri=resource.id() or ""))
    return problems[0] if problems else None
