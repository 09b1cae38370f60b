"""The flow-test suite of the pattern steps (tests/patterns/suites): every case passes through
`interlace test` with its mocks inside foreach items, recipient-list calls, wire taps and
load-balanced calls, aggregated groups, resequenced messages and around claim checks (steps
with a store keep it in each case's own memory), and it runs every step of its flows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_pattern_suite_passes_and_covers_every_step() -> None:
    done = subprocess.run([sys.executable, "-m", "engine.cli", "test", "tests/patterns/suites", "--coverage"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "29 passed, 0 failed" in done.stdout
    assert "all flows                         42/42  100.0%" in done.stdout
