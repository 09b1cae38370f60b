"""The ``schedule`` source: run a flow every N seconds, or on a cron expression in a time zone.

A firing is named by its due time (an interval's firings fall on multiples of the interval since
the epoch, so every replica computes the same ones).  Before running, a replica claims the
firing in the store (engine/store: one row per schedule and due time, inserted by one process
only): with a store shared by replicas, or by the workers of one host, each firing runs once.
A firing missed while no engine ran is not made up; the next one is awaited.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.message import Message
from engine.sources.base import Source, SourceContext, source_kind
from engine.sources.policy import DURATION
from engine.store import StoreError, current_store
from engine.units import parse_duration

if TYPE_CHECKING:
    from engine.compiler import CompileContext

log = logging.getLogger("interlace.sources.schedule")


class ScheduleSource(Source):
    kind = "schedule"
    needs_store = True
    brings_data = False  # the flow makes the data it works on

    def __init__(self, every: float | None, cron: str | None, zone: ZoneInfo, description: str) -> None:
        self.every = every
        self.cron = cron
        self.zone = zone
        self.text = description

    def describe(self) -> dict[str, Any]:
        return {"every_seconds": self.every, "cron": self.cron, "timezone": str(self.zone),
                "next": self.next_after(time.time())}

    def next_after(self, now: float) -> float:
        """The first due time strictly after ``now``."""
        if self.every is not None:
            return (math.floor(now / self.every) + 1) * self.every
        from croniter import croniter

        assert self.cron is not None
        start = datetime.fromtimestamp(now, self.zone)
        return float(croniter(self.cron, start).get_next(float))

    async def run(self, ctx: SourceContext) -> None:
        store = current_store()
        ctx.running()
        due = self.next_after(time.time())
        while True:
            await asyncio.sleep(max(0.0, due - time.time()))
            at, due = due, self.next_after(max(due, time.time()))
            if ctx.retiring:
                return  # a reload replaced this flow: the new one fires from now on
            if ctx.paused:
                continue  # a paused schedule skips its firings (they are not made up)
            try:
                mine = await store.claim_firing(ctx.name, at)
            except StoreError as exc:
                ctx.failing(str(exc))
                log.warning("schedule %s: cannot claim the firing at %s: %s", ctx.name, at, exc)
                continue
            ctx.lag(max(0.0, time.time() - at))
            if not mine:
                continue  # another replica runs this one
            fired = datetime.fromtimestamp(at, self.zone).isoformat()

            def make(attempt: int, fired: str = fired) -> Message:
                msg = Message(body=b"", method="SCHEDULE")
                msg.vars.update({"fired_at": fired, "schedule": self.text, "attempt": attempt})
                return msg

            await ctx.deliver(make, origin=f"schedule:{ctx.name}")
            ctx.running()


@source_kind(
    "schedule",
    summary="Run the flow on a schedule: every interval, or on a cron expression in a time zone; with the store "
            "shared by replicas each firing runs once.",
    schema={
        "type": "object", "additionalProperties": False,
        "properties": {
            "every": {**DURATION, "description": "An interval (e.g. 30s, 5m); firings fall on its multiples."},
            "cron": {"type": "string", "description": "A cron expression: minute hour day-of-month month "
                                                      "day-of-week (e.g. '0 2 * * 1-5')."},
            "timezone": {"type": "string", "description": "The IANA time zone the cron expression is read in "
                                                          "(default UTC), e.g. Europe/Paris."},
        },
    },
    examples=[{"every": "30s"}, {"cron": "0 2 * * 1-5", "timezone": "Europe/Paris"}],
)
def build_schedule(config: dict[str, Any], ctx: CompileContext) -> Source:
    from engine.compiler import StepConfigError

    if ("every" in config) == ("cron" in config):
        raise StepConfigError("a schedule needs one of every (an interval) or cron (an expression)")
    try:
        zone = ZoneInfo(str(config.get("timezone", "UTC")))
    except (ZoneInfoNotFoundError, ValueError):
        raise StepConfigError(f"unknown time zone {config.get('timezone')!r} (an IANA name such as Europe/Paris)",
                              "timezone") from None
    if "every" in config:
        try:
            every = parse_duration(config["every"])
        except ValueError as exc:
            raise StepConfigError(str(exc), "every") from None
        if every < 0.01:
            raise StepConfigError("every must be at least 10ms", "every")
        return ScheduleSource(every, None, zone, f"every {config['every']}")
    from croniter import croniter

    cron = str(config["cron"])
    if not croniter.is_valid(cron):
        raise StepConfigError(f"invalid cron expression {cron!r}: five fields, minute hour day-of-month month "
                              f"day-of-week (e.g. '*/5 * * * *')", "cron")
    return ScheduleSource(None, cron, zone, f"cron {cron} {zone}")
