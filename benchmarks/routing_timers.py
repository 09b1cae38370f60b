"""Time the routing decision inside a loaded engine: ``interlace run`` with timers around its parts.

    python benchmarks/routing_timers.py run flows/bench --port 18591 ...   # the arguments of `interlace run`
    kill -USR1 <pid>     # one line of averages since the last signal, appended to $ROUTING_TIMERS_OUT

``routing_ab.sh`` uses it with ``ROUTING_TIMERS=1`` and prints the line of every cell.  A
profiler samples the whole process and a micro-benchmark runs the parser with warm caches; these
timers give what the routing steps cost per call in the engine under load (wall time of each
synchronous call, ``perf_counter_ns``; the worker is alone on its core, so close to its CPU
time).  Each timer adds about 0.1 µs per call.  Timed, per call:

* ``condition``: ``Expr.is_true``, the whole routing decision (with the body's parse when the
  condition is the first to read the payload);
* ``xml``: ``xmlsafe.parse_xml`` (the DOCTYPE guards and libxml2 building the tree), of which
  ``libxml2``: ``etree.fromstring`` alone;
* ``xpath``: ``apply_xpath`` (the compiled XPath and turning its result into values);
* ``json``: ``jsonfast.loads``;
* ``drop``: ``Message.set_body`` calls that release a parsed payload (an lxml tree is freed there,
  when the backend's reply replaces the message);
* ``gc``: the collector's runs (count and time per run).

For measuring only: it patches module attributes before serving; nothing is changed otherwise.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

_clock = time.perf_counter_ns
_totals: dict[str, list[int]] = {}


def _timer(name: str) -> list[int]:
    return _totals.setdefault(name, [0, 0])


def _timed(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    slot = _timer(name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = _clock()
        try:
            return func(*args, **kwargs)
        finally:
            slot[0] += _clock() - start
            slot[1] += 1
    return timed


class _TimedEtree:
    """lxml.etree as xmlsafe sees it, with ``fromstring`` timed."""

    def __init__(self, etree: Any) -> None:
        self._etree = etree
        self.fromstring = _timed("libxml2", etree.fromstring)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._etree, name)


def install() -> None:
    from engine import expressions, jsonfast, message, xmlsafe

    expressions.Expr.is_true = _timed("condition", expressions.Expr.is_true)  # type: ignore[method-assign]
    expressions.apply_xpath = _timed("xpath", expressions.apply_xpath)
    xmlsafe.parse_xml = _timed("xml", xmlsafe.parse_xml)
    xmlsafe.etree = _TimedEtree(xmlsafe.etree)  # type: ignore[assignment]
    jsonfast.loads = _timed("json", jsonfast.loads)

    set_body = message.Message.set_body
    unset = message._UNSET
    drop = _timer("drop")

    def timed_set_body(self: message.Message, body: bytes, content_type: str | None = None) -> None:
        if self._payload is unset:
            set_body(self, body, content_type)
            return
        start = _clock()
        set_body(self, body, content_type)
        drop[0] += _clock() - start
        drop[1] += 1

    message.Message.set_body = timed_set_body  # type: ignore[method-assign]

    collections = _timer("gc")
    started = [0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = _clock()
        else:
            collections[0] += _clock() - started[0]
            collections[1] += 1

    gc.callbacks.append(on_gc)
    signal.signal(signal.SIGUSR1, _report)


def _report(*_: Any) -> None:
    parts = [f"{name} {total / count / 1000:.1f} µs x {count}" if count else f"{name} -"
             for name, (total, count) in _totals.items()]
    line = "  ".join(parts) + "\n"
    out = os.environ.get("ROUTING_TIMERS_OUT")
    if out:
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(line)
    else:
        sys.stderr.write(line)
    for slot in _totals.values():
        slot[0] = slot[1] = 0


def main() -> int:
    install()
    from engine.cli import main as interlace

    return interlace(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
