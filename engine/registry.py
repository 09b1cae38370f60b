"""The step registry: every step kind, its config schema and its compiler, registered by name.

It is the single source of truth: the loader validates with these schemas, ``interlace schema``
prints the JSON Schema built from them, and the reference docs and the designer's palette are
generated from them.  Adding a step kind touches one module under ``engine/steps``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from engine.message import Message

if TYPE_CHECKING:
    from engine.compiler import CompileContext

StepFn = Callable[[Message], Awaitable[None]]
Compiler = Callable[[Any, "CompileContext"], StepFn]

# Where a step config holds a nested list of steps, its schema says so with this reference.
STEPS_REF: dict[str, Any] = {"$ref": "#/$defs/steps"}


def status_field(description: str) -> dict[str, Any]:
    """An HTTP status: a literal is checked when the folder loads (100-599), a ${...} when it runs."""
    return {"anyOf": [{"type": "integer", "minimum": 100, "maximum": 599},
                      {"type": "string", "pattern": r"\$\{"}],
            "description": f"{description} A number 100-599, or a ${{...}} expression."}


@dataclass(frozen=True)
class StepKind:
    name: str
    summary: str
    category: str
    schema: dict[str, Any]
    compile: Compiler
    examples: list[Any] = field(default_factory=list)
    # config keys that hold nested step lists (the designer draws them as lanes)
    branches: tuple[str, ...] = ()
    # whether the compiler times and traces each such step (engine/instrument.py); None: by category
    observe: bool | None = None

    @property
    def observed(self) -> bool:
        from engine.instrument import WORK_CATEGORIES

        return self.observe if self.observe is not None else self.category in WORK_CATEGORIES


_KINDS: dict[str, StepKind] = {}
# schemas built on first use, from what is registered by then (call: every connector kind's operations)
_LAZY_SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {}


def step_kind(name: str, *, summary: str, category: str, schema: dict[str, Any] | Callable[[], dict[str, Any]],
              examples: list[Any] | None = None, branches: tuple[str, ...] = (),
              observe: bool | None = None) -> Callable[[Compiler], Compiler]:
    """Register a step compiler under ``name``, with the JSON Schema of its YAML config (or a
    function building it once every step and connector kind is registered).

    ``observe``: time and trace each step of this kind (default: for the categories that do
    work, engine/instrument.py ``WORK_CATEGORIES``)."""

    def register(compiler: Compiler) -> Compiler:
        if name in _KINDS:
            raise ValueError(f"step kind {name!r} registered twice")
        if callable(schema):
            _LAZY_SCHEMAS[name] = schema
        _KINDS[name] = StepKind(name, summary, category, schema if isinstance(schema, dict) else {}, compiler,
                                examples or [], branches, observe)
        return compiler

    return register


def step_kinds() -> dict[str, StepKind]:
    """Every registered step kind, loading the built-in step modules on first use."""
    _load_builtin_steps()
    while _LAZY_SCHEMAS:
        name, build = _LAZY_SCHEMAS.popitem()
        _KINDS[name] = replace(_KINDS[name], schema=build())
    return dict(sorted(_KINDS.items()))


_loaded = False


def _load_builtin_steps() -> None:
    global _loaded
    if _loaded:
        return
    import engine.steps as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"engine.steps.{module.name}")
    _loaded = True
