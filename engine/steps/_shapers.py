"""Steps that only shape the message: what a foreach can run on plain values.

A step kind whose compiled step is synchronous and touches nothing but the message's payload,
variables, headers and status (``payload``, ``transform``, ``set``, ``remove``) returns a
``Shaper`` saying which of those it writes.  A foreach whose item steps are all shapers runs
them for every item on one scratch message, which takes each item in turn, instead of making a
message per item (engine/steps/foreach.py); what a step wrote for one item is reset before the
next, so each item sees what it would see on a message of its own.  Wrapped steps (a test's
mocks, a debugger) are not shapers, so they take the general path and see a message per item.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.message import Message

if TYPE_CHECKING:
    from engine.compiler import Steps
    from engine.metrics import Tally

Shape = Callable[[Message], None]

PAYLOAD, VARS, HEADERS, STATUS = "payload", "vars", "headers", "status"


class Shaper:
    """A compiled step that only rewrites parts of the message (``writes``), synchronously.

    ``value``, when given, is the new payload alone: ``apply(msg)`` is ``msg.set_payload(value(msg),
    ...)``, so a foreach can take ``value(msg)`` as an item's result without setting it.  ``each``,
    when given, makes (for an index variable) a function giving ``value`` for every item of a
    list at once and whether its results are all new dicts or lists, or None when the step cannot
    (engine/expressions.py ``Template.for_items``)."""

    __slots__ = ("apply", "each", "value", "writes")

    def __init__(self, apply: Shape, writes: frozenset[str] = frozenset({PAYLOAD}),
                 value: Callable[[Message], Any] | None = None,
                 each: Callable[[str], tuple[Callable[..., list[Any]], bool] | None] | None = None
                 ) -> None:
        self.apply = apply
        self.writes = writes
        self.value = value
        self.each = each

    async def __call__(self, msg: Message) -> None:
        self.apply(msg)

    def timed(self, ok: Tally, failed: Tally) -> Shaper:
        """This shaper with each run's duration tallied, as engine/instrument.py times a step
        (its value-only form is dropped: the foreach applies it, so each item is timed)."""
        apply, clock, ok_observe, failed_observe = self.apply, time.perf_counter, ok.observe, failed.observe

        def timed_apply(msg: Message) -> None:
            started = clock()
            try:
                apply(msg)
            except BaseException:
                failed_observe(clock() - started)
                raise
            ok_observe(clock() - started)
        return Shaper(timed_apply, self.writes)


def shapers_of(steps: Steps) -> tuple[Shaper, ...] | None:
    """The steps' shapers when every one is a shaper, else None."""
    found: list[Shaper] = []
    if not steps.items:
        return None
    for step in steps.items:
        if not isinstance(step.run, Shaper):
            return None
        found.append(step.run)
    return tuple(found)


def step_ids(steps: Steps) -> tuple[str, ...]:
    return tuple(step.id for step in steps.items)
