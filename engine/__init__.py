"""Interlace's engine.  The embedding API (docs/embedding.md):

    from engine import create_app
    app = create_app("flows/")   # a starlette.applications.Starlette serving the flows

Imported lazily, so ``import engine.x`` does not pull in the HTTP front.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.app import create_app
    from engine.front import Facade, FlowRoute
    from engine.loader import LoadErrors

__all__ = ["Facade", "FlowRoute", "LoadErrors", "create_app"]

_HOMES = {"create_app": "engine.app", "Facade": "engine.front", "FlowRoute": "engine.front",
          "LoadErrors": "engine.loader"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(home), name)
