"""`${...}` expressions and templates, compiled once at load time.

Inside ``${...}`` is a JMESPath expression evaluated over the message's context, whose roots
are ``payload``, ``headers``, ``vars``, ``path``, ``query``, ``env``, ``secret``, ``error``,
``status``, ``method``, ``correlation_id``, ``params``, ``auth``, ``tls`` and ``client`` (the
connection's peer: ``client.address``, ``client.port``).  XML payloads are read with the ``xpath()``
function: ``xpath('//order[1]/symbol')`` (over the payload) or ``xpath(node, 'expr')``; the
XPath is compiled at load with the flow's namespaces.

Compilation turns the JMESPath tree into Python closures for the common shapes (field paths,
indexes, comparisons, and/or/not, literals, xpath) and hands any other subtree to JMESPath's
own interpreter, so every JMESPath expression works and the frequent ones cost a few
attribute lookups.  Expressions are data, never ``eval``.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jmespath
from jmespath import exceptions as jp_exceptions
from jmespath import functions as jp_functions
from jmespath import visitor as jp_visitor
from lxml import etree

from engine import expression_blame
from engine.errors import ExpressionError, RequestDataInvalid
from engine.message import Message

ROOTS = ("payload", "headers", "vars", "path", "query", "env", "secret", "error", "status", "method",
         "correlation_id", "params", "auth", "tls", "client")


class ExpressionSyntaxError(ValueError):
    """An expression or template that does not compile; ``offset`` is within the source text."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


class UnknownRoot(ExpressionSyntaxError):
    """A name an expression starts from that is none of the roots: most often a payload field."""

    def __init__(self, name: str, source: str | None = None) -> None:
        self.name = name
        hint = f"payload.{name}"
        if source is not None:
            hint = _corrected(source, name) or hint
        super().__init__(f"unknown name {name!r}: an expression starts from one of {', '.join(ROOTS)}; "
                         f"for a field of the payload write {hint.strip()}", max(_name_offset(source or "", name), 0))


def _corrected(source: str, name: str) -> str | None:
    """``source`` with ``payload.`` before each bare name that is not a root (the whole
    expression, corrected), or None when it cannot be worked out."""
    for _ in range(10):
        offset = _name_offset(source, name)
        if offset < 0:
            return None
        source = source[:offset] + "payload." + source[offset:]
        try:
            _compile_node(_copy_tree(jmespath.compile(source).parsed), True, _Usage())
            return source
        except UnknownRoot as exc:
            name = exc.name
        except (jp_exceptions.JMESPathError, ExpressionSyntaxError):
            return None
    return None


def _name_offset(source: str, name: str) -> int:
    """Where ``name`` first stands as a whole identifier in ``source`` (not after a dot), or -1."""
    # not a key of a multi-select hash ({name: ...}), not inside a quoted literal's word
    match = re.search(rf"(?<![\w.@'\"`]){re.escape(name)}(?![\w])(?!\s*:)", source)
    return match.start() if match else -1


# --- the evaluation context ------------------------------------------------------------------


class Context:
    """What ``${...}`` reads: a mapping-like view of one message, resolved lazily."""

    __slots__ = ("env", "msg", "secrets")

    def __init__(self, msg: Message, env: Mapping[str, str], secrets: Mapping[str, str]) -> None:
        self.msg = msg
        self.env = env
        self.secrets = secrets

    def get(self, key: str, default: Any = None) -> Any:
        getter = _ROOT_GETTERS.get(key)
        return getter(self) if getter is not None else default


_ROOT_GETTERS: dict[str, Callable[[Context], Any]] = {
    "payload": lambda c: c.msg.payload,
    "headers": lambda c: c.msg.headers,
    "vars": lambda c: c.msg.vars,
    "path": lambda c: c.msg.path_params,
    "query": lambda c: c.msg.query,
    "env": lambda c: c.env,
    "secret": lambda c: c.secrets,
    "error": lambda c: c.msg.error,
    "status": lambda c: c.msg.status,
    "method": lambda c: c.msg.method,
    "correlation_id": lambda c: c.msg.correlation_id,
    # a template sequence's arguments, set by the sequence step for the steps it runs
    "params": lambda c: c.msg.attributes.get("params"),
    # what the authenticate step verified: a JWT's claims, or the API key's name
    "auth": lambda c: c.msg.attributes.get("auth"),
    # the connection's TLS and the client certificate (engine/tls.py); null over plain HTTP
    "tls": lambda c: c.msg.attributes.get("tls"),
    # the connection's peer: {address, port} (Message.client); null without a connection
    "client": lambda c: c.msg.client,
}


# the roots read straight from the message: an expression that is only a path of fields from one
# of these (payload.id, vars.customer.name, headers."x-client-id") skips the Context
_MESSAGE_ROOTS: dict[str, Callable[[Message], Any]] = {
    "payload": lambda m: m.payload,
    "headers": lambda m: m.headers,
    "vars": lambda m: m.vars,
    "path": lambda m: m.path_params,
    "query": lambda m: m.query,
    "error": lambda m: m.error,
    "status": lambda m: m.status,
    "method": lambda m: m.method,
    "correlation_id": lambda m: m.correlation_id,
    "params": lambda m: m.attributes.get("params"),
    "auth": lambda m: m.attributes.get("auth"),
    "tls": lambda m: m.attributes.get("tls"),
    "client": lambda m: m.client,
}


def _field_path(node: dict[str, Any]) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"] when the tree is only fields, else None."""
    if node["type"] == "field":
        return [node["value"]]
    if node["type"] == "subexpression":
        path: list[str] = []
        for child in node.get("children", []):
            part = _field_path(child)
            if part is None:
                return None
            path += part
        return path
    return None


def _direct_getter(node: dict[str, Any]) -> Callable[[Message], Any] | None:
    """A getter on the message itself for a field path from a message root (same answers as the
    general path: a missing field or a value that is not a mapping gives None)."""
    path = _field_path(node)
    root = _MESSAGE_ROOTS.get(path[0]) if path else None
    if path is None or root is None:
        return None
    names = path[1:]
    if not names:
        return root
    if len(names) == 1:
        name = names[0]
        if path[0] == "payload":  # the most common of all (a split item's fields): no call for the root
            def payload_field(msg: Message) -> Any:
                value = msg.payload
                if type(value) is dict:
                    return value.get(name)
                return value.get(name) if isinstance(value, Mapping) else None
            return payload_field

        def one_field(msg: Message) -> Any:
            value = root(msg)
            if isinstance(value, dict):
                return value.get(name)
            return value.get(name) if isinstance(value, Mapping) else None
        return one_field

    def fields(msg: Message) -> Any:
        value = root(msg)
        for name in names:
            if not isinstance(value, Mapping):  # dict is a Mapping too
                return None
            value = value.get(name)
            if value is None:
                return None
        return value
    return fields


class Secrets(Mapping[str, str]):
    """Secrets read from files (Kubernetes Secret mounts): one file per secret, named by it."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or os.environ.get("INTERLACE_SECRETS_DIR", "/var/run/secrets/interlace")
        self._cache: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self._cache:
            if "/" in name or name.startswith("."):
                raise KeyError(name)
            try:
                with open(os.path.join(self.directory, name), encoding="utf-8") as handle:
                    self._cache[name] = handle.read().rstrip("\n")
            except OSError as exc:
                raise KeyError(name) from exc
        return self._cache[name]

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def __iter__(self) -> Any:
        return iter(self._cache)

    def __len__(self) -> int:
        return len(self._cache)


# --- JMESPath functions the engine adds -------------------------------------------------------


def xpath_value(result: Any) -> Any:
    """XPath results as plain values: a node's text, a list for several, None for none."""
    if isinstance(result, list):
        if len(result) == 1:  # the usual routing answer: no list built for it
            return xpath_value(result[0])
        if not result:
            return None
        return [xpath_value(item) for item in result]
    if isinstance(result, etree._Element):
        if type(result) is etree._Element and not len(result):
            # no children (elements, comments, PIs): its text is all that itertext() gives, read
            # without building the iterator (timed in the loaded engine: 7 -> 1.5 µs of ~16 µs)
            text = result.text
            return "" if text is None else text
        if type(result) is not etree._Element:  # a comment or processing instruction: itertext() refuses it
            return result.text or ""
        return "".join(result.itertext())
    if isinstance(result, bytes):
        return result.decode()
    if isinstance(result, str):
        return str(result)  # lxml's smart strings (from XPaths compiled elsewhere) keep the tree alive
    if isinstance(result, float) and result.is_integer():
        return int(result)
    return result


def apply_xpath(node: Any, compiled: etree.XPath) -> Any:
    if node is None:
        return None
    if not isinstance(node, etree._Element):
        raise ExpressionError("xpath() needs an XML payload (Content-Type */xml)")
    try:
        return xpath_value(compiled(node))
    except etree.XPathEvalError as exc:
        raise ExpressionError(f"XPath failed: {exc}") from exc


class EngineFunctions(jp_functions.Functions):
    """JMESPath functions beyond the standard ones."""

    @jp_functions.signature({"types": []}, {"types": []})
    def _func_xpath(self, node: Any, compiled: Any) -> Any:
        if isinstance(compiled, str):
            compiled = etree.XPath(compiled, smart_strings=False)
        return apply_xpath(node, compiled)

    @jp_functions.signature({"types": ["string"]})
    def _func_lower(self, value: str) -> str:
        return value.lower()

    @jp_functions.signature({"types": ["string"]})
    def _func_upper(self, value: str) -> str:
        return value.upper()

    @jp_functions.signature({"types": ["string"]})
    def _func_trim(self, value: str) -> str:
        return value.strip()

    @jp_functions.signature({"types": ["string"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_replace(self, value: str, old: str, new: str) -> str:
        return value.replace(old, new)

    @jp_functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_split(self, value: str, separator: str) -> list[str]:
        if not separator:  # str.split's ValueError was a 500 when the separator was the caller's
            raise jp_exceptions.JMESPathTypeError("split", separator, "empty string", ["non-empty string"])
        return value.split(separator)

    # max_by and min_by as sort_by checks: every key of the first element's type (jmespath's own
    # let 1 and "x" meet in max(), a TypeError and a 500 on the caller's mixed data)
    @jp_functions.signature({"types": ["array"]}, {"types": ["expref"]})
    def _func_max_by(self, array: list[Any], expref: Any) -> Any:
        return max(array, key=self._same_typed_key(array, expref, "max_by")) if array else None

    @jp_functions.signature({"types": ["array"]}, {"types": ["expref"]})
    def _func_min_by(self, array: list[Any], expref: Any) -> Any:
        return min(array, key=self._same_typed_key(array, expref, "min_by")) if array else None

    def _same_typed_key(self, array: list[Any], expref: Any, name: str) -> Any:
        first = self._convert_to_jmespath_type(type(expref.visit(expref.expression, array[0])).__name__)
        if first not in ("number", "string"):
            raise jp_exceptions.JMESPathTypeError(name, array[0], first, ["string", "number"])
        return self._create_key_func(expref, [first], name)

    @jp_functions.signature({"types": ["string", "number", "boolean", "null"]}, {"types": []})
    def _func_default(self, value: Any, fallback: Any) -> Any:
        return fallback if value is None or value == "" else value

    @jp_functions.signature({"types": []})
    def _func_raw(self, value: Any) -> Any:
        # the value itself; in a call's path, ${raw(...)} is inserted without percent-encoding
        return value

    @jp_functions.signature()
    def _func_uuid(self) -> str:
        return str(uuid.uuid4())

    @jp_functions.signature()
    def _func_now(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    @jp_functions.signature()
    def _func_epoch_ms(self) -> int:
        return int(time.time() * 1000)


FUNCTION_NAMES = sorted(name[len("_func_"):] for name in dir(EngineFunctions) if name.startswith("_func_"))
_OPTIONS = jmespath.Options(custom_functions=EngineFunctions())


class _Interpreter(jp_visitor.TreeInterpreter):
    """jmespath's interpreter, with an ordering comparison of a string and a number null (as
    JMESPath says, and as the engine's compiled comparisons answer), not jmespath's TypeError."""

    def visit_comparator(self, node: dict[str, Any], value: Any) -> Any:
        try:
            return super().visit_comparator(node, value)
        except TypeError:
            return None


_INTERPRETER = _Interpreter(_OPTIONS)


# --- compiling the JMESPath tree to closures ---------------------------------------------------

Getter = Callable[[Any], Any]  # takes the current value (the Context at the root)


def _is_false(value: Any) -> bool:
    return value is None or value is False or value == "" or value == [] or value == {}


def _equals(left: Any, right: Any) -> bool:
    # JMESPath: booleans equal only booleans (Python would say 1 == True)
    if type(left) is bool or type(right) is bool:
        return left is right
    return bool(left == right)


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
    def compare(left: Any, right: Any) -> Any:
        numeric = (int, float)
        if (isinstance(left, numeric) and isinstance(right, numeric)
                and type(left) is not bool and type(right) is not bool):
            return op(left, right)
        return None
    return compare


_COMPARATORS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": _equals,
    "ne": lambda a, b: not _equals(a, b),
    "lt": _ordered(lambda a, b: a < b),
    "lte": _ordered(lambda a, b: a <= b),
    "gt": _ordered(lambda a, b: a > b),
    "gte": _ordered(lambda a, b: a >= b),
}


@dataclass
class _Usage:
    payload: bool = False
    env_refs: set[str] = field(default_factory=set)
    secret_refs: set[str] = field(default_factory=set)


def _field_getter(name: str, at_root: bool) -> Getter:
    if at_root:
        root = _ROOT_GETTERS.get(name)
        if root is None:
            raise UnknownRoot(name)
        return root

    def get(value: Any) -> Any:
        if isinstance(value, dict):
            return value.get(name)
        return value.get(name) if isinstance(value, Mapping) else None
    return get


def _compile_node(node: dict[str, Any], at_root: bool, usage: _Usage) -> Getter:
    kind = node["type"]
    children = node.get("children", [])
    if kind == "field":
        name = node["value"]
        if at_root and name == "payload":
            usage.payload = True
        return _field_getter(name, at_root)
    if kind == "subexpression" and all(c["type"] in ("field", "index_expression", "index") for c in children):
        getters = [_compile_node(c, at_root and i == 0, usage) for i, c in enumerate(children)]
        _note_refs(children, usage)

        def chain(value: Any) -> Any:
            for getter in getters:
                value = getter(value)
                if value is None:
                    return None
            return value
        return chain
    if kind == "index_expression" and len(children) == 2 and children[1]["type"] == "index":
        base = _compile_node(children[0], at_root, usage)
        index = children[1]["value"]

        def get_index(value: Any) -> Any:
            seq = base(value)
            if isinstance(seq, list):
                try:
                    return seq[index]
                except IndexError:
                    return None
            return None
        return get_index
    if kind == "index":
        index = node["value"]
        return lambda value: _safe_index(value, index)
    if kind == "literal":
        constant = node["value"]
        return lambda value: constant
    if kind == "current":
        return lambda value: value
    if kind == "comparator":
        left = _compile_node(children[0], at_root, usage)
        right = _compile_node(children[1], at_root, usage)
        op = _COMPARATORS[node["value"]]
        return lambda value: op(left(value), right(value))
    if kind == "and_expression":
        left = _compile_node(children[0], at_root, usage)
        right = _compile_node(children[1], at_root, usage)

        def both(value: Any) -> Any:
            first = left(value)
            return first if _is_false(first) else right(value)
        return both
    if kind == "or_expression":
        left = _compile_node(children[0], at_root, usage)
        right = _compile_node(children[1], at_root, usage)

        def either(value: Any) -> Any:
            first = left(value)
            return right(value) if _is_false(first) else first
        return either
    if kind == "not_expression":
        inner = _compile_node(children[0], at_root, usage)
        return lambda value: _is_false(inner(value))
    if kind == "function_expression" and node["value"] == "xpath" and len(children) == 2 \
            and children[1]["type"] == "literal" and isinstance(children[1]["value"], etree.XPath):
        target = _compile_node(children[0], at_root, usage)
        compiled = children[1]["value"]
        return lambda value: apply_xpath(target(value), compiled)
    if kind in ("multi_select_dict", "multi_select_list"):
        keyed = kind == "multi_select_dict"
        parts = tuple((c["value"] if keyed else None, _compile_node(c["children"][0] if keyed else c, at_root, usage))
                      for c in children)

        def select(value: Any) -> Any:  # as jmespath's visit_multi_select_dict/_list
            if value is None:
                return None
            if keyed:
                return {key: getter(value) for key, getter in parts}
            return [getter(value) for _, getter in parts]
        return select
    if kind == "projection" and children[1]["type"] == "field":
        base = _compile_node(children[0], at_root, usage)
        name = children[1]["value"]

        def project_field(value: Any) -> Any:  # payload[*].qty: one field of each element, inline
            items = base(value)
            if not isinstance(items, list):
                return None
            return [current for item in items
                    if (current := item.get(name) if type(item) is dict else _query_field(item, name)) is not None]
        return project_field
    if kind == "projection":
        base = _compile_node(children[0], at_root, usage)
        each = _query_node(children[1])  # applied to the elements, never to the root

        def project(value: Any) -> Any:  # as jmespath's visit_projection
            items = base(value)
            if not isinstance(items, list):
                return None
            collected = []
            for item in items:
                current = each(item)
                if current is not None:
                    collected.append(current)
            return collected
        return project
    if kind == "function_expression" and all(c["type"] != "expref" for c in children):
        arguments = tuple(_compile_node(c, at_root, usage) for c in children)
        call, name = _INTERPRETER._functions.call_function, node["value"]
        if len(arguments) == 1 and name in _PLAIN_FUNCTIONS:
            return _plain_function(name, arguments[0], call)
        # the arguments compiled; the function itself, with its type checks and errors, is jmespath's
        return lambda value: call(name, [argument(value) for argument in arguments])
    # anything else: JMESPath's interpreter over this subtree, with the context as a mapping
    _scan_usage(node, at_root, usage)
    return lambda value: _INTERPRETER.visit(node, value)


# --- functions on their plainest arguments ------------------------------------------------------
#
# length, sum, avg, max and min over values whose types jmespath's signature check accepts for
# certain (a list of int/float, a list of str, a str/list/dict to measure) answer with the
# builtin jmespath's function itself calls, skipping the check's per-element type-name lookups;
# anything else (other types, bool, None, a subclass) goes to jmespath's function as before, with
# its type check and its error.

_NUMBERS = frozenset({int, float})
_SIZED = frozenset({str, list, dict})
_PLAIN_FUNCTIONS = ("length", "sum", "avg", "max", "min")


def _numbers(arg: Any) -> bool:
    return type(arg) is list and _NUMBERS.issuperset(map(type, arg))


def _strings(arg: Any) -> bool:
    return type(arg) is list and all(type(item) is str for item in arg)


def _plain_function(name: str, argument: Getter, call: Callable[[str, list[Any]], Any]) -> Getter:
    if name == "length":
        def length(value: Any) -> Any:
            arg = argument(value)
            return len(arg) if type(arg) in _SIZED else call(name, [arg])
        return length
    if name == "sum":
        def sum_(value: Any) -> Any:
            arg = argument(value)
            return sum(arg) if _numbers(arg) else call(name, [arg])
        return sum_
    if name == "avg":
        def avg(value: Any) -> Any:
            arg = argument(value)
            if _numbers(arg):
                return sum(arg) / len(arg) if arg else None
            return call(name, [arg])
        return avg
    pick = max if name == "max" else min

    def extreme(value: Any) -> Any:
        arg = argument(value)
        if _numbers(arg) or _strings(arg):
            return pick(arg) if arg else None
        return call(name, [arg])
    return extreme


def _query_field(value: Any, name: str) -> Any:
    """A field of a value that is not a plain dict, as _query_node's field_ reads it."""
    try:
        return value.get(name)
    except AttributeError:
        return None


def _safe_index(value: Any, index: int) -> Any:
    if isinstance(value, list):
        try:
            return value[index]
        except IndexError:
            return None
    return None


def _note_refs(children: list[dict[str, Any]], usage: _Usage) -> None:
    if len(children) >= 2 and children[0]["type"] == "field" and children[1]["type"] == "field":
        root, name = children[0]["value"], children[1]["value"]
        if root == "env":
            usage.env_refs.add(name)
        elif root == "secret":
            usage.secret_refs.add(name)


def _scan_usage(node: dict[str, Any], at_root: bool, usage: _Usage) -> None:
    """Record what an interpreted subtree reads, and reject unknown roots at load time."""
    kind = node["type"]
    children = node.get("children", [])
    if kind == "field" and at_root:
        _field_getter(node["value"], True)
        if node["value"] == "payload":
            usage.payload = True
        return
    if kind == "subexpression":
        _note_refs(children, usage)
        if children:
            _scan_usage(children[0], at_root, usage)
        return
    # only a projection's or a function's first operand is evaluated against the root
    rooted = kind in ("comparator", "and_expression", "or_expression", "not_expression",
                      "function_expression", "multi_select_list", "multi_select_dict", "key_val_pair",
                      "pipe", "index_expression", "projection", "value_projection", "filter_projection",
                      "flatten")
    for i, child in enumerate(children):
        child_at_root = at_root and (rooted if kind not in ("projection", "value_projection",
                                                            "filter_projection", "pipe") else i == 0)
        if isinstance(child, dict):
            _scan_usage(child, child_at_root, usage)


def _prepare_xpath(node: dict[str, Any], namespaces: Mapping[str, str], usage: _Usage) -> None:
    """Compile every literal XPath at load; ``xpath('p')`` becomes ``xpath(payload, 'p')``."""
    for child in node.get("children", []):
        if isinstance(child, dict):
            _prepare_xpath(child, namespaces, usage)
    if node.get("type") != "function_expression" or node.get("value") != "xpath":
        return
    children = node["children"]
    if len(children) == 1:
        children.insert(0, {"type": "field", "value": "payload", "children": []})
    if len(children) != 2:
        raise ExpressionSyntaxError("xpath() takes an XPath string, optionally after the node to search")
    literal = children[1]
    if literal["type"] != "literal" or not isinstance(literal["value"], str):
        raise ExpressionSyntaxError("xpath() needs its XPath as a quoted literal, e.g. xpath('//order')")
    try:
        # smart_strings=False: string results are plain str, not lxml's subclass that keeps a
        # reference to its element (and so to the whole tree); xpath_value makes them str anyway
        literal["value"] = etree.XPath(literal["value"], namespaces=dict(namespaces), smart_strings=False)
    except etree.XPathSyntaxError as exc:
        raise ExpressionSyntaxError(f"invalid XPath {literal['value']!r}: {exc}") from exc
    except (TypeError, ValueError) as exc:  # lxml on the namespaces: an empty URI, a prefix it cannot bind
        raise ExpressionSyntaxError(f"XPath {literal['value']!r}: the namespaces cannot be used: {exc}") from exc
    usage.payload = True


# --- JMESPath queries over a document (the transform step) -------------------------------------
#
# The common shapes (fields, indexes, projections, flatten, multiselect hashes and lists, pipes,
# filters on ==/!=, and/or/not) compile to closures with JMESPath's semantics; any other node
# (functions, slices, ordering comparisons) runs in jmespath's interpreter.  Reshaping 1,532
# orders costs a fifth of the interpreter's time: 2.3 ms against 11.1 ms (docs/performance.md).


def compile_query(source: str) -> Getter:
    """A JMESPath query over a JSON document, compiled once: ``query(document) -> result``."""
    return _query_node(jmespath.compile(source).parsed)


def query_failed(source: str, exc: jp_exceptions.JMESPathError, msg: Message) -> ExpressionError:
    """The error of a ``compile_query`` query over ``msg``'s payload: the caller's (422) while
    the payload is the request's and only its data can have caused it, else the flow's (500).
    Works the tree out again: this runs once an error came, never for a query that answers."""
    blame = expression_blame.of(jmespath.compile(source).parsed, _OPTIONS.custom_functions.FUNCTION_TABLE,
                                document=True)
    part = blame.request_part(msg, exc) if blame is not None else None
    if part is not None and isinstance(exc, jp_exceptions.JMESPathTypeError):
        return RequestDataInvalid(request_data_detail(part, source, exc, braced=False), internal=source)
    return ExpressionError(f"jmespath transform failed: {exc}")


def _query_node(node: dict[str, Any]) -> Getter:
    kind = node["type"]
    children = node.get("children", [])
    if kind == "field":
        name = node["value"]

        def field_(value: Any) -> Any:
            if type(value) is dict:
                return value.get(name)
            try:
                return value.get(name)
            except AttributeError:
                return None
        return field_
    if kind in ("subexpression", "index_expression", "pipe"):
        steps = [_query_node(c) for c in children]
        if len(steps) == 2:
            first, second = steps

            def pair(value: Any) -> Any:
                return second(first(value))
            return pair

        def chain(value: Any) -> Any:
            for step in steps:
                value = step(value)
            return value
        return chain
    if kind == "index":
        index = node["value"]
        return lambda value: _safe_index(value, index)
    if kind in ("identity", "current"):
        return lambda value: value
    if kind == "literal":
        constant = node["value"]
        return lambda value: constant
    if kind in ("projection", "value_projection", "filter_projection"):
        base = _query_node(children[0])
        each = _query_node(children[1])
        values = kind == "value_projection"
        keep = _query_node(children[2]) if kind == "filter_projection" else None

        def project(value: Any) -> Any:
            items = base(value)
            if values:
                if not isinstance(items, dict):
                    return None
                items = items.values()
            elif not isinstance(items, list):
                return None
            collected = []
            for item in items:
                if keep is not None and _is_false(keep(item)):
                    continue
                current = each(item)
                if current is not None:
                    collected.append(current)
            return collected
        return project
    if kind == "flatten":
        inner = _query_node(children[0])

        def flatten(value: Any) -> Any:
            items = inner(value)
            if not isinstance(items, list):
                return None
            merged: list[Any] = []
            for item in items:
                if isinstance(item, list):
                    merged.extend(item)
                else:
                    merged.append(item)
            return merged
        return flatten
    if kind == "multi_select_dict":
        pairs = tuple((c["value"], _query_node(c["children"][0])) for c in children)

        def select_dict(value: Any) -> Any:
            if value is None:
                return None
            return {key: getter(value) for key, getter in pairs}
        return select_dict
    if kind == "multi_select_list":
        getters = tuple(_query_node(c) for c in children)

        def select_list(value: Any) -> Any:
            if value is None:
                return None
            return [getter(value) for getter in getters]
        return select_list
    if kind == "comparator" and node["value"] in ("eq", "ne"):
        left, right = _query_node(children[0]), _query_node(children[1])
        if node["value"] == "eq":
            return lambda value: _equals(left(value), right(value))
        return lambda value: not _equals(left(value), right(value))
    if kind in ("and_expression", "or_expression"):
        left, right = _query_node(children[0]), _query_node(children[1])
        if kind == "and_expression":
            def both(value: Any) -> Any:
                first = left(value)
                return first if _is_false(first) else right(value)
            return both

        def either(value: Any) -> Any:
            first = left(value)
            return right(value) if _is_false(first) else first
        return either
    return lambda value: _INTERPRETER.visit(node, value)


# --- public API --------------------------------------------------------------------------------


def _copy_tree(node: Any) -> Any:
    """A parse tree's dicts and lists copied (``copy.deepcopy`` did the same at 2.6x the cost); the
    leaves (strings, numbers, literals' scalars) are shared."""
    if isinstance(node, dict):
        return {key: _copy_tree(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_copy_tree(value) for value in node]
    return node


class Expr:
    """One compiled ``${...}`` expression."""

    __slots__ = ("_columns", "_getter", "_on_payload", "_rows", "_run", "blame", "direct", "env", "env_refs", "fields",
                 "secret_refs", "secrets", "source", "uses_payload")

    def __init__(self, source: str, namespaces: Mapping[str, str] | None = None,
                 env: Mapping[str, str] | None = None, secrets: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.env: Mapping[str, str] = env if env is not None else os.environ
        self.secrets: Mapping[str, str] = secrets if secrets is not None else Secrets()
        if not source.strip():
            raise ExpressionSyntaxError("empty expression")
        try:
            # the parser caches trees by source text: copy before compiling XPath literals into it
            parsed = _copy_tree(jmespath.compile(source).parsed)
        except jp_exceptions.ParseError as exc:
            raise ExpressionSyntaxError(_parse_error_text(exc), int(getattr(exc, "lex_position", 0) or 0)) \
                from exc
        except jp_exceptions.LexerError as exc:
            raise ExpressionSyntaxError(f"invalid expression: {exc.msg}",
                                        int(getattr(exc, "lexer_position", 0) or 0)) from exc
        usage = _Usage()
        _check_functions(parsed)
        _prepare_xpath(parsed, namespaces or {}, usage)
        try:
            self._getter = _compile_node(parsed, True, usage)
        except UnknownRoot as exc:
            raise UnknownRoot(exc.name, source) from None
        self.uses_payload = usage.payload
        # whether a run-time type error can be the caller's data (422) rather than the flow's (500)
        self.blame = expression_blame.of(parsed, _OPTIONS.custom_functions.FUNCTION_TABLE)
        self.env_refs = frozenset(usage.env_refs)
        self.secret_refs = frozenset(usage.secret_refs)
        # a path of fields from a message root, read without a Context (it cannot raise)
        self.direct: Callable[[Message], Any] | None = _direct_getter(parsed)
        # that path, root first (payload, id), for templates that read it inline (engine/template_code.py)
        self.fields: tuple[str, ...] | None = tuple(_field_path(parsed) or ()) if self.direct is not None else None
        # the tree as one generated function (engine/expression_code.py), else the closures on a Context
        self._rows: Callable[..., Any] | None = None  # set by _generated: (msg, rows_, typed_)
        self._on_payload: Callable[..., Any] | None = None  # set by _generated: (payload, rows_, typed_)
        # set by _generated: (the rows' keys read, evaluate_columns(n_, cols_, typed_)), see columnar
        self._columns: tuple[frozenset[str], Callable[..., Any]] | None = None
        self._run: Callable[[Message], Any] = (self._generated(parsed) if self.direct is None else None) \
            or self._on_context

    def _on_context(self, msg: Message) -> Any:
        return self._getter(Context(msg, self.env, self.secrets))

    def _generated(self, tree: dict[str, Any]) -> Callable[[Message], Any] | None:
        from engine import expression_code

        env, secrets = self.env, self.secrets

        def closure(node: dict[str, Any], at_root: bool) -> Getter:
            return _compile_node(node, at_root, _Usage())

        generator = expression_code.Generator(_code_helpers(), closure, lambda msg: Context(msg, env, secrets), env,
                                              secrets)
        try:
            evaluate = generator.function(tree)
        except expression_code.TooDeep:
            return None
        if evaluate is not None and generator.uses_rows:
            self._rows = evaluate
        self._on_payload = generator.on_payload
        if self._on_payload is not None and generator.columnar_candidate:
            columnar = expression_code.Generator(_code_helpers(), closure, lambda msg: Context(msg, env, secrets),
                                                 env, secrets)
            columns = columnar.columns(tree)
            if columns is not None:
                self._columns = (frozenset(columnar.column_keys), columns)
        return evaluate

    def evaluate_rows(self, msg: Message, rows: frozenset[str], typed: frozenset[str] | None = None) -> Any:
        """``evaluate(msg)`` for a payload known to be a list of plain dicts each holding the keys
        ``rows`` (a foreach's results rendered from a mapping template, before any step saw them):
        an aggregate of one of those fields (``sum(payload[*].qty)``) reads them unchecked.
        ``typed``: those of the keys whose values are the JSON parser's own (see
        expression_code.aggregate_of_field)."""
        if self._rows is None:
            return self.evaluate(msg)
        try:
            return self._rows(msg, rows, typed)
        except ExpressionError:
            raise
        except jp_exceptions.JMESPathError as exc:
            raise self._failed(exc, msg) from exc

    @property
    def reads_payload_only(self) -> bool:
        """Whether the expression reads nothing of a message but its payload (and env, secrets):
        ``evaluate_payload`` then answers as ``evaluate`` on any message holding that payload."""
        return self._on_payload is not None

    def evaluate_payload(self, payload: Any, rows: frozenset[str] | None = None,
                         typed: frozenset[str] | None = None) -> Any:
        """``evaluate_rows`` (or, without ``rows``, ``evaluate``) on a message whose payload is
        ``payload``, with no message made; only when ``reads_payload_only``."""
        assert self._on_payload is not None
        try:
            return self._on_payload(payload, rows, typed)
        except ExpressionError:
            raise
        except jp_exceptions.JMESPathError as exc:
            raise self._failed(exc, None) from exc  # no message: not known to be the request's

    @property
    def columnar(self) -> frozenset[str] | None:
        """The keys of the rows that ``evaluate_columns`` reads, when the expression reads the
        payload only as its length and as aggregates of its elements' fields (``{count:
        length(payload), qty: sum(payload[*].qty)}``), and nothing else of a message but env and
        secrets: then a foreach's rows need not be built, only those columns.  None otherwise."""
        return self._columns[0] if self._columns is not None else None

    def evaluate_columns(self, count: int, columns: Mapping[str, list[Any]],
                         typed: frozenset[str] | None = None) -> Any:
        """``evaluate_payload(rows, keys, typed)`` for ``count`` rows, plain dicts holding the
        same keys, given as ``columns`` (each key ``columnar`` names -> the rows' values of it, in
        order); only when ``columnar`` is not None."""
        assert self._columns is not None
        try:
            return self._columns[1](count, columns, typed)
        except ExpressionError:
            raise
        except jp_exceptions.JMESPathError as exc:
            raise self._failed(exc, None) from exc  # as evaluate_payload: no message

    def evaluate(self, msg: Message) -> Any:
        if self.direct is not None:
            return self.direct(msg)
        try:
            return self._run(msg)
        except ExpressionError:
            raise
        except jp_exceptions.JMESPathError as exc:
            raise self._failed(exc, msg) from exc

    def _failed(self, exc: jp_exceptions.JMESPathError, msg: Message | None) -> ExpressionError:
        """The error to raise: the caller's (422) when only the request's data can have caused it,
        else the flow's (500).  Only here, once an error came: a request that evaluates pays nothing."""
        part = self.blame.request_part(msg, exc) if self.blame is not None else None
        if part is not None and isinstance(exc, jp_exceptions.JMESPathTypeError):
            return RequestDataInvalid(request_data_detail(part, self.source, exc), internal=f"${{{self.source}}}")
        # the caller sees what went wrong, the log also sees which expression
        return ExpressionError(f"a flow expression could not be evaluated on this message: {exc}",
                               internal=f"${{{self.source}}}")

    def is_true(self, msg: Message) -> bool:
        return not _is_false(self.evaluate(msg))

    def __repr__(self) -> str:
        return f"Expr(${{{self.source}}})"


def request_data_detail(part: str, source: str, exc: jp_exceptions.JMESPathTypeError, braced: bool = True) -> str:
    """What a caller is told when its data does not fit an expression: the part of the request,
    the flow's expression, and the types (never the value: it may be large, and the headers'
    may be credentials)."""
    expected = " or ".join(str(kind) for kind in exc.expected_types)
    got = _JSON_TYPE.get(exc.actual_type, exc.actual_type)  # an array's element is named by its Python type
    shown = f"${{{source}}}" if braced else source
    return (f"the request does not fit this flow in its {part}: {shown} needs {expected} for "
            f"{exc.function_name}(), and got {got}")


_JSON_TYPE = {"null": "nothing (it is missing)", "NoneType": "null", "int": "number", "float": "number",
              "str": "string", "bool": "boolean", "list": "array", "dict": "object"}


_HELPERS: list[Any] = []


def _code_helpers() -> Any:
    """What generated expressions call (engine/expression_code.py): the closures' own helpers."""
    if not _HELPERS:
        from engine import expression_code

        _HELPERS.append(expression_code.Helpers(
            call=_INTERPRETER._functions.call_function, comparators=_COMPARATORS, query_field=_query_field,
            safe_index=_safe_index, numbers=_numbers, strings=_strings, apply_xpath=apply_xpath,
            is_xpath=lambda value: isinstance(value, etree.XPath)))
    return _HELPERS[0]


def _check_functions(node: dict[str, Any]) -> None:
    if node.get("type") == "function_expression" and node["value"] not in _OPTIONS.custom_functions.FUNCTION_TABLE:
        raise ExpressionSyntaxError(f"unknown function {node['value']}()")
    if node.get("type") == "slice" and node.get("children", [None] * 3)[2] == 0:  # a ValueError on every message
        raise ExpressionSyntaxError("a slice's step cannot be 0 ([start:stop:step])")
    if node.get("type") == "function_expression" and node["value"] == "split" \
            and [child.get("type") for child in node.get("children", [])][1:] == ["literal"] \
            and node["children"][1].get("value") == "":
        raise ExpressionSyntaxError("split()'s separator cannot be empty")
    for child in node.get("children", []):
        if isinstance(child, dict):
            _check_functions(child)


def _parse_error_text(exc: jp_exceptions.ParseError) -> str:
    token = getattr(exc, "token_value", None)
    reason = getattr(exc, "msg", "invalid syntax")
    return f"invalid expression: {reason}" + (f" near {token!r}" if token not in (None, "") else "")


def find_expressions(text: str) -> list[tuple[int, int, str]]:
    """Locate each ``${...}`` in ``text``: (start, end, inner source).  ``$${`` escapes."""
    found: list[tuple[int, int, str]] = []
    i = 0
    while True:
        start = text.find("${", i)
        if start < 0:
            return found
        if start > 0 and text[start - 1] == "$":
            i = start + 2
            continue
        depth, j, quote = 1, start + 2, ""
        while j < len(text):
            ch = text[j]
            if quote:
                if ch == "\\":
                    j += 1
                elif ch == quote:
                    quote = ""
            elif ch in "'\"`":
                quote = ch
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        if depth:
            raise ExpressionSyntaxError("unclosed ${ (missing '}')", start)
        found.append((start, j + 1, text[start + 2:j]))
        i = j + 1


def to_text(value: Any) -> str:
    """How a value reads inside a string template."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, etree._Element):
        return "".join(value.itertext())
    from engine import jsonfast
    return jsonfast.dumps(value).decode()


@dataclass
class CompileOptions:
    namespaces: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    secrets: Mapping[str, str] = field(default_factory=Secrets)


class Template:
    """A value from a flow file with ``${...}`` inside, rendered per message.

    A string that is one whole expression keeps the expression's type; a string mixing text
    and expressions renders to text; lists and mappings render item by item.
    """

    __slots__ = ("_options", "_render", "_value", "constant", "expressions", "is_constant")

    def __init__(self, value: Any, options: CompileOptions | None = None) -> None:
        self.expressions: list[Expr] = []
        self._value: Any = _NO_VALUE
        opts = self._options = options or CompileOptions()
        self._render = self._generated(value, opts) if _holds_expressions(value) else self._compile(value, opts)
        self.is_constant = not self.expressions
        self.constant = self._render(None) if self.is_constant else None  # type: ignore[arg-type]

    @property
    def uses_payload(self) -> bool:
        return any(e.uses_payload for e in self.expressions)

    def render(self, msg: Message) -> Any:
        return self.constant if self.is_constant else self._render(msg)

    @property
    def renderer(self) -> Callable[[Message], Any]:
        """``render`` as one function, for a caller that renders per item (no method in between)."""
        if self.is_constant:
            constant = self.constant
            return lambda msg: constant
        return self._render

    def _expr(self, source: str, opts: CompileOptions) -> Expr:
        expr = Expr(source, opts.namespaces, opts.env, opts.secrets)
        self.expressions.append(expr)
        return expr

    def for_items(self, index_var: str) -> tuple[Callable[..., list[Any]], bool] | None:
        """This template rendered for a list of items at once, as a foreach's value-only path
        would render it per item (engine/template_code.py ``Generator.items``), and whether each
        result is a new dict or list (never an XML element); None when the template reads more
        than fields of the item and of the message."""
        if self.is_constant or self._value is _NO_VALUE:
            return None
        from engine import template_code

        def expression(source: str, offset: int | None) -> Expr:
            return Expr(source, self._options.namespaces, self._options.env, self._options.secrets)

        try:
            render_items = template_code.Generator(expression, _text_parts, to_text).items(self._value, index_var)
        except (template_code.TooDeep, template_code.NotPlain, ExpressionSyntaxError):
            return None
        return render_items, isinstance(self._value, (Mapping, list))

    def _generated(self, value: Any, opts: CompileOptions) -> Callable[[Message], Any]:
        """The template as one generated function (engine/template_code.py); the closures below
        for a structure nested too deep for it."""
        from engine import template_code

        def expression(source: str, offset: int | None) -> Expr:
            if offset is None:  # the whole string
                return self._expr(source, opts)
            try:
                return self._expr(source, opts)
            except ExpressionSyntaxError as exc:
                raise ExpressionSyntaxError(str(exc), offset + exc.offset) from exc

        try:
            render = template_code.Generator(expression, _text_parts, to_text).function(value)
        except template_code.TooDeep:
            self.expressions.clear()
            return self._compile(value, opts)
        self._value = value  # for for_items()
        return render

    def _compile(self, value: Any, opts: CompileOptions) -> Callable[[Message], Any]:
        if isinstance(value, str):
            return self._compile_text(value, opts)
        if isinstance(value, Mapping):
            items = [(self._compile(k, opts) if isinstance(k, str) else (lambda m, k=k: k),
                      self._compile(v, opts)) for k, v in value.items()]
            if all(not isinstance(k, str) or not find_expressions(k) for k in value):
                # the keys are text without ${...}: made once, not per message
                fixed = [(to_text(key(None)), render) for key, render in items]  # type: ignore[arg-type]
                return lambda msg: {k: v(msg) for k, v in fixed}
            return lambda msg: {to_text(k(msg)): v(msg) for k, v in items}
        if isinstance(value, list):
            parts = [self._compile(v, opts) for v in value]
            return lambda msg: [p(msg) for p in parts]
        return lambda msg: value

    def _compile_text(self, text: str, opts: CompileOptions) -> Callable[[Message], Any]:
        spans = find_expressions(text)
        if not spans:
            plain = text.replace("$${", "${")
            return lambda msg: plain
        if len(spans) == 1 and spans[0][0] == 0 and spans[0][1] == len(text):
            expr = self._expr(spans[0][2], opts)
            return expr.direct or expr.evaluate
        pieces: list[str | Expr] = []
        cursor = 0
        for start, end, source in spans:
            if start > cursor:
                pieces.append(text[cursor:start].replace("$${", "${"))
            try:
                pieces.append(self._expr(source, opts))
            except ExpressionSyntaxError as exc:
                raise ExpressionSyntaxError(str(exc), start + 2 + exc.offset) from exc
            cursor = end
        if cursor < len(text):
            pieces.append(text[cursor:].replace("$${", "${"))

        def render(msg: Message) -> str:
            return "".join(p if isinstance(p, str) else to_text(p.evaluate(msg)) for p in pieces)
        return render


_NO_VALUE = object()  # a Template whose render is not a generated function: no for_items()


def _holds_expressions(value: Any) -> bool:
    """Whether a template value has a ``${...}`` anywhere (in a string or a mapping's key)."""
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, Mapping):
        for key, item in value.items():
            if _holds_expressions(key) or _holds_expressions(item):
                return True
    elif isinstance(value, list):
        for item in value:
            if _holds_expressions(item):
                return True
    return False


def _text_parts(text: str) -> list[Any]:
    """A template string in order: literal texts (``$${`` unescaped) and (source, offset) for each
    ``${...}``; offset is None when the expression is the whole string (its value keeps its type)."""
    spans = find_expressions(text)
    if not spans:
        return [text.replace("$${", "${")]
    if len(spans) == 1 and spans[0][0] == 0 and spans[0][1] == len(text):
        return [(spans[0][2], None)]
    parts: list[Any] = []
    cursor = 0
    for start, end, source in spans:
        if start > cursor:
            parts.append(text[cursor:start].replace("$${", "${"))
        parts.append((source, start + 2))
        cursor = end
    if cursor < len(text):
        parts.append(text[cursor:].replace("$${", "${"))
    return parts


def compile_condition(text: Any, options: CompileOptions | None = None) -> Expr:
    """A condition is one expression, written with or without its ``${...}``."""
    if not isinstance(text, str):
        raise ExpressionSyntaxError("a condition is an expression string such as ${payload.ok == `true`}")
    stripped = text.strip()
    spans = find_expressions(stripped)
    if spans and (len(spans) != 1 or spans[0][0] != 0 or spans[0][1] != len(stripped)):
        raise ExpressionSyntaxError("a condition is one expression: write it as ${...} with nothing around it")
    source = spans[0][2] if spans else stripped
    opts = options or CompileOptions()
    return Expr(source, opts.namespaces, opts.env, opts.secrets)
