"""aiohttp without reading the system's certificate authorities at import time.

``aiohttp.connector`` builds two default TLS contexts when it is imported, and each reads the
system's whole CA bundle (``set_default_verify_paths``): 80 ms of every start of
``interlace run`` (docs/performance.md), although a project whose endpoints are all http://
never uses them.  The server imports aiohttp through ``import_aiohttp()``, which lets aiohttp
build its contexts but leaves them empty; ``load_default_authorities()`` fills them, and the
HTTP endpoint calls it before its first https:// call (when it opens), so they are complete
before any connection could use them.

Only the server's process does this (the one place that knows every aiohttp user in the
process is an HTTP endpoint); a process that imports aiohttp any other way gets aiohttp as it
is.  A context that was never filled verifies nothing successfully: it fails closed.
"""

from __future__ import annotations

import ssl
import sys
import threading

_pending: list[ssl.SSLContext] = []
_lock = threading.Lock()


def import_aiohttp() -> None:
    """Import aiohttp with its default TLS contexts left empty until ``load_default_authorities()``;
    nothing is deferred if aiohttp was imported already."""
    if "aiohttp.connector" in sys.modules:
        return
    importer = threading.get_ident()
    inherited = ssl.SSLContext.set_default_verify_paths

    def later(context: ssl.SSLContext) -> None:
        if threading.get_ident() != importer:  # another thread's context: read now, as usual
            inherited(context)
            return
        with _lock:
            _pending.append(context)

    own = ssl.SSLContext.__dict__.get("set_default_verify_paths")
    ssl.SSLContext.set_default_verify_paths = later  # type: ignore[method-assign, assignment]
    try:
        import aiohttp.connector  # noqa: F401
    finally:
        if own is None:
            del ssl.SSLContext.set_default_verify_paths  # the inherited method again
        else:  # pragma: no cover - ssl.py defines none today
            ssl.SSLContext.set_default_verify_paths = own  # type: ignore[method-assign]


def load_default_authorities() -> None:
    """Read the system's certificate authorities into the contexts ``import_aiohttp()`` left empty
    (once; later calls cost nothing)."""
    if not _pending:
        return
    with _lock:
        for context in _pending:
            ssl.SSLContext.set_default_verify_paths(context)
        _pending.clear()


def deferred() -> int:
    """How many default contexts are still empty (for tests and the management API)."""
    return len(_pending)
