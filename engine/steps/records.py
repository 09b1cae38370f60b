"""The ``records`` step: CSV and fixed-width records to a JSON array of objects, and back, streamed.

The conversion runs chunk by chunk as the next step (a file write, a call, the response) reads
the body: a file of a million rows is never held whole, only the rows of the chunk at hand.
A row that breaks the format (a field count other than the header's, text that is not in the
declared encoding) fails the flow with the line number, at the moment it is reached; a file
source then moves the file to its failed folder with that reason.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

from engine import jsonfast
from engine.compiler import CompileContext, StepConfigError
from engine.errors import FlowError
from engine.message import Message
from engine.registry import StepFn, step_kind

OUT_CHUNK = 64 * 1024
CSV_BATCH = 256  # records per csv.reader


class RecordsInvalid(FlowError):
    status = 422
    code = "records-invalid"
    title = "Records do not match the declared format"


FIELD = {
    "type": "object", "additionalProperties": False, "required": ["name"],
    "properties": {"name": {"type": "string", "description": "The JSON key."},
                   "width": {"type": "integer", "minimum": 1, "description": "Characters, fields in order."},
                   "start": {"type": "integer", "minimum": 1, "description": "First column (1-based)."},
                   "end": {"type": "integer", "minimum": 1, "description": "Last column (inclusive)."}},
}


@step_kind(
    "records",
    summary="Convert CSV or fixed-width records to a JSON array of objects (from:), or a JSON array back to them "
            "(to:), streamed row by row.",
    category="transform",
    schema={
        "type": "object", "additionalProperties": False,
        "properties": {
            "from": {"enum": ["csv", "fixed"], "description": "Read these records; the body becomes a JSON array."},
            "to": {"enum": ["csv", "fixed"], "description": "Write the JSON array of objects as these records."},
            "header": {"type": "boolean", "description": "(csv) The first row names the fields (default true); "
                                                         "with to: write it."},
            "columns": {"type": "array", "items": {"type": "string"},
                        "description": "(csv) The field names: without a header, or the columns (and order) to "
                                       "write."},
            "delimiter": {"type": "string", "minLength": 1, "maxLength": 1, "description": "(csv) Default ,"},
            "quote": {"type": "string", "minLength": 1, "maxLength": 1, "description": "(csv) Default \""},
            "encoding": {"type": "string", "description": "Of the records text (default utf-8)."},
            "fields": {"type": "array", "items": FIELD, "minItems": 1,
                       "description": "(fixed) The fields: widths in order, or start/end columns."},
            "trim": {"type": "boolean", "description": "(fixed) Strip the padding spaces (default true)."},
            "strict": {"type": "boolean", "description": "A row with another number of fields than the header "
                                                         "fails (default true); else missing ones are null."},
        },
        "oneOf": [{"required": ["from"]}, {"required": ["to"]}],
    },
    examples=[{"from": "csv"}, {"from": "csv", "delimiter": ";", "encoding": "latin-1"},
              {"to": "csv", "columns": ["sku", "qty"]},
              {"from": "fixed", "fields": [{"name": "sku", "width": 6}, {"name": "qty", "width": 4}]}],
)
def compile_records(config: Any, ctx: CompileContext) -> StepFn:
    encoding = str(config.get("encoding", "utf-8"))
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise StepConfigError(f"unknown encoding {encoding!r}", "encoding") from None
    fmt = str(config.get("from") or config.get("to"))
    slices = _slices(config) if fmt == "fixed" else []
    options = {"delimiter": str(config.get("delimiter", ",")), "quotechar": str(config.get("quote", '"'))}
    header = bool(config.get("header", True))
    columns = [str(c) for c in config.get("columns") or []] or None
    if fmt == "csv" and "from" in config and not header and not columns:
        raise StepConfigError("without a header row, name the fields with columns", "columns")
    strict = bool(config.get("strict", True))
    trim = bool(config.get("trim", True))

    if "from" in config:
        def parse(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            if fmt == "csv":
                rows = _csv_rows(chunks, encoding, options, header, columns, strict)
            else:
                rows = _fixed_rows(chunks, encoding, slices, trim)
            return _json_array(rows)
        convert = parse
        content_type = "application/json"
    else:
        def write(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            if fmt == "csv":
                return _write_csv(_json_items(chunks), encoding, options, header, columns)
            return _write_fixed(_json_items(chunks), encoding, slices)
        convert = write
        content_type = "text/csv" if fmt == "csv" else "text/plain"

    async def run(msg: Message) -> None:
        source = msg.take_stream()
        chunks = source if source is not None else _one(msg.body)
        msg.set_stream(convert(chunks), f"{content_type}; charset={encoding}" if "to" in config else content_type)

    return run


def _slices(config: Any) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    position = 0
    for index, field in enumerate(config.get("fields") or []):
        if "width" in field:
            start, end = position, position + int(field["width"])
        elif "start" in field and "end" in field:
            start, end = int(field["start"]) - 1, int(field["end"])
            if end <= start:
                raise StepConfigError("end is before start", ("fields", index, "end"))
        else:
            raise StepConfigError("a fixed field needs width, or start and end", ("fields", index))
        out.append((str(field["name"]), start, end))
        position = end
    if not out:
        raise StepConfigError("fixed-width records need fields", "fields")
    return out


async def _one(body: bytes) -> AsyncIterator[bytes]:
    if body:
        yield body


async def _lines(chunks: AsyncIterator[bytes], encoding: str) -> AsyncIterator[tuple[int, str]]:
    """Physical lines (with their numbers, without the line break), decoded incrementally."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    pending = ""
    number = 0
    final = False
    iterator = chunks.__aiter__()
    while not final:
        try:
            chunk = await iterator.__anext__()
        except StopAsyncIteration:
            chunk, final = b"", True
        try:
            pending += decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            before = pending + chunk[:max(0, exc.start)].decode(encoding, errors="replace")
            raise RecordsInvalid(f"line {number + 1 + before.count(chr(10))}: not valid {encoding} text "
                                 f"({exc.reason})") from None
        if number == 0 and pending.startswith("\ufeff"):
            pending = pending[1:]
        *complete, pending = pending.split("\n")
        for line in complete:
            number += 1
            yield number, line.removesuffix("\r")
    if pending:
        yield number + 1, pending.removesuffix("\r")


async def _csv_rows(chunks: AsyncIterator[bytes], encoding: str, options: dict[str, str], header: bool,
                    columns: list[str] | None, strict: bool) -> AsyncIterator[dict[str, Any]]:
    quote = options["quotechar"]
    names = columns if (columns and not header) else None
    record: list[str] = []
    first_line = 0
    # whole records (a quoted field may span lines) parsed CSV_BATCH at a time by one csv.reader:
    # a reader per record cost more than the parsing
    batch: list[str] = []
    starts: list[int] = []

    def parse() -> list[tuple[int, list[str]]]:
        parsed: list[tuple[int, list[str]]] = []
        reader = csv.reader(batch, **options)  # type: ignore[arg-type]
        try:
            for start in starts:
                parsed.append((start, next(reader)))
        except csv.Error as exc:
            raise RecordsInvalid(f"line {starts[len(parsed)]}: {exc}") from None
        batch.clear()
        starts.clear()
        return parsed

    async def flushed() -> AsyncIterator[tuple[int, list[str]]]:
        nonlocal record, first_line
        async for number, line in _lines(chunks, encoding):
            if not record:
                first_line = number
            record.append(line)
            text = "\n".join(record) if len(record) > 1 else line
            if text.count(quote) % 2:
                continue  # inside a quoted field that goes on on the next line
            record = []
            if not text.strip():
                continue
            batch.append(text)
            starts.append(first_line)
            if len(batch) >= CSV_BATCH or (names is None and not columns):
                for parsed in parse():
                    yield parsed
        if batch:
            for parsed in parse():
                yield parsed

    async for first, values in flushed():
        if names is None:
            names = columns or values
            if len(set(names)) != len(names):
                raise RecordsInvalid(f"line {first}: the header names a field twice: {', '.join(names)}")
            continue
        if len(values) != len(names):
            if strict:
                raise RecordsInvalid(f"line {first}: {len(values)} fields where the header has {len(names)}")
            padded: list[str | None] = [*values, *([None] * len(names))][:len(names)]
            yield dict(zip(names, padded, strict=True))
            continue
        yield dict(zip(names, values, strict=True))
    if record:
        raise RecordsInvalid(f"line {first_line}: a quoted field is not closed before the end")


async def _fixed_rows(chunks: AsyncIterator[bytes], encoding: str, slices: list[tuple[str, int, int]],
                      trim: bool) -> AsyncIterator[dict[str, Any]]:
    async for _, line in _lines(chunks, encoding):
        if not line.strip():
            continue
        yield {name: (line[start:end].strip() if trim else line[start:end]) for name, start, end in slices}


async def _json_array(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    parts: list[bytes] = [b"["]
    size = 1
    first = True
    async for row in rows:
        piece = jsonfast.dumps(row)
        parts.append(piece if first else b"," + piece)
        first = False
        size += len(piece) + 1
        if size >= OUT_CHUNK:
            yield b"".join(parts)
            parts, size = [], 0
    parts.append(b"]")
    yield b"".join(parts)


async def _json_items(chunks: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    """The items of a JSON array, one at a time, read incrementally (never the whole array)."""
    splitter = _ArraySplitter()
    async for chunk in chunks:
        for item in splitter.feed(chunk):
            yield item
    splitter.end()


class _ArraySplitter:
    """Finds the items of a top-level JSON array in a byte stream: depth, strings and escapes."""

    def __init__(self) -> None:
        self.started = False
        self.done = False
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.current = bytearray()

    def feed(self, chunk: bytes) -> Iterator[Any]:
        for byte in chunk:
            if self.done:
                if chr(byte).isspace():
                    continue
                raise RecordsInvalid("text after the end of the JSON array")
            if not self.started:
                if chr(byte).isspace():
                    continue
                if byte != ord("["):
                    raise RecordsInvalid("records to: needs a JSON array of objects as the body")
                self.started = True
                continue
            if self.in_string:
                self.current.append(byte)
                if self.escape:
                    self.escape = False
                elif byte == ord("\\"):
                    self.escape = True
                elif byte == ord('"'):
                    self.in_string = False
                continue
            if byte == ord('"'):
                self.in_string = True
            elif byte in (ord("["), ord("{")):
                self.depth += 1
            elif byte in (ord("]"), ord("}")):
                if self.depth == 0:  # the array's own end
                    yield from self._item()
                    self.done = True
                    continue
                self.depth -= 1
            elif byte == ord(",") and self.depth == 0:
                yield from self._item()
                continue
            self.current.append(byte)

    def _item(self) -> Iterator[Any]:
        text = bytes(self.current).strip()
        self.current = bytearray()
        if text:
            try:
                yield jsonfast.loads(text)
            except ValueError as exc:
                raise RecordsInvalid(f"an item of the JSON array is not valid JSON: {exc}") from None

    def end(self) -> None:
        if not self.done:
            raise RecordsInvalid("the JSON array is not closed")


async def _write_csv(items: AsyncIterator[Any], encoding: str, options: dict[str, str], header: bool,
                     columns: list[str] | None) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", **options)  # type: ignore[arg-type]
    names = columns
    wrote_header = False
    async for item in items:
        if not isinstance(item, dict):
            raise RecordsInvalid("records to: csv needs an array of objects")
        if names is None:
            names = list(item)
        if header and not wrote_header:
            writer.writerow(names)
            wrote_header = True
        writer.writerow(["" if item.get(n) is None else _text(item.get(n)) for n in names])
        if buffer.tell() >= OUT_CHUNK:
            yield buffer.getvalue().encode(encoding)
            buffer.seek(0)
            buffer.truncate()
    if header and not wrote_header and names:
        writer.writerow(names)  # an empty array: the header alone
    yield buffer.getvalue().encode(encoding)


async def _write_fixed(items: AsyncIterator[Any], encoding: str,
                       slices: list[tuple[str, int, int]]) -> AsyncIterator[bytes]:
    parts: list[str] = []
    size = 0
    async for item in items:
        if not isinstance(item, dict):
            raise RecordsInvalid("records to: fixed needs an array of objects")
        line = [" "] * max(end for _, _, end in slices)
        for name, start, end in slices:
            text = _text(item.get(name))[:end - start].ljust(end - start)
            line[start:end] = text
        parts.append("".join(line).rstrip() + "\n")
        size += len(line)
        if size >= OUT_CHUNK:
            yield "".join(parts).encode(encoding)
            parts, size = [], 0
    yield "".join(parts).encode(encoding)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return jsonfast.dumps(value).decode()
    return str(value)
