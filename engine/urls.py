"""URLs built from templates: every ``${...}`` value is percent-encoded for where it lands.

A request's values (path parameters, query values, headers, payload fields) are data: put
into a backend URL as they are, ``1?admin=true`` would add a query, ``..`` would climb out
of the endpoint's base path and ``#`` would cut the path.  So a call's ``path`` template is
compiled as a URL template:

- a ``${...}`` in the path part is encoded as one segment: everything but RFC 3986's
  unreserved characters is percent-encoded, ``/`` included; a value that would make a whole
  segment ``.`` or ``..`` is refused (400 ``bad-url-value``): backends decode ``%2E%2E``
  and climb all the same;
- after a literal ``?``, a ``${...}`` is encoded as a query name or value (``&``, ``=``,
  ``+``, ``#`` encoded too);
- a path that is one whole ``${...}`` (``path: ${payload.path}``) is a path: its ``/`` stay
  as they are, every other character is encoded as in a segment (``?`` and ``#`` included),
  and a ``.`` or ``..`` segment is refused;
- ``${raw(...)}`` inserts the value as the author computed it, for a value that is a piece
  of URL itself (``${raw(vars.next_page)}``); only characters never valid in a URL (spaces,
  controls, non-ASCII) are encoded.  The connector still refuses dot segments.

``requote`` and ``check_path`` are the connector's side: the final path is made a valid
URL (a ``%`` not starting an escape is encoded) and never climbs above the base path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jmespath
from jmespath import exceptions as jp_exceptions

from engine.errors import BadRequest
from engine.expressions import CompileOptions, Expr, ExpressionSyntaxError, find_expressions, to_text
from engine.message import Message

# RFC 3986 unreserved characters: never encoded.
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
# Characters allowed in a URL as they are (unreserved, reserved, and % for escapes).
_URL_CHARS = _UNRESERVED + ":/?#[]@!$&'()*+,;=%"
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9\-._~]*")
_NEEDS_REQUOTE = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]|%(?![0-9A-Fa-f]{2})")
_DOT_SEGMENT = re.compile(r"(?:^|/)(?:\.|%2[eE]){1,2}(?:/|$)")


class BadUrlValue(BadRequest):
    """A value that cannot be placed in a backend URL where the flow puts it."""

    code = "bad-url-value"
    title = "Value not usable in a URL"


def _encode(value: str, safe: str) -> str:
    data = value.encode("utf-8")
    out: list[str] = []
    for byte in data:
        char = chr(byte)
        out.append(char if byte < 128 and char in safe else f"%{byte:02X}")
    return "".join(out)


def quote_segment(value: str) -> str:
    """``value`` as (part of) one path segment: only unreserved characters stay as they are."""
    if _SAFE_SEGMENT.fullmatch(value):
        return value
    return _encode(value, _UNRESERVED)


def quote_query(value: str) -> str:
    """``value`` as a query name or value (a space is %20, which every decoder reads)."""
    return quote_segment(value)


def requote(url: str) -> str:
    """``url`` with what is never valid in a URL encoded: spaces, controls, non-ASCII, and a
    ``%`` that does not start an escape.  Escapes and reserved characters stay as they are."""
    if not _NEEDS_REQUOTE.search(url):
        return url
    out: list[str] = []
    for i, char in enumerate(url):
        if char == "%" and not re.match(r"[0-9A-Fa-f]{2}", url[i + 1:i + 3]):
            out.append("%25")
        elif char in _URL_CHARS:
            out.append(char)
        else:
            out.append(_encode(char, ""))
    return "".join(out)


def check_path(path: str) -> None:
    """Refuse a path with a ``.`` or ``..`` segment (plain or percent-encoded): it would address
    the backend outside the endpoint's base path."""
    head = path.split("?", 1)[0].split("#", 1)[0]
    if ("." in head or "%" in head) and _DOT_SEGMENT.search(head):
        raise BadUrlValue("the backend path has a '.' or '..' segment, which would leave the endpoint's base path")


def _is_raw(source: str) -> bool:
    try:
        parsed = jmespath.compile(source).parsed
    except (jp_exceptions.ParseError, jp_exceptions.LexerError):
        return False  # Expr reports the error with its position
    return bool(parsed.get("type") == "function_expression" and parsed.get("value") == "raw")


SEGMENT, QUERY, RAW, PATH = "segment", "query", "raw", "path"


def quote_path(value: str) -> str:
    """``value`` as a path: each segment encoded, the slashes between them kept."""
    return "/".join(quote_segment(segment) for segment in value.split("/"))


class UrlTemplate:
    """A path template (``/orders/${path.id}?view=${query.view}``), compiled at load.

    ``render(msg)`` gives the encoded path; see the module docstring for how each value is
    encoded.  ``expressions`` lists the compiled expressions, like ``Template``'s."""

    __slots__ = ("_render", "constant", "expressions", "is_constant")

    def __init__(self, text: Any, options: CompileOptions | None = None) -> None:
        opts = options or CompileOptions()
        self.expressions: list[Expr] = []
        text = "" if text is None else str(text)
        spans = find_expressions(text)
        self.is_constant = not spans
        self.constant = requote(text.replace("$${", "${")) if not spans else ""
        pieces: list[str | tuple[Expr, str]] = []
        cursor = 0
        in_query = False
        for start, end, source in spans:
            literal = text[cursor:start].replace("$${", "${")
            if literal:
                pieces.append(requote(literal))
                in_query = in_query or "?" in literal or "#" in literal
            try:
                expr = Expr(source, opts.namespaces, opts.env, opts.secrets)
            except ExpressionSyntaxError as exc:
                raise ExpressionSyntaxError(str(exc), start + 2 + exc.offset) from exc
            self.expressions.append(expr)
            whole = start == 0 and end == len(text)
            pieces.append((expr, RAW if _is_raw(source) else PATH if whole else QUERY if in_query else SEGMENT))
            cursor = end
        if cursor < len(text):
            pieces.append(requote(text[cursor:].replace("$${", "${")))
        self._render = self._compile(pieces)

    @property
    def uses_payload(self) -> bool:
        return any(e.uses_payload for e in self.expressions)

    def render(self, msg: Message) -> str:
        return self.constant if self.is_constant else self._render(msg)

    @staticmethod
    def _compile(pieces: list[str | tuple[Expr, str]]) -> Callable[[Message], str]:
        parts: list[Callable[[Message], str]] = []
        for index, piece in enumerate(pieces):
            if isinstance(piece, str):
                parts.append(_literal(piece))
                continue
            expr, mode = piece
            if mode == SEGMENT:
                before = pieces[index - 1] if index else "/"
                after = pieces[index + 1] if index + 1 < len(pieces) else "/"
                whole = (isinstance(before, str) and before.endswith("/")
                         and isinstance(after, str) and after[:1] in ("/", "?", "#", ""))
                parts.append(_segment(expr, whole))
            else:
                parts.append(_encoded(expr, requote if mode == RAW else quote_path if mode == PATH else quote_query))

        def render(msg: Message) -> str:
            return "".join(part(msg) for part in parts)
        return render


def _literal(text: str) -> Callable[[Message], str]:
    return lambda msg: text


def _encoded(expr: Expr, encode: Callable[[str], str]) -> Callable[[Message], str]:
    return lambda msg: encode(to_text(expr.evaluate(msg)))


def _segment(expr: Expr, whole: bool) -> Callable[[Message], str]:
    """A value encoded as a path segment; when it is the whole segment, '.' and '..' are refused."""
    def encode(msg: Message) -> str:
        value = to_text(expr.evaluate(msg))
        if whole and value in (".", ".."):
            raise BadUrlValue(f"{value!r} cannot be a path segment of a backend URL: it would address the backend "
                              "outside the endpoint's base path", internal=f"${{{expr.source}}}")
        return quote_segment(value)
    return encode
