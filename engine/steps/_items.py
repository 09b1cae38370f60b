"""Reading the items of a split from a body without holding the body: a JSON array through
ijson's incremental parser, an XML node set through lxml's pull parser, both fed chunk by chunk.

Either way memory stays at about one item (plus the chunk being parsed), so a 100 MiB array
splits in the memory of a few items.  XML keeps the engine's guards: no DOCTYPE, no entity
expansion, no network, libxml2's depth and text limits.
"""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import ijson  # type: ignore[import-untyped]
from lxml import etree

from engine.errors import MalformedBody
from engine.xmlsafe import _DOCTYPE_IN_PROLOG, DOCTYPE_REFUSED

_JSON_PATH = re.compile(r"^\$((?:\.[A-Za-z_][A-Za-z0-9_-]*|\[\*\])*)\[\*\]$")
_PROLOG_BYTES = 4096
_FEED_BYTES = 64 * 1024


def ijson_prefix(path: str) -> str:
    """The ijson prefix of a JSONPath naming an array's items: ``$[*]`` -> ``item``,
    ``$.orders[*]`` -> ``orders.item``, ``$.a[*].b[*]`` -> ``a.item.b.item``."""
    match = _JSON_PATH.match(path)
    if match is None:
        raise ValueError(f"stream json: {path!r} is not a path to array items; write it as $[*], $.orders[*] "
                         f"or $.batch.lines[*] (names and [*] only)")
    parts: list[str] = []
    for piece in re.findall(r"\.([A-Za-z_][A-Za-z0-9_-]*)|(\[\*\])", match.group(1)):
        parts.append(piece[0] if piece[0] else "item")
    parts.append("item")
    return ".".join(parts)


class _ChunkReader:
    """An async file-like view (``read(n)``) of an async iterator of byte chunks, for ijson."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._done = False

    async def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            try:
                self._buffer += await self._chunks.__anext__()
            except StopAsyncIteration:
                self._done = True
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


async def json_items(chunks: AsyncIterator[bytes], prefix: str) -> AsyncIterator[Any]:
    """Each item under ``prefix``, parsed as it completes; malformed JSON is a 400."""
    try:
        async for item in ijson.items_async(_ChunkReader(chunks), prefix, use_float=True):
            yield item
    except ijson.JSONError as exc:
        raise MalformedBody(f"malformed JSON while splitting the body: {exc}") from None


def _pull_parser(tag: str) -> etree.XMLPullParser:
    return etree.XMLPullParser(events=("end",), tag=tag, resolve_entities=False, no_network=True,
                               load_dtd=False, huge_tree=False, remove_blank_text=False)


async def xml_items(chunks: AsyncIterator[bytes], element: str) -> AsyncIterator[etree._Element]:
    """Each element named ``element`` (any namespace, or ``{uri}name``), as a standalone copy;
    what was read before it is freed as parsing goes on."""
    tag = element if element.startswith("{") else "{*}" + element
    parser = _pull_parser(tag)
    head = b""
    checked = False
    try:
        async for chunk in chunks:
            if not checked:
                head += chunk
                if len(head) < _PROLOG_BYTES:
                    continue
                if _DOCTYPE_IN_PROLOG.match(head):
                    raise MalformedBody(DOCTYPE_REFUSED)
                checked, chunk, head = True, head, b""
            for item in _feed(parser, chunk):
                yield item
        if not checked:
            if _DOCTYPE_IN_PROLOG.match(head):
                raise MalformedBody(DOCTYPE_REFUSED)
            for item in _feed(parser, head):
                yield item
        parser.close()
        for item in _ready(parser):
            yield item
    except etree.XMLSyntaxError as exc:
        raise MalformedBody(f"malformed XML while splitting the body: {exc}") from None


def _feed(parser: etree.XMLPullParser, chunk: bytes) -> Iterator[etree._Element]:
    # libxml2's push parser refuses a single input larger than its buffer limit: feed slices
    for start in range(0, len(chunk), _FEED_BYTES):
        parser.feed(chunk[start:start + _FEED_BYTES])
        yield from _ready(parser)


def _ready(parser: etree.XMLPullParser) -> list[etree._Element]:
    items: list[etree._Element] = []
    for _event, element in parser.read_events():
        if element.getroottree().docinfo.internalDTD is not None:
            raise MalformedBody(DOCTYPE_REFUSED)
        # the item as a document of its own (so / is the item), then free what is done: the
        # element's content and the siblings before it
        items.append(copy.deepcopy(element))
        element.clear(keep_tail=False)
        parent = element.getparent()
        while element.getprevious() is not None and parent is not None:
            del parent[0]
    return items
