"""Steps that only shape the payload: what a foreach can run on plain values.

A step kind whose compiled step computes a new payload from the message and does nothing else
(no await, no call, no header, variable, status or attribute written: ``payload`` with a JSON,
XML or text body) returns a ``PayloadShaper``.  A foreach whose item steps are all shapers runs
them for every item on one scratch message, which takes each item in turn, instead of making a
message per item (engine/steps/foreach.py).  Wrapped steps (a test's mocks, a debugger) are not
shapers, so they take the general path and see a message per item as before.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.compiler import Steps
from engine.message import Message

Shape = Callable[[Message], None]


class PayloadShaper:
    """A compiled step that sets the message's payload from what it reads, synchronously."""

    __slots__ = ("apply",)

    def __init__(self, apply: Shape) -> None:
        self.apply = apply

    async def __call__(self, msg: Message) -> None:
        self.apply(msg)


def shapers_of(steps: Steps) -> tuple[tuple[str, Shape], ...] | None:
    """(step id, apply) for each step when every one is a shaper (and none reads a streaming
    body of its own), else None."""
    found: list[tuple[str, Shape]] = []
    for step in steps.items:
        if not isinstance(step.run, PayloadShaper):
            return None
        found.append((step.id, step.run.apply))
    return tuple(found)
