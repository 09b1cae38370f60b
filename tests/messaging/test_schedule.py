"""The schedule source: intervals, cron in a time zone, and one run per firing across engines."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from engine.loader import LoadErrors, load_project
from engine.sources.schedule import ScheduleSource
from tests.support.backends import BackendServer
from tests.support.engine import run_engine, wait_until_ready, write_flows

FLOWS = """
endpoints:
  backend:
    http: {url: "${env.BACKEND_URL}"}
flows:
  tick:
    source: {schedule: {every: 300ms}}
    steps:
      - call: {endpoint: backend, method: POST, path: /tick, body: {at: "${vars.fired_at}"}}
"""


def test_cron_in_a_time_zone_and_intervals_on_their_multiples() -> None:
    paris = ScheduleSource(None, "30 2 * * *", ZoneInfo("Europe/Paris"), "")
    utc = ZoneInfo("UTC")
    winter = datetime.fromtimestamp(paris.next_after(datetime(2026, 1, 15, 12, 0, tzinfo=utc).timestamp()), utc)
    summer = datetime.fromtimestamp(paris.next_after(datetime(2026, 7, 15, 12, 0, tzinfo=utc).timestamp()), utc)
    assert (winter.day, winter.hour, winter.minute) == (16, 1, 30)  # 02:30 in Paris is 01:30 UTC in winter
    assert (summer.day, summer.hour, summer.minute) == (16, 0, 30)  # and 00:30 UTC in summer
    every = ScheduleSource(30.0, None, ZoneInfo("UTC"), "")
    assert every.next_after(1000.0) == 1020.0 and every.next_after(1020.0) == 1050.0


def test_schedule_settings_are_checked_at_load(tmp_path: Path) -> None:
    for config, message in [("{cron: '61 * * * *'}", "invalid cron expression '61 * * * *'"),
                            ("{every: 5s, cron: '* * * * *'}", "one of every"),
                            ("{cron: '* * * * *', timezone: Mars/Olympus}", "unknown time zone 'Mars/Olympus'"),
                            ("{every: soon}", "expected a duration")]:
        write_flows(tmp_path, f"""
        flows:
          tick:
            source: {{schedule: {config}}}
            steps: [{{log: {{message: hi}}}}]
        """)
        with pytest.raises(LoadErrors, match=r"flows.yaml:3:\d+: source schedule: .*") as caught:
            load_project(tmp_path)
        assert message in str(caught.value)


def test_each_firing_runs_once_across_two_engines(tmp_path: Path) -> None:
    with BackendServer() as backend:
        folder = write_flows(tmp_path / "flows", FLOWS)
        env = {"BACKEND_URL": backend.url, "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        # both start at once (an engine's start is most of such a test's time)
        with run_engine(folder, env=env, wait_ready=False) as one, \
                run_engine(folder, env=env, log_dir=tmp_path, wait_ready=False) as two:
            wait_until_ready(one)
            wait_until_ready(two)
            time.sleep(3)
            sources = httpx.get(f"{one.management_url}/sources").json()["sources"]
            assert sources[0]["kind"] == "schedule" and sources[0]["state"] == "running"
            assert httpx.get(f"{two.management_url}/sources").json()["sources"][0]["settings"]["every_seconds"] == 0.3
        firings = Counter(r.body for r in backend.requests)
        assert len(firings) >= 6  # ~10 in 3 s
        assert max(firings.values()) == 1, "a firing ran twice"
