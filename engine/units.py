"""Durations and sizes as people write them in flow files: ``250ms``, ``2s``, ``64KiB``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number (seconds) or text such as ``250ms``, ``1.5s``, ``2m``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 250ms or 2s, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration such as 250ms, 2s or 1m, got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(value: str | int) -> int:
    """Bytes from a number or text such as ``64KiB``, ``10MiB``, ``1MB``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 64KiB or 10MiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"expected a size such as 512, 64KiB or 10MiB, got {value!r}")
    unit = (match.group(2) or "b").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])
