"""A ``${...}`` expression compiled to one Python function, at load time.

``engine/expressions.py`` compiles an expression's JMESPath tree to closures, one per node.  Here
the same tree becomes the source text of one function ``evaluate(msg)``, compiled once: a field is
an inline ``.get``, a multi-select a dict or list display, a projection of one field a list
comprehension, ``length``/``sum``/``avg``/``max``/``min`` a builtin on their plainest argument, and
``sum(x[*].f)`` (and avg, max, min) sums the field's values without building the projection when
every element is a plain dict holding it.  Any other node calls the closure ``expressions.py``
compiled for it, so the two answer alike by construction there.

Nothing of the flow file becomes code: field names, keys and function names enter the source as
Python literals made by ``repr`` of ``str``/``int`` values, any other literal as a bound name.
The answers are the closures': the same values of the same types, fresh lists and dicts per
evaluation, the same order of evaluation and so the same first error (jmespath's own type errors,
raised by jmespath's own functions).  tests/unit/test_expression_code.py compares the two, and
jmespath's interpreter, on many shapes of message.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson

from engine.message import Message
from engine.template_code import ROOT_SOURCE, CodeWriter, field_of

MAX_DEPTH = 40  # deeper trees keep their closures (Python's parser has its own limit on nesting)

_NUMBERS = frozenset({int, float})
_DICTS = frozenset({dict})
_SIZED = frozenset({str, list, dict})
_NOT_SUMMED = object()


def _no_bools(values: list[Any]) -> bool:
    """For values of the JSON parser that ``sum`` added (so each an int, a float or a bool): True
    when none is a bool.  Their JSON text, written in C, has an ``e`` only in ``true``, ``false``
    and a float's exponent (a float so written answers False: the caller then tests each type)."""
    try:
        return 101 not in orjson.dumps(values)  # 101: "e"
    except orjson.JSONEncodeError:
        return False


class TooDeep(Exception):
    """The tree is nested past MAX_DEPTH: the caller keeps its closures."""


@dataclass(frozen=True)
class Helpers:
    """What the generated code calls: the closures' own helpers (expressions.py gives them)."""

    call: Callable[[str, list[Any]], Any]  # jmespath's function call, with its type checks and errors
    comparators: Mapping[str, Callable[[Any, Any], Any]]
    query_field: Callable[[Any, str], Any]
    safe_index: Callable[[Any, int], Any]
    numbers: Callable[[Any], bool]
    strings: Callable[[Any], bool]
    apply_xpath: Callable[[Any, Any], Any]
    is_xpath: Callable[[Any], bool]


def aggregate_of_field(function: str, name: str, helpers: Helpers) -> Callable[[Any], Any]:
    """``sum(x[*].f)``, ``avg``, ``max``, ``min`` on the list ``x``, as the closures answer: the
    projection (the non-null values of ``f``) given to the builtin when its values are all numbers
    (or, for max/min, all strings), else to jmespath's function.  When every element is a plain
    dict holding ``f`` the values are read in C (``map(itemgetter)``): they are the projection
    itself, since a null is no number and no string and so takes the general way.  ``rows``, when
    given, says that ``x`` is a list of plain dicts each holding the keys ``rows`` (a foreach's
    results rendered from a mapping template): then the elements need no checking.  ``typed``,
    when given, names those of the keys whose values are the JSON parser's own (a foreach's items
    read straight from a JSON body): each is then a dict, list, str, int, float, bool or None, so a
    sum that works is of numbers unless one is a bool, and only that is checked.

    The function made has, as its ``column`` (in its ``__dict__``), the same aggregate given the
    field's values of such rows instead of the rows (``column(found, typed)``, ``found`` the
    values in order, None among them): what a foreach's reduce takes when the rows are never
    built (``Expr.columnar``)."""
    name = sys.intern(name)  # as the rows' keys are (literals of generated code): lookups find it by identity
    pick = itemgetter(name)
    query_field, numbers, strings, call = helpers.query_field, helpers.numbers, helpers.strings, helpers.call

    def projection(items: Any) -> Any:
        if not isinstance(items, list):
            return None
        return [current for item in items
                if (current := item.get(name) if type(item) is dict else query_field(item, name)) is not None]

    def values(items: Any, rows: frozenset[str] | None) -> list[Any] | None:
        """The field of every element, when each is a plain dict that has it (else None)."""
        if rows is not None and name in rows:
            return list(map(pick, items))
        if type(items) is not list or not _DICTS.issuperset(map(type, items)):
            return None
        try:
            return list(map(pick, items))
        except KeyError:
            return None

    def summed(found: list[Any], typed: frozenset[str] | None) -> Any:
        """The sum of the field's values when they are all numbers, else _NOT_SUMMED."""
        if typed is not None and name in typed:
            try:
                total = sum(found)  # in C; fails on text, null, a list or an object
            except TypeError:
                return _NOT_SUMMED
            if _no_bools(found) or _NUMBERS.issuperset(map(type, found)):
                return total
            return _NOT_SUMMED
        return sum(found) if _NUMBERS.issuperset(map(type, found)) else _NOT_SUMMED

    def non_null(found: list[Any]) -> list[Any]:
        # the projection of rows that are plain dicts each holding the field: its values but null
        return [value for value in found if value is not None]

    def with_column(of_rows: Callable[..., Any], of_column: Callable[..., Any]) -> Callable[..., Any]:
        vars(of_rows)["column"] = of_column
        return of_rows

    if function == "sum":
        def sum_of(items: Any, rows: frozenset[str] | None = None, typed: frozenset[str] | None = None) -> Any:
            found = values(items, rows)
            if found is not None and (total := summed(found, typed)) is not _NOT_SUMMED:
                return total
            arg = projection(items)
            return sum(arg) if numbers(arg) else call("sum", [arg])

        def sum_of_column(found: list[Any], typed: frozenset[str] | None = None) -> Any:
            if (total := summed(found, typed)) is not _NOT_SUMMED:
                return total
            arg = non_null(found)
            return sum(arg) if numbers(arg) else call("sum", [arg])
        return with_column(sum_of, sum_of_column)
    if function == "avg":
        def avg_of(items: Any, rows: frozenset[str] | None = None, typed: frozenset[str] | None = None) -> Any:
            found = values(items, rows)
            if found is not None and (total := summed(found, typed)) is not _NOT_SUMMED:
                return total / len(found) if found else None
            arg = projection(items)
            if numbers(arg):
                return sum(arg) / len(arg) if arg else None
            return call("avg", [arg])

        def avg_of_column(found: list[Any], typed: frozenset[str] | None = None) -> Any:
            if (total := summed(found, typed)) is not _NOT_SUMMED:
                return total / len(found) if found else None
            arg = non_null(found)
            if numbers(arg):
                return sum(arg) / len(arg) if arg else None
            return call("avg", [arg])
        return with_column(avg_of, avg_of_column)
    pick_one = max if function == "max" else min

    def extreme_of(items: Any, rows: frozenset[str] | None = None, typed: frozenset[str] | None = None) -> Any:
        found = values(items, rows)
        plain = found is not None and (_NUMBERS.issuperset(map(type, found)) or all(type(v) is str for v in found))
        arg = found if plain else projection(items)
        if plain or numbers(arg) or strings(arg):
            return pick_one(arg) if arg else None
        return call(function, [arg])

    def extreme_of_column(found: list[Any], typed: frozenset[str] | None = None) -> Any:
        plain = _NUMBERS.issuperset(map(type, found)) or all(type(v) is str for v in found)
        arg = found if plain else non_null(found)
        if plain or numbers(arg) or strings(arg):
            return pick_one(arg) if arg else None
        return call(function, [arg])
    return with_column(extreme_of, extreme_of_column)


class Generator(CodeWriter):
    """Builds the source of one ``evaluate(msg)`` for a JMESPath tree whose XPath literals are
    compiled (``expressions._prepare_xpath``); ``closure(node, at_root)`` is expressions.py's
    compiled closure for a subtree, called for the nodes generated code does not cover."""

    def __init__(self, helpers: Helpers, closure: Callable[[dict[str, Any], bool], Callable[[Any], Any]],
                 context: Callable[[Message], Any], env: Any, secrets: Any) -> None:
        self._helpers = helpers
        self._closure = closure
        self.names: dict[str, Any] = {
            "_field": field_of, "_qfield": helpers.query_field, "_index": helpers.safe_index,
            "_call": helpers.call, "_numbers": helpers.numbers, "_strings": helpers.strings,
            "_SIZED": _SIZED, "_xpath": helpers.apply_xpath, "_context": context,
            "env_": env, "secrets_": secrets,
        }
        self._temps = 0
        self._fallbacks: set[str] = set()
        self.uses_rows = False  # an aggregate of a field of the payload's elements, told of them by rows_
        self.on_payload: Callable[..., Any] | None = None  # evaluate_payload(p_, rows_, typed_), see function()
        self._roots: set[str] = set()  # the message roots read
        self._uses_context = False
        self._payload_reads = 0
        self._first_is_payload: bool | None = None  # is the first thing evaluated the payload read?
        # columns(): the payload is a foreach's rows, never built: their count and columns instead
        self._columnar = False
        self.column_keys: set[str] = set()  # the rows' keys whose columns columns() reads
        self.columnar_candidate = False  # length(payload) or an aggregate of its field: columns() may do

    def function(self, tree: dict[str, Any]) -> Callable[..., Any] | None:
        """The generated ``evaluate(msg, rows_=None, typed_=None)``; None when the whole tree is one
        closure's (nothing to gain).  An expression that reads nothing of the message but its
        payload also gets ``on_payload``: ``evaluate_payload(p_, rows_=None, typed_=None)``, the
        same on that payload given as a value (a foreach's reduce, with no message to make)."""
        body = self.node(tree, "ctx_", True, 0)
        if body in self._fallbacks:
            return None
        on_payload = None
        if not self._uses_context and self._roots <= {"payload", "env", "secret"}:
            on_payload = ("def evaluate_payload(p_, rows_=None, typed_=None):\n"
                          f"    return {body.replace(_PAYLOAD, 'p_')}\n")
        lines = ["def evaluate(msg, rows_=None, typed_=None):"]
        if self._uses_context:
            lines.append("    ctx_ = _context(msg)")  # the closures' root value: nothing to evaluate
        if self._first_is_payload and self._payload_reads > 1:
            lines.append("    p_ = msg.payload")  # nothing before it can raise: read (and parse) once, first
            body = body.replace(_PAYLOAD, "p_")
        else:
            body = body.replace(_PAYLOAD, "msg.payload")
        lines.append(f"    return {body}")
        source = "\n".join(lines) + "\n" + (on_payload or "")
        namespace = self.run_source(source, _CODE, "<expression>")
        self.on_payload = namespace.get("evaluate_payload")
        evaluate: Callable[..., Any] = namespace["evaluate"]
        return evaluate

    def columns(self, tree: dict[str, Any]) -> Callable[..., Any] | None:
        """For a payload that is a list of rows (plain dicts each holding their keys, the JSON
        parser's values where ``typed_`` says so): ``evaluate_columns(n_, cols_, typed_=None)``,
        the same answer from the rows' count ``n_`` and ``cols_`` (a rows' key -> its values in
        order), when the tree reads the payload only as ``length(payload)`` and as an aggregate of
        one field of its elements (``sum(payload[*].qty)``, avg, max, min); ``column_keys`` then
        names the columns read.  None otherwise.  Such a read answers on rows as the generated
        code of function() does (length of a list is its count; the aggregate's ``column``)."""
        self._columnar = True
        try:
            body = self.node(tree, "ctx_", True, 0)
        except _NotColumnar:
            return None
        if body in self._fallbacks or self._uses_context or not self._roots <= {"env", "secret"}:
            return None
        source = f"def evaluate_columns(n_, cols_, typed_=None):\n    return {body}\n"
        columns: Callable[..., Any] = self.run_source(source, _CODE, "<expression>")["evaluate_columns"]
        return columns

    # --- the nodes, as expressions._compile_node compiles them --------------------------------

    def node(self, node: dict[str, Any], value: str, at_root: bool, depth: int) -> str:
        """Python source evaluating ``node`` on the value named ``value`` (at the root: the
        message; ``ctx_`` stands for the closures' Context there)."""
        if depth > MAX_DEPTH:
            raise TooDeep
        depth += 1
        kind = node["type"]
        children = node.get("children", [])
        if kind == "field":
            if at_root:
                return self._root(node["value"])
            return self._field(value, node["value"])
        if kind == "subexpression" and all(c["type"] in ("field", "index_expression", "index") for c in children):
            source = self.node(children[0], value, at_root, depth)
            for child in children[1:]:
                if child["type"] == "field":  # a field of None is None: no test needed before it
                    source = self._field(source, child["value"])
                else:
                    temp = self._temp()
                    source = f"(None if ({temp} := {source}) is None else {self.node(child, temp, False, depth)})"
            return source
        if kind == "index_expression" and len(children) == 2 and children[1]["type"] == "index":
            return self._index(self.node(children[0], value, at_root, depth), children[1]["value"])
        if kind == "index":
            return self._index(value, node["value"])
        if kind == "literal":
            return self.constant(node["value"])
        if kind == "current":
            return self._value(value)
        if kind == "comparator":
            compare = self.bind(self._helpers.comparators[node["value"]])
            left = self.node(children[0], value, at_root, depth)
            right = self.node(children[1], value, at_root, depth)
            self._first(False)
            return f"{compare}({left}, {right})"
        if kind in ("and_expression", "or_expression"):
            left = self.node(children[0], value, at_root, depth)
            right = self.node(children[1], value, at_root, depth)
            temp = self._temp()
            if kind == "and_expression":
                return f"({temp} if {self._falsy(temp, left)} else {right})"
            return f"({right} if {self._falsy(temp, left)} else {temp})"
        if kind == "not_expression":
            inner = self.node(children[0], value, at_root, depth)
            return f"({self._falsy(self._temp(), inner)})"
        if kind == "function_expression" and node["value"] == "xpath" and len(children) == 2 \
                and children[1]["type"] == "literal" and self._helpers.is_xpath(children[1]["value"]):
            target = self.node(children[0], value, at_root, depth)
            self._first(False)
            return f"_xpath({target}, {self.bind(children[1]['value'])})"
        if kind in ("multi_select_dict", "multi_select_list"):
            keyed = kind == "multi_select_dict"
            temp = value if at_root else self._temp()  # at the root the value is the Context: never None
            parts = [(self.literal(c["value"]) + ": " if keyed else "")
                     + self.node(c["children"][0] if keyed else c, temp, at_root, depth) for c in children]
            built = ("{" + ", ".join(parts) + "}") if keyed else ("[" + ", ".join(parts) + "]")
            if at_root:
                return built
            return f"(None if ({temp} := {value}) is None else {built})"
        if kind == "projection" and children[1]["type"] == "field":
            items, current, each = self._temp(), self._temp(), self._temp()
            base = self.node(children[0], value, at_root, depth)
            name = self.literal(children[1]["value"])
            return (f"([{current} for {each} in {items} if ({current} := ({each}.get({name}) if type({each}) is dict "
                    f"else _qfield({each}, {name}))) is not None] if isinstance({items} := {base}, list) else None)")
        if kind == "function_expression" and all(c["type"] != "expref" for c in children):
            return self._function(node, value, at_root, depth)
        return self._fallback(node, value, at_root)

    def _function(self, node: dict[str, Any], value: str, at_root: bool, depth: int) -> str:
        name, children = node["value"], node["children"]
        if len(children) == 1 and name in ("sum", "avg", "max", "min") and children[0]["type"] == "projection" \
                and children[0]["children"][1]["type"] == "field":
            projected = children[0]["children"]
            if at_root and projected[0] == _PAYLOAD_NODE:
                self.columnar_candidate = True
                if self._columnar:
                    key = projected[1]["value"]
                    self.column_keys.add(key)
                    column = vars(aggregate_of_field(name, key, self._helpers))["column"]
                    return f"{self.bind(column)}(cols_[{self.literal(key)}], typed_)"
            base = self.node(projected[0], value, at_root, depth)
            self._first(False)
            aggregate = aggregate_of_field(name, projected[1]["value"], self._helpers)
            if at_root and projected[0] == _PAYLOAD_NODE:
                self.uses_rows = True  # x is the payload: what evaluate(msg, rows_, typed_) may know of its elements
                return f"{self.bind(aggregate)}({base}, rows_, typed_)"
            return f"{self.bind(aggregate)}({base})"
        if name == "length" and at_root and children == [_PAYLOAD_NODE]:
            self.columnar_candidate = True
            if self._columnar:
                return "n_"  # the payload is the list of rows
        arguments = [self.node(c, value, at_root, depth) for c in children]
        self._first(False)
        if len(arguments) == 1:
            temp, argument = self._temp(), arguments[0]
            if name == "length":
                return f"(len({temp}) if type({temp} := {argument}) in _SIZED else _call('length', [{temp}]))"
            if name == "sum":
                return f"(sum({temp}) if _numbers({temp} := {argument}) else _call('sum', [{temp}]))"
            if name == "avg":
                return (f"(((sum({temp}) / len({temp})) if {temp} else None) if _numbers({temp} := {argument}) "
                        f"else _call('avg', [{temp}]))")
            if name in ("max", "min"):
                return (f"(({name}({temp}) if {temp} else None) if _numbers({temp} := {argument}) or "
                        f"_strings({temp}) else _call({name!r}, [{temp}]))")
        return f"_call({self.literal(name)}, [{', '.join(arguments)}])"

    def _fallback(self, node: dict[str, Any], value: str, at_root: bool) -> str:
        self._first(False)
        source = f"{self.bind(self._closure(node, at_root))}({self._value(value)})"
        self._fallbacks.add(source)
        return source

    # --- reads ----------------------------------------------------------------------------------

    def _root(self, name: str) -> str:
        self._roots.add(name)
        if name == "payload" and self._columnar:
            raise _NotColumnar  # a read of the rows other than their count and columns
        if name == "payload":
            self._first(True)
            self._payload_reads += 1
            return _PAYLOAD
        self._first(False)
        if name == "env":
            return "env_"
        if name == "secret":
            return "secrets_"
        return ROOT_SOURCE[name]

    def _field(self, value: str, name: str) -> str:
        temp = self._temp()  # value.get(name) for a dict, else None unless a mapping: as the closures
        key = self.literal(name)
        return f"({temp}.get({key}) if type({temp} := {value}) is dict else _field({temp}, {key}))"

    def _index(self, value: str, index: Any) -> str:
        if type(index) is not int:
            return f"_index({value}, {self.bind(index)})"
        temp = self._temp()
        inside = f"len({temp}) > {index}" if index >= 0 else f"len({temp}) >= {-index}"
        return f"({temp}[{index}] if type({temp} := {value}) is list and {inside} else _index({temp}, {index}))"

    def _value(self, value: str) -> str:
        if value == "ctx_":
            self._uses_context = True
        return value

    @staticmethod
    def _falsy(temp: str, source: str) -> str:
        # expressions._is_false's test, inline
        return f"(({temp} := {source}) is None or {temp} is False or {temp} == '' or {temp} == [] or {temp} == {{}})"


class _NotColumnar(Exception):
    """columns(): the tree reads the payload otherwise than by its count and its columns."""


_PAYLOAD_NODE = {"type": "field", "children": [], "value": "payload"}
_PAYLOAD = "\x00payload\x00"  # where msg.payload is read, until we know whether it is read once up front
_CODE: dict[str, Any] = {}  # generated source -> its code object: flows repeat their expressions' shapes
