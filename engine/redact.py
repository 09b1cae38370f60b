"""Keeping credentials out of what people read: error messages, logs, health and API bodies.

One place decides how a URL is shown (``url_for_display``) and how known secret values are
masked (``mask``); every message that formats a URL or a value resolved from ``${secret.*}``
goes through them.  Both lean towards hiding too much: a URL's ``@`` ends whatever stood
before it even without a scheme (``svcuser:Hunter2Pass@orders.internal:8080/api``), since a
half-typed URL is exactly where a password gets printed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# shorter values would mask ordinary words of a message; such secrets are not worth the name
MIN_MASKED_LENGTH = 4
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def url_for_display(url: str) -> str:
    """The URL without user, password, query or fragment: ``http://u:p@h:1/a?k=v`` -> ``http://h:1/a``."""
    text = str(url).strip()
    scheme = _SCHEME.match(text)
    prefix, rest = (text[:scheme.end()], text[scheme.end():]) if scheme else ("", text)
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    if "@" in rest:
        rest = rest.rpartition("@")[2]
    return prefix + rest


# anything that reads as user:password@ or user@ in front of a host, with or without a scheme
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?[^\s/@'\"<>]+(?::[^\s@'\"<>]*)?@(?=[^\s@/]+)")


def without_userinfo(text: str) -> str:
    """A free text (an error message, a log line) with every URL's userinfo cut out."""
    return _USERINFO.sub(lambda m: m.group("scheme") or "", text)


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of the secret values in it replaced by ``***`` (longest first)."""
    for value in sorted({s for s in secrets if s and len(s) >= MIN_MASKED_LENGTH}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
