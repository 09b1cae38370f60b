"""load_balance's ``least_response_time`` (nginx's least_time; the decaying averages of Finagle
and Linkerd): each endpoint keeps a decaying average of how long its recent calls took, and the
next call goes to the one whose average, times its calls in flight plus one, per its weight, is
the least.

- The average moves towards each new time by at least ``_LEAST_SHARE`` of the way, and by more
  the longer the endpoint was silent before it: after ``decay`` without an answer, 63 % of the
  way (``1 - exp(-silence / decay)``).  So a steady stream of answers is smoothed, and one
  answer after a pause counts for much.
- A failure (a call that failed, or a status of 500 and above, or one of ``failover_on``) counts
  as a slow answer: at least 1 s, and at least twice the slowest other endpoint's average, so
  that a refused connection, quick as it is, never looks fast.
- An endpoint never tried is tried first; one neither picked nor answering for ``probe_after``
  is picked once
  (a probe), so that an endpoint that was slow can show it is fast again.  Only one probe of an
  endpoint is in flight at a time.

The averages live in this process, per step, as least_connections' counts do.
"""

from __future__ import annotations

import math
import time
from typing import Any

_LEAST_SHARE = 0.1  # the least part of the way an answer moves the average: the last ~10 answers count
_FAILED_AT_LEAST = 1.0  # seconds: what a failure counts as, at the least


class ResponseTimes:
    """The averages and the choice; ``in_flight`` is the step's own count per endpoint."""

    def __init__(self, weights: list[int], in_flight: list[int], decay: float, probe_after: float) -> None:
        count = len(weights)
        self._weights = weights
        self._in_flight = in_flight
        self._decay = decay
        self._probe_after = probe_after
        self.averages: list[float | None] = [None] * count  # seconds; None: never answered
        self._answered = [0.0] * count  # time.monotonic() of the last answer
        self._picked = [-math.inf] * count  # ... of the last pick or answer, whichever is later
        self._turn = 0

    def pick(self, msg: Any) -> int:
        """The endpoint to try first: one never tried, else one due a probe, else the least loaded."""
        now = time.monotonic()
        count = len(self._weights)
        averages, in_flight, weights = self.averages, self._in_flight, self._weights
        due = now - self._probe_after
        best, best_score = self._turn % count, math.inf
        probe, probe_since = -1, due
        for step in range(count):
            index = (self._turn + step) % count
            average = averages[index]
            if average is None:
                if not in_flight[index]:  # never answered and not being tried now: try it
                    probe, probe_since = index, -math.inf
                    break
                continue
            if self._picked[index] < probe_since and not in_flight[index]:
                probe, probe_since = index, self._picked[index]  # the one idle longest
            score = average * (in_flight[index] + 1) / weights[index]
            if score < best_score:
                best, best_score = index, score
        chosen = probe if probe >= 0 else best
        self._picked[chosen] = now
        self._turn = chosen + 1
        return chosen

    def answered(self, index: int, started: float, failed: bool) -> None:
        """Take the time of a call to endpoint ``index`` begun at ``started`` (time.monotonic())."""
        now = time.monotonic()
        took = now - started
        averages = self.averages
        if failed:
            slowest = max((a for i, a in enumerate(averages) if a is not None and i != index), default=0.0)
            took = max(took, _FAILED_AT_LEAST, 2 * slowest)
        average = averages[index]
        if average is None:
            averages[index] = took
        else:
            share = max(_LEAST_SHARE, 1.0 - math.exp(-(now - self._answered[index]) / self._decay))
            averages[index] = average + (took - average) * share
        self._answered[index] = now
        self._picked[index] = now  # idle from now on: a probe is due probe_after after the answer
