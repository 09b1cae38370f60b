"""Whose mistake a run-time expression error is: the caller's data, or the flow's.

JMESPath raises at run time for one reason the flow cannot see coming: a function given a value
of a type it does not take (``length(payload.items)`` when a caller sends ``{"items": 5}``).  That
is the caller's mistake, a 422, when the value can only have come from the request; and the
flow's own bug, a 500, when it may have come from anything the flow chose (its variables, a
backend's answer, env, a literal of its own).

The decision is made in two halves so that no request pays for it:

- at load time, ``of(tree)`` walks the expression's JMESPath tree and says which roots it reads,
  and whether every value that reaches a typed function argument is a value taken from those roots
  as it is (a field path, an index, a projection, ``a || b`` of such) or a literal that fits the
  argument.  Anything else passed to a typed argument (a function's result, a comparison, a
  multiselect, a literal that does not fit, a path from a literal) puts the error on the flow;
- when an error comes (never before), ``Blame.request_part(msg, error)`` checks that those roots
  are still the caller's on this message: the payload while ``payload_is_request`` and no step
  wrote at, under or above the places of it the expression reads (``payload.items`` reads
  ("items",); a write at ``$.meta.seen`` leaves it the caller's, one at ``$.items`` or ``$`` does
  not: ``Message.payload_is_request_at``), the headers
  while ``headers_are_request`` and none of those read was set or removed by the flow, the query
  and path parameters always.  Headers, query and path parameters hold only text, so a type error on them
  is the caller's only when the value is missing (null): text where a number is needed is the
  flow's reading, whatever the caller sent.

``client`` (the connection's peer), ``auth`` and ``tls`` are not counted as the caller's data:
the caller does not write them as data, the front and the authenticate step do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jmespath import exceptions as jp_exceptions
from jmespath import functions as jp_functions

from engine.message import Message

# the roots whose values are what the caller sent, and how a detail names each
REQUEST_PARTS = {"payload": "body", "headers": "headers", "query": "query string", "path": "path parameters"}
# functions whose expression argument's results are compared or ordered (a type error is on them)
_KEYED = frozenset({"sort_by", "max_by", "min_by"})


class _FlowsOwn(Exception):
    """Raised inside the walk: an error of this expression can be the flow's own."""


class _Scope:
    """What the current node is evaluated against."""


# the context; a value of the caller's data; anything else; the payload itself (a query over it)
ROOT, SOURCED, OTHER, DOCUMENT = _Scope(), _Scope(), _Scope(), _Scope()


@dataclass(frozen=True)
class Blame:
    """What a run-time type error of one expression can be put down to: the request's parts
    ``roots``, when they are still the request's (``headers``: the header names read, None when
    the headers are read whole)."""

    roots: frozenset[str]
    headers: frozenset[str] | None
    # the expression's value is itself read from the roots as it is (``payload.orders``): a split
    # of it splits the caller's data
    value_is_read: bool = False
    # the places of the payload read, as the field names leading to each from its root
    # (``payload.order.lines[0]``: ("order", "lines"); () the whole payload)
    payload_reads: frozenset[tuple[str, ...]] = frozenset({()})

    def request_part(self, msg: Message | None, error: Exception) -> str | None:
        """Which part of the request did not fit, as a detail names it; None when the error is
        the flow's (the roots are no longer the request's, or the error is no type error)."""
        if msg is None or not isinstance(error, jp_exceptions.JMESPathTypeError) or not self.roots_are_request(msg):
            return None
        if "payload" not in self.roots and error.actual_type != "null":
            return None  # text where the flow needs another type: the flow's reading of it
        return " and ".join(REQUEST_PARTS[root] for root in sorted(self.roots))


    def roots_are_request(self, msg: Message) -> bool:
        """Whether the roots read are still what the caller sent on ``msg``: the places of the
        payload read not written by a step, the headers read neither set nor removed by the flow
        (``headers_explicit``)."""
        for root in self.roots:
            if root == "payload" and not all(msg.payload_is_request_at(at) for at in self.payload_reads):
                return False
            if root == "headers":
                explicit = msg.headers_explicit
                if not msg.headers_are_request or (explicit and (self.headers is None or self.headers & explicit)):
                    return False
        return True


def value_is_request(blames: tuple[Blame | None, ...], msg: Message) -> bool:
    """Whether a template's value (``blames``: its expressions' Blames) is the caller's data as
    the caller sent it on ``msg``: every expression reads the request's parts as they are, and
    those are still the request's.  A step that refuses the value (no integer, nothing) answers
    422 then, else 500: ``${payload.seq}`` on the request's body is the caller's, on a body a
    step built, or ``${vars.seq}``, the flow's."""
    return bool(blames) and all(b is not None and b.value_is_read and b.roots_are_request(msg) for b in blames)


def of(tree: dict[str, Any], functions: Mapping[str, Any], document: bool = False) -> Blame | None:
    """The Blame of an expression (its parsed JMESPath tree); None when any run-time error of it
    may be the flow's own.  ``functions``: the function table (name -> {signature}).
    ``document``: the tree is a query over the payload itself (the transform step), not over the
    roots."""
    walk = _Walk(functions)
    try:
        read = walk.value(tree, DOCUMENT if document else ROOT)
    except _FlowsOwn:
        return None
    roots = {"payload"} if document else walk.roots
    if not roots:
        return None
    return Blame(frozenset(roots), None if walk.whole_headers else frozenset(walk.header_names), read,
                 frozenset(walk.payload_reads or {()}))


def _fields_of(steps: list[dict[str, Any]]) -> tuple[str, ...]:
    """The field names leading into the payload from the steps after ``payload``: ``.a.b[0].c``
    gives ("a", "b"), up to the first index, projection or other step (a shorter place: more of
    the payload counts as read, so a step's write nearby puts the error on the flow)."""
    fields: list[str] = []
    for step in steps:
        if step["type"] == "field":
            fields.append(step["value"])
            continue
        first = step.get("children") or [{}]
        if step["type"] in ("index_expression", "projection") and first[0].get("type") == "field":
            fields.append(first[0]["value"])
        break
    return tuple(fields)


class _Walk:
    def __init__(self, functions: Mapping[str, Any]) -> None:
        self.functions = functions
        self.roots: set[str] = set()
        self.header_names: set[str] = set()
        self.whole_headers = False
        self.payload_reads: set[tuple[str, ...]] = set()
        self._checker = jp_functions.Functions()

    def value(self, node: dict[str, Any], scope: _Scope) -> bool:
        """Walk ``node`` evaluated against ``scope``; whether its value is the caller's data as
        it came (or null).  Raises _FlowsOwn where a typed function argument may be the flow's."""
        kind = node["type"]
        children = node.get("children", [])
        if scope is DOCUMENT:  # a query over the payload: a field of it is a place of the payload read
            if kind == "field":
                self.payload_reads.add((node["value"],))
                return True
            if kind in ("current", "identity", "index", "slice"):
                self.payload_reads.add(())
                return True
        if kind == "field":
            if scope is ROOT:
                return self._root(node["value"], whole=True)
            return scope is SOURCED
        if kind in ("current", "identity", "index", "slice"):
            return scope is SOURCED  # @ at the root is the context, which is no value of the request
        if kind in ("subexpression", "index_expression"):
            first, rest = children[0], children[1:]
            if scope is ROOT and first["type"] == "field" and first["value"] == "headers" and rest \
                    and rest[0]["type"] == "field":
                sourced = self._root("headers", whole=False)
                self.header_names.add(rest[0]["value"])
                rest = rest[1:]
            elif scope is ROOT and first["type"] == "field" and first["value"] == "payload" and rest:
                sourced = self._root("payload", whole=False)
                self.payload_reads.add(_fields_of(rest))
            else:
                sourced = self.value(first, scope)
            for child in rest:
                sourced = self.value(child, SOURCED if sourced else OTHER)
            return sourced
        if kind in ("projection", "value_projection", "filter_projection"):
            left = self.value(children[0], scope)
            inner = SOURCED if left else OTHER
            right = self.value(children[1], inner)
            if kind == "filter_projection":
                self.value(children[2], inner)  # the condition: its functions count, its value is not passed on
            return left and right
        if kind == "flatten":
            return self.value(children[0], scope)
        if kind == "pipe":
            left = self.value(children[0], scope)
            return self.value(children[1], SOURCED if left else OTHER)
        if kind in ("or_expression", "and_expression"):
            left = self.value(children[0], scope)
            right = self.value(children[1], scope)
            return left and right
        if kind in ("comparator", "not_expression", "multi_select_list", "multi_select_dict", "key_val_pair"):
            for child in children:  # new values (booleans, lists, objects): the flow's shape, whatever is inside
                self.value(child, scope)
            return False
        if kind == "function_expression":
            self._function(node, scope)
            return False
        if kind == "literal":
            return False
        raise _FlowsOwn  # a node this walk does not know (expref outside a function): be safe

    def _root(self, name: str, whole: bool) -> bool:
        if name not in REQUEST_PARTS:
            raise _FlowsOwn  # vars, env, secret, params, auth...: what the flow chose
        self.roots.add(name)
        if name == "headers" and whole:
            self.whole_headers = True
        elif name == "payload" and whole:
            self.payload_reads.add(())
        return True

    def _function(self, node: dict[str, Any], scope: _Scope) -> None:
        name = node["value"]
        entry = self.functions.get(name)
        if entry is None:
            raise _FlowsOwn
        signature = entry["signature"]
        arguments = node.get("children", [])
        # each argument's value walked once (an expref is evaluated against the others' values)
        sourced_of = {i: self.value(arg, scope) for i, arg in enumerate(arguments) if arg["type"] != "expref"}
        sourced = all(sourced_of.values())
        for i, arg in enumerate(arguments):
            if not signature:
                raise _FlowsOwn  # takes no argument: an arity error, which is the flow's
            allowed = signature[min(i, len(signature) - 1)]["types"]
            if arg["type"] == "expref":
                keyed = self.value(arg["children"][0], SOURCED if sourced else OTHER)
                if name in _KEYED and not keyed:
                    raise _FlowsOwn
            elif arg["type"] == "literal":
                if allowed and name != "xpath":  # xpath's second argument is its compiled XPath
                    self._fits(arg["value"], allowed, name)
            elif allowed and not sourced_of[i]:
                raise _FlowsOwn

    def _fits(self, value: Any, allowed: list[str], name: str) -> None:
        try:
            self._checker._type_check_single(value, allowed, name)
        except jp_exceptions.JMESPathError:
            raise _FlowsOwn from None
