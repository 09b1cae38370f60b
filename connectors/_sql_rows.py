"""Rows as the flow sees them: JSON objects (column name -> value) or an XML document.

Values JSON has no type for are written as the nearest one: NUMERIC as a number, dates and
times in ISO 8601, bytes as base64, UUIDs as text.  In XML every column is an element holding
the value's text; NULL is an empty element with ``nil="true"``.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from lxml import etree

_PLAIN = (str, int, float, bool, type(None))


def json_value(value: Any) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


def json_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows as objects; the common values (text, numbers, NULL) are taken as they are."""
    out = []
    for row in rows:
        item = {}
        for name, value in zip(columns, row, strict=True):
            item[name] = value if isinstance(value, _PLAIN) else json_value(value)
        out.append(item)
    return out


def _text(value: Any) -> str:
    value = json_value(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def xml_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], root: str, row_name: str) -> etree._Element:
    """``<root><row><column>value</column>...</row>...</root>``."""
    document = etree.Element(root)
    for row in rows:
        element = etree.SubElement(document, row_name)
        for name, value in zip(columns, row, strict=True):
            cell = etree.SubElement(element, name)
            if value is None:
                cell.set("nil", "true")
            else:
                cell.text = _text(value)
    return document
