"""What every connector is: a named, configured client of an outside system.

A connector kind registers under a name (the key under ``endpoints: NAME: KIND:`` in flow
files) with the JSON Schema of its settings; the flow schema, the docs and the designer read
that schema from here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable


@runtime_checkable
class Connector(Protocol):
    SCHEMA: ClassVar[dict[str, Any]]
    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def health(self) -> dict[str, Any]: ...


C = TypeVar("C")
_KINDS: dict[str, type[Any]] = {}


def register_connector(kind: str) -> Callable[[type[C]], type[C]]:
    def register(cls: type[C]) -> type[C]:
        if kind in _KINDS and _KINDS[kind] is not cls:
            raise ValueError(f"connector kind {kind!r} registered twice")
        _KINDS[kind] = cls
        return cls
    return register


_loaded = False


def connector_kinds() -> dict[str, type[Any]]:
    """Every connector kind, loading the modules of this package on first use."""
    global _loaded
    if not _loaded:
        import connectors

        for module in pkgutil.iter_modules(connectors.__path__):
            if module.name not in ("base", "aiohttp_transport"):
                importlib.import_module(f"connectors.{module.name}")
        _loaded = True
    return dict(sorted(_KINDS.items()))
