"""Durations and sizes as flow files write them."""

from __future__ import annotations

import math

import pytest

from engine.units import parse_duration, parse_size


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("2s", 2.0), ("1.5s", 1.5), ("1m", 60.0), ("1h", 3600.0), ("30", 30.0), (" 10 ms ", 0.01),
    (".5s", 0.5), (2, 2.0), (0.1, 0.1), (0, 0.0),
])
def test_durations(text: str | float, seconds: float) -> None:
    assert math.isclose(parse_duration(text), seconds)


@pytest.mark.parametrize("bad", ["soon", "", "-1s", "2 parsecs", "1.s", "2S", "1m30s", -1, math.inf, math.nan, True,
                                 None, [1]])
def test_bad_durations_say_what_was_expected(bad: object) -> None:
    with pytest.raises(ValueError, match=r"expected a duration.*250ms") as caught:
        parse_duration(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(caught.value)


@pytest.mark.parametrize(("text", "size"), [
    ("64KiB", 65536), ("10MiB", 10 * 1024 * 1024), ("1MB", 1_000_000), ("1GiB", 1 << 30), ("2kb", 2000),
    ("512", 512), ("512B", 512), ("1.5KiB", 1536), (10, 10), (0, 0), (4096.0, 4096),
])
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["lots", "", "-1KiB", "10 parsecs", "1.5", "1.5B", -1, 1.5, True, None])
def test_bad_sizes_say_what_was_expected(bad: object) -> None:
    with pytest.raises(ValueError, match=r"expected a size.*64KiB") as caught:
        parse_size(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(caught.value)
