"""What every connector is: a named, configured client of an outside system.

A connector kind is a class registered under a name with ``@register_connector("kind")``;
that name is the key under ``endpoints: NAME: KIND:`` in flow files.  The class carries

- ``SCHEMA``: the JSON Schema (draft 2020-12) of its settings, every property with a
  ``description`` and ``"additionalProperties": false``.  The flow schema, the loader's
  validation, the reference docs and the designer's forms are all generated from it.
- a constructor ``(name: str, config: dict)``: ``config`` has already been validated against
  ``SCHEMA`` and had its ``${env.*}``/``${secret.*}`` references resolved by the loader; the
  constructor checks what a schema cannot (e.g. URL syntax) and raises ValueError, and opens
  nothing (no sockets, no threads) so that validating a project stays cheap.

An instance is then driven through the ``Connector`` protocol: ``open()`` once before the
first call, ``close()`` when the flows that use it are replaced or the server stops, and
``health()`` whenever the management API asks.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

# Modules of this package that are helpers, not connector kinds.
_NOT_CONNECTORS = frozenset({"base", "aiohttp_transport"})


@runtime_checkable
class Connector(Protocol):
    """The protocol all connectors share."""

    SCHEMA: ClassVar[dict[str, Any]]
    name: str

    async def open(self) -> None:
        """Acquire what calls need (pools, sessions).  Idempotent."""

    async def close(self) -> None:
        """Release everything ``open`` acquired.  Idempotent; the connector may be opened again."""

    def health(self) -> dict[str, Any]:
        """A JSON-able view of the connector's state for the management API: never a secret."""
        ...


C = TypeVar("C")
_KINDS: dict[str, type[Any]] = {}


def register_connector(kind: str) -> Callable[[type[C]], type[C]]:
    """Class decorator: register a connector class under ``kind`` (its key in flow files)."""

    def register(cls: type[C]) -> type[C]:
        schema = getattr(cls, "SCHEMA", None)
        if not isinstance(schema, dict):
            raise TypeError(f"connector kind {kind!r}: {cls.__name__} needs a SCHEMA dict (its JSON Schema)")
        if kind in _KINDS and _KINDS[kind] is not cls:
            raise ValueError(f"connector kind {kind!r} registered twice ({_KINDS[kind].__name__}, {cls.__name__})")
        _KINDS[kind] = cls
        return cls

    return register


_loaded = False


def connector_kinds() -> dict[str, type[Any]]:
    """Every connector kind by name, importing this package's modules on first use."""
    global _loaded
    if not _loaded:
        import connectors

        for module in pkgutil.iter_modules(connectors.__path__):
            if module.name not in _NOT_CONNECTORS and not module.name.startswith("_"):
                importlib.import_module(f"connectors.{module.name}")
        _loaded = True
    return dict(sorted(_KINDS.items()))
