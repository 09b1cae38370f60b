"""The ``gauge`` step: set a flow-defined Prometheus gauge (``interlace_flow_<name>``).

The gauge is registered at load time (once per name for the life of the process, so a reload
keeps it); the step sets, raises or lowers it, or stamps it with the current time, and shows up
on GET /metrics with the engine's own metrics.  With several workers the scrape shows the
highest worker's value (a heartbeat's last run, a queue's size).
"""

from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import Gauge

from engine import metrics
from engine.compiler import CompileContext, StepConfigError
from engine.errors import ExpressionError
from engine.message import Message
from engine.registry import StepFn, step_kind

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_GAUGES: dict[str, tuple[Gauge, tuple[str, ...]]] = {}


def _gauge(name: str, help_text: str, labels: tuple[str, ...]) -> Gauge:
    full = f"interlace_flow_{name}"
    known = _GAUGES.get(full)
    if known is not None:
        if known[1] != labels:
            raise StepConfigError(f"gauge {name!r} is declared elsewhere with labels {list(known[1])}", "labels")
        return known[0]
    gauge = Gauge(full, help_text, labels, registry=metrics.REGISTRY)
    metrics.GAUGE_MODES[full] = "max"
    _GAUGES[full] = (gauge, labels)
    return gauge


@step_kind(
    "gauge",
    summary="Set a gauge of your own on GET /metrics (interlace_flow_NAME): a value, a change, or the time now.",
    category="observe",
    schema={
        "type": "object", "additionalProperties": False, "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$",
                     "description": "Its name after interlace_flow_ (lower case, digits, underscores)."},
            "help": {"type": "string", "description": "What it measures, shown on /metrics."},
            "set": {"description": "The value to set (a number or ${...}); default: the time now, in seconds "
                                   "since the epoch."},
            "inc": {"description": "Add this (a number or ${...}) instead of setting."},
            "labels": {"type": "object", "additionalProperties": {"type": "string"},
                       "description": "Label values (templates); keep their values few (no ids)."},
        },
    },
    examples=[{"name": "heartbeat_last_run_seconds", "help": "When the heartbeat last ran."},
              {"name": "orders_in_last_file", "set": "${length(payload)}"}],
)
def compile_gauge(config: Any, ctx: CompileContext) -> StepFn:
    name = str(config["name"])
    if not _NAME.match(name):
        raise StepConfigError("a gauge name is lower case letters, digits and underscores", "name")
    if "set" in config and "inc" in config:
        raise StepConfigError("give set or inc, not both", "inc")
    labels = {str(k): ctx.template(v, ("labels", k)) for k, v in (config.get("labels") or {}).items()}
    gauge = _gauge(name, str(config.get("help") or f"{name} (set by the flows)"), tuple(labels))
    value = ctx.template(config["set"], "set") if "set" in config else None
    change = ctx.template(config["inc"], "inc") if "inc" in config else None

    def number(template: Any, msg: Message) -> float:
        result = template.render(msg)
        try:
            return float(result)
        except (TypeError, ValueError):
            raise ExpressionError(f"gauge {name}: {result!r} is not a number") from None

    async def run(msg: Message) -> None:
        target = gauge.labels(**{k: str(t.render(msg)) for k, t in labels.items()}) if labels else gauge
        if change is not None:
            target.inc(number(change, msg))
        elif value is not None:
            target.set(number(value, msg))
        else:
            target.set(time.time())

    return run
