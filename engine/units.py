"""Durations and sizes as people write them in flow files: ``250ms``, ``2s``, ``64KiB``.

A bare number is seconds (durations) or bytes (sizes).  Units are case-sensitive for
durations (``m`` is minutes, ``ms`` milliseconds) and case-insensitive for sizes; SI units
(``KB``, ``MB``, ``GB``) are powers of 1000, binary ones (``KiB``, ``MiB``, ``GiB``) powers of 1024.
"""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}

DURATION_HINT = "a duration: seconds as a number, or a number with ms, s, m or h (e.g. 250ms, 2s, 1.5s, 1m)"
# Longer than any timeout, backoff or interval makes sense for (and than asyncio's timers accept).
MAX_DURATION = 365 * 24 * 3600.0

SIZE_HINT = "a size: bytes as a whole number, or a number with B, KB, KiB, MB, MiB, GB or GiB (e.g. 64KiB, 10MiB)"


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number (seconds) or text such as ``250ms``, ``1.5s``, ``2m``.

    Raises ValueError naming the value and the accepted forms for anything else (negative,
    not finite, unknown unit, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected {DURATION_HINT}; got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value) if isinstance(value, float) or abs(value) < MAX_DURATION else math.inf
        if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_DURATION:
            raise ValueError(f"expected {DURATION_HINT}; got {_short(value)} (it must be finite, not negative "
                             f"and at most {MAX_DURATION:.0f} s, a year)")
        return seconds
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"expected {DURATION_HINT}; got {_short(value)}")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > MAX_DURATION:
        raise ValueError(f"expected {DURATION_HINT}; got {_short(value)} (at most {MAX_DURATION:.0f} s, a year)")
    return seconds


def _short(value: object) -> str:
    """The value as the error shows it: a 400-digit number is not worth echoing whole."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"


def parse_size(value: str | int | float) -> int:
    """Bytes from a whole number or text such as ``64KiB``, ``10MiB``, ``1MB`` (fractions of a
    unit round down to whole bytes: ``1.5KiB`` is 1536).

    Raises ValueError naming the value and the accepted forms for anything else."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected {SIZE_HINT}; got {_short(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"expected {SIZE_HINT}; got {_short(value)} (a number of bytes must be whole)")
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected {SIZE_HINT}; got {_short(value)} (it must not be negative)")
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"expected {SIZE_HINT}; got {_short(value)}")
    number, unit = match.group(1), (match.group(2) or "b").lower()
    if unit == "b" and "." in number:
        raise ValueError(f"expected {SIZE_HINT}; got {_short(value)} (a number of bytes must be whole)")
    size = float(number) * _SIZE_UNITS[unit]
    if not math.isfinite(size):
        raise ValueError(f"expected {SIZE_HINT}; got {_short(value)} (too large)")
    return int(size)
