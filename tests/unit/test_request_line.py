"""The request line the engine's handler writes itself is the line ``logging`` would write for
its record, in both formats; any other handler on the way gets the record as before; and the
lines waiting for the end of the loop's turn are written before any later record."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from engine import metrics, observability, telemetry
from engine.errors import BackendStatusError


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield io.StringIO()
    root.handlers[:], level = saved
    root.setLevel(level)


def setup(fmt: str, stream: io.StringIO) -> logging.Handler:
    """The engine's logging, as `interlace run --log-format FMT` sets it up, into ``stream``."""
    observability.setup_logging("info", fmt)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, observability.EngineHandler)
    handler.setStream(stream)
    return handler


def one_request(path: str, status: int, error: BaseException | None = None) -> telemetry.RequestRecord:
    """Observe one request through the front's calls; returns the record logging would get."""
    seen = telemetry.begin("POST", path, {}, "cid-7")
    telemetry.routed(seen, "orders", "/orders/{id}")
    metrics.backend_call("crm", "http://127.0.0.1:9", "2xx", 0.0021)
    record = telemetry.RequestRecord(seen, status, 0.0123, 12, None, error, None)
    telemetry.end(seen, status, 12, None, error)
    return record


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_line_written_directly_is_the_line_of_the_record(fmt: str, stream: io.StringIO) -> None:
    handler = setup(fmt, stream)
    assert observability.direct_handler(telemetry.request_log) is handler
    cases = [("/orders/7", 200, None), ("/orders/a\nb\x1b", 502, BackendStatusError("no"))]
    expected = []
    for path, status, error in cases:
        record = one_request(path, status, error)
        expected.append(handler.format(record))
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    for line, model in zip(lines, expected, strict=True):
        if fmt == "json":  # the duration and time differ by the microseconds between the two
            got, want = json.loads(line), json.loads(model)
            for key in ("time", "duration_ms", "message"):
                got.pop(key), want.pop(key)
            assert got == want
            assert list(json.loads(line)) == list(json.loads(model))  # the same keys in the same order
        else:
            assert line.split(" ", 2)[2].rsplit(" ", 2)[0] == model.split(" ", 2)[2].rsplit(" ", 2)[0]
    assert "\\n" in lines[1] and "\n" not in lines[1].strip()


def test_another_handler_gets_the_record_and_the_engine_still_writes_the_line(stream: io.StringIO) -> None:
    setup("text", stream)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logging.getLogger("interlace").addHandler(keep := Keep())
    try:
        assert observability.direct_handler(telemetry.request_log) is None
        one_request("/orders/8", 200)
    finally:
        logging.getLogger("interlace").removeHandler(keep)
    assert [r.getMessage().rsplit(" ", 2)[0] for r in records] == ["POST /orders/8 200"]
    assert records[0].fields["flow"] == "orders"  # type: ignore[attr-defined]
    assert "POST /orders/8 200" in stream.getvalue()
    telemetry.request_log.setLevel(logging.WARNING)  # --log-levels interlace.request=warning
    try:
        one_request("/orders/9", 200)
    finally:
        telemetry.request_log.setLevel(logging.NOTSET)
    assert "/orders/9" not in stream.getvalue()


def test_lines_of_one_turn_are_written_at_its_end_before_any_later_record(stream: io.StringIO) -> None:
    setup("text", stream)

    async def serve() -> list[str]:
        one_request("/orders/1", 200)
        one_request("/orders/2", 200)
        during = stream.getvalue()
        await asyncio.sleep(0)
        after_turn = stream.getvalue()
        one_request("/orders/3", 200)
        logging.getLogger("interlace.front").warning("something else")
        return [during, after_turn, stream.getvalue()]

    during, after_turn, last = asyncio.run(serve())
    assert during == ""
    turn = [line.split("] ")[1] for line in after_turn.splitlines()]
    assert len(turn) == 2 and turn[0].startswith("POST /orders/1 200") and turn[1].startswith("POST /orders/2 200")
    messages = [line.split("] ")[1] for line in last.splitlines()]
    assert messages[2].startswith("POST /orders/3 200") and messages[3] == "something else"


def test_the_text_line_written_directly_has_the_records_time_to_the_millisecond(stream: io.StringIO) -> None:
    handler = setup("text", stream)
    formatter = handler.formatter
    assert isinstance(formatter, observability.TextFormatter)
    seen = telemetry.begin("GET", "/orders/\u2028x", {}, "cid-8")
    telemetry.routed(seen, "orders", "/orders/{id}")
    for created in (1764633650.0, 1764633650.0049, 1764633650.5, 1764633650.9996, 1764633651.25, 1764640000.123):
        for status, elapsed in ((200, 0.00004999), (404, 0.01234), (503, 2.25)):
            record = telemetry.RequestRecord(seen, status, elapsed, None, None, None, None)
            record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
            line = formatter.request_line(telemetry.request_log.name, created, "cid-8",
                                          ("GET", "/orders/\u2028x", status, elapsed * 1000), telemetry.request_fields)
            assert line == handler.format(record)
    telemetry.end(seen, 200)
