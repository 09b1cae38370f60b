"""A template compiled to one Python function, at load time.

A template (a string, or a structure of strings, lists and mappings holding ``${...}``) becomes
the source text of one function ``render(msg)``, compiled once: a mapping is a dict display, a
list a list display, a mixed string a join, a ``${...}`` that is a path of fields from a message
root (``payload.id``, ``vars.index``, ``headers."x-a"``) reads the message inline, and any other
``${...}`` calls its compiled ``Expr.evaluate``.  A render is then one call, with no walk over the
template's structure and no closure per part (a split renders its item template per item).

Nothing of the flow file becomes code: field names, keys and texts enter the source as Python
literals made by ``repr`` of ``str``/``int`` values, anything else as a bound name.  The answers
are the closures' (``Template._compile``): the same values, the same fresh lists and dicts per
render, the same order of evaluation, so the same first error.  A structure nested deeper than
``MAX_DEPTH`` keeps the closures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.message import Message

MAX_DEPTH = 40  # Python's parser refuses displays nested a few hundred deep; YAML bodies are shallow

# where each message root is read; params, auth and tls are attributes set by steps, client the front's
ROOT_SOURCE = {
    "payload": "msg.payload",
    "headers": "msg.headers",
    "vars": "msg.vars",
    "path": "msg.path_params",
    "query": "msg.query",
    "error": "msg.error",
    "status": "msg.status",
    "method": "msg.method",
    "correlation_id": "msg.correlation_id",
    "params": "msg.attributes.get('params')",
    "auth": "msg.attributes.get('auth')",
    "tls": "msg.attributes.get('tls')",
    "client": "msg.client",
}

_PAYLOAD = "\x00payload\x00"  # where msg.payload is read, until we know whether it is read once up front


def field_of(value: Any, name: str) -> Any:
    """One step of a field path on a value that is not a plain dict (as ``_direct_getter``)."""
    return value.get(name) if isinstance(value, Mapping) else None


class TooDeep(Exception):
    """The structure is nested past MAX_DEPTH: the caller keeps its closures."""


class NotPlain(Exception):
    """A ``${...}`` that items() cannot read from the item or the parent message."""


class CodeWriter:
    """What a generator writes a function's source with: the names its code reads (bound values
    and helpers), numbered temporaries, and whether its first read is the payload. The template
    and expression generators share it."""

    names: dict[str, Any]
    _temps: int
    _first_is_payload: bool | None

    def run_source(self, source: str, codes: dict[str, Any], filename: str) -> dict[str, Any]:
        """The namespace ``source`` defines with ``names`` bound; its code object kept in ``codes``
        (flows repeat their shapes; at most 4096 sources)."""
        code = codes.get(source)
        if code is None:
            code = compile(source, filename, "exec")
            if len(codes) < 4096:
                codes[source] = code
        namespace = dict(self.names)
        exec(code, namespace)  # our generated source: literals made by repr, the rest bound names
        return namespace

    def _first(self, is_payload: bool) -> None:
        if self._first_is_payload is None:
            self._first_is_payload = is_payload

    # --- literals and names -------------------------------------------------------------------

    def constant(self, value: Any) -> str:
        if value is None or type(value) in (bool, int, str):
            return self.literal(value)
        return self.bind(value)  # the same object every call, as the closure returned it

    @staticmethod
    def literal(value: Any) -> str:
        assert value is None or type(value) in (bool, int, str)
        return repr(value)  # a Python literal of exactly this value

    def bind(self, value: Any) -> str:
        name = f"b{len(self.names)}_"
        self.names[name] = value
        return name

    def _temp(self) -> str:
        self._temps += 1
        return f"t{self._temps}_"


class Generator(CodeWriter):
    """Builds the source of one render function; ``expression`` is the caller's way of compiling
    one ``${...}`` (it records the Expr, so the template's list of expressions is unchanged)."""

    def __init__(self, expression: Callable[[str, int | None], Any], text_parts: Callable[[str], list[Any]],
                 to_text: Callable[[Any], str]) -> None:
        self._to_text = to_text
        self._expression = expression  # (source, offset in its string or None for the whole) -> Expr
        self._text_parts = text_parts  # a string -> [str | (source, offset)] in order
        self.names: dict[str, Any] = {"_field": field_of, "_to_text": to_text}
        self._temps = 0
        self._payload_reads = 0
        self._first_is_payload: bool | None = None  # is the first thing the render does reading the payload?
        self._index_var: str | None = None  # set by items(): the loop's own names replace some reads
        self._subscripts = False  # items(), its fast variant: the item is a plain dict holding each field read

    def function(self, value: Any) -> Callable[[Message], Any]:
        body = self.value(value, 0)
        if self._first_is_payload and self._payload_reads > 1:
            # nothing before it can raise or differ: read (and parse) the payload once, first
            source = f"def render(msg):\n    p_ = msg.payload\n    return {body.replace(_PAYLOAD, 'p_')}\n"
        else:
            source = f"def render(msg):\n    return {body.replace(_PAYLOAD, 'msg.payload')}\n"
        render: Callable[[Message], Any] = self._define(source)
        return render

    def items(self, value: Any, index_var: str) -> Callable[..., list[Any]]:
        """The template rendered for every item of a list at once, as a foreach would render it
        on a message per item whose payload is the item and whose ``vars.<index_var>`` is its
        position: ``render_items(msg, items, plain_=False)`` is one list comprehension.  Only for
        templates whose every ``${...}`` is a path of fields (``NotPlain`` otherwise), and no whole
        copy the fork makes (``${headers}``, ``${vars}``...), so reading the parent message is the
        same.  ``plain_`` says that the items are the JSON parser's own values (a dict among them
        is a plain dict): then no item's type is tested before its fields are read."""
        self._index_var = index_var
        exact = self.value(value, 0)
        self._subscripts = True
        fast = self.value(value, 0)
        if fast == exact:  # nothing read from the item itself
            source = ("def render_items(msg, items, plain_=False):\n"
                      f"    return [{exact} for index_, item_ in enumerate(items)]\n")
        else:
            # An item that is a plain dict has its fields read by subscript (one type test per
            # item, no .get call per field) while no item has missed one; the first KeyError
            # (a field an item lacks) renders again, and from then on, with .get: a render only
            # reads, so rendering again answers as rendering once.  Items from the JSON parser
            # are subscripted untested: any of them that is no dict (a list, text, a number,
            # true, false or null) raises TypeError at its first field, and all render again
            # with the test
            self.names["fast_"] = [True]
            source = ("def render_items(msg, items, plain_=False):\n"
                      "    if fast_[0]:\n"
                      "        try:\n"
                      "            if plain_:\n"
                      "                try:\n"
                      f"                    return [{fast} for index_, item_ in enumerate(items)]\n"
                      "                except TypeError:\n"
                      "                    pass\n"
                      f"            return [({fast} if type(item_) is dict else {exact}) "
                      "for index_, item_ in enumerate(items)]\n"
                      "        except KeyError:\n"
                      "            fast_[0] = False\n"
                      f"    return [{exact} for index_, item_ in enumerate(items)]\n")
        render_items: Callable[..., list[Any]] = self._define(source)
        keys = self._constant_keys(value)
        if keys is not None:  # every result is a new plain dict holding these keys (read by foreach's reduce)
            vars(render_items)["row_keys"] = keys
            # of those, the keys whose value is a value found in the item (the JSON parser's, when it is)
            vars(render_items)["item_keys"] = self._item_keys(value)
            columns = self._columns(value)
            if columns is not None:
                vars(render_items)["columns"] = columns
        return render_items

    def _columns(self, value: Mapping[Any, Any]) -> dict[str, Callable[..., list[Any]]] | None:
        """For a mapping template (constant keys) each of whose values is a primitive constant or
        one whole ``${...}``, neither of which can raise: a key -> ``column(msg, items, plain_=False)``,
        the values ``render_items`` would give that key, in item order, without making the rows.
        A foreach whose reduce reads only some columns (engine/expressions.py ``Expr.columnar``)
        renders those alone: leaving a key unrendered changes nothing, since rendering it could
        neither raise nor be seen.  None for any other template."""
        columns: dict[str, Callable[..., list[Any]]] = {}
        for key, part in value.items():
            if isinstance(part, str):
                parts = self._text_parts(part)
                if not (all(isinstance(p, str) for p in parts)
                        or (len(parts) == 1 and not isinstance(parts[0], str) and parts[0][1] is None)):
                    return None  # text around a ${...}: its value's text could raise (to_text)
            elif not (part is None or type(part) in (bool, int, float)):
                return None
            self._subscripts = False
            exact = self.value(part, 1)
            self._subscripts = True
            fast = self.value(part, 1)
            each = "index_, item_ in enumerate(items)" if "index_" in exact else "item_ in items"
            if fast == exact:  # nothing read from the item itself
                source = ("def column(msg, items, plain_=False):\n"
                          f"    return [{exact} for {each}]\n")
            else:  # as render_items: a plain dict's fields by subscript, the first one missing renders again
                source = ("def column(msg, items, plain_=False):\n"
                          "    try:\n"
                          "        if plain_:\n"
                          "            try:\n"
                          f"                return [{fast} for {each}]\n"
                          "            except TypeError:\n"
                          "                pass\n"
                          f"        return [({fast} if type(item_) is dict else {exact}) for {each}]\n"
                          "    except KeyError:\n"
                          "        pass\n"
                          f"    return [{exact} for {each}]\n")
            name = self._to_text(key) if not isinstance(key, str) else "".join(self._text_parts(key))
            columns[name] = self.run_source(source, _CODE, "<template>")["column"]
        return columns

    def _item_keys(self, value: Mapping[Any, Any]) -> frozenset[str]:
        """The keys of a mapping template (with constant keys) whose value is one whole ``${...}``
        reading a path of fields of the item: what it renders is the item or a value inside it."""
        keys = set()
        for key, part in value.items():
            if not isinstance(part, str):
                continue
            parts = self._text_parts(part)
            if len(parts) != 1 or isinstance(parts[0], str) or parts[0][1] is not None:
                continue
            fields = self._expression(parts[0][0], None).fields
            if fields is not None and fields[0] == "payload":
                keys.add(self._to_text(key) if not isinstance(key, str) else "".join(self._text_parts(key)))
        return frozenset(keys)

    def _constant_keys(self, value: Any) -> frozenset[str] | None:
        """The keys of a mapping template whose keys hold no ``${...}``, as its renders have them."""
        if not isinstance(value, Mapping):
            return None
        keys = set()
        for key in value:
            if not isinstance(key, str):
                keys.add(self._to_text(key))
                continue
            parts = self._text_parts(key)
            if not all(isinstance(p, str) for p in parts):
                return None
            keys.add("".join(parts))
        return frozenset(keys)

    def _define(self, source: str) -> Any:
        namespace = self.run_source(source, _CODE, "<template>")
        return namespace["render_items" if "render_items" in namespace else "render"]

    # --- the parts ----------------------------------------------------------------------------

    def value(self, value: Any, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise TooDeep
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            pairs = [f"{self.key(k)}: {self.value(v, depth + 1)}" for k, v in value.items()]
            return "{" + ", ".join(pairs) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(self.value(v, depth + 1) for v in value) + "]"
        return self.constant(value)

    def key(self, key: Any) -> str:
        if not isinstance(key, str):
            return self.literal(self._to_text(key))
        parts = self._text_parts(key)
        if all(isinstance(p, str) for p in parts):
            return self.literal("".join(parts))
        return self.joined(parts)

    def text(self, text: str) -> str:
        parts = self._text_parts(text)
        if len(parts) == 1 and not isinstance(parts[0], str) and parts[0][1] is None:
            return self.expression(parts[0][0], parts[0][1])  # one whole ${...}: its value, typed
        if all(isinstance(p, str) for p in parts):
            return self.literal("".join(parts))
        return self.joined(parts)

    def joined(self, parts: list[Any]) -> str:
        pieces = [self.literal(p) if isinstance(p, str) else f"_to_text({self.expression(p[0], p[1])})"
                  for p in parts]
        if len(pieces) == 1:
            return pieces[0]
        return "''.join((" + ", ".join(pieces) + ",))"

    def expression(self, source: str, offset: int | None) -> str:
        expr = self._expression(source, offset)
        fields = expr.fields
        if self._index_var is not None:
            return self._item_read(fields)
        if fields is None or fields[0] not in ROOT_SOURCE:
            self._first(False)
            return f"{self.bind(expr.evaluate)}(msg)"
        root, names = fields[0], fields[1:]
        if root == "payload":
            self._first(True)
            self._payload_reads += 1
            read = _PAYLOAD
        else:
            self._first(False)
            read = ROOT_SOURCE[root]
        return self._fields(read, names)

    def _item_read(self, fields: tuple[str, ...] | None) -> str:
        """A read in items(): the payload is the item, vars.<index_var> the position, the rest
        is read from the parent message (the fork would hold the same values)."""
        if fields is None or fields[0] not in ROOT_SOURCE:
            raise NotPlain
        root, names = fields[0], fields[1:]
        if root == "payload" and names and self._subscripts:
            read, names = f"item_[{self.literal(names[0])}]", names[1:]  # a plain dict's field that is there
        elif root == "payload":
            read = "item_"
        elif root == "vars" and names and names[0] == self._index_var:
            read, names = "index_", names[1:]
        elif names or root in ("status", "method", "correlation_id"):
            read = ROOT_SOURCE[root]
        else:
            raise NotPlain  # ${headers}, ${vars}, ${path}...: the fork's own copy, not the parent's
        return self._fields(read, names)

    def _fields(self, read: str, names: tuple[str, ...]) -> str:
        for name in names:  # value.get(name) for a dict, else None unless a mapping: as _direct_getter
            temp = self._temp()
            read = f"({temp}.get({name!r}) if type({temp} := {read}) is dict else _field({temp}, {name!r}))"
        return read



_CODE: dict[str, Any] = {}  # generated source -> its code object: flows repeat their templates' shapes
