"""wire_tap: a copy of the message sent in the background, against real backends on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine import metrics
from engine.loader import LoadErrors, load_project
from tests.support.backends import BackendServer
from tests.support.engine import facade_client, run_engine, wait_for, write_flows

pytestmark = pytest.mark.anyio


@pytest.fixture
def audit() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


def _flows(audit: BackendServer, **tap: object) -> str:
    settings = "".join(f"\n              {key}: {value}" for key, value in tap.items())
    return f"""
    endpoints:
      audit: {{http: {{url: "{audit.url}"}}}}
    flows:
      orders:
        source: {{http: {{method: POST, path: /orders}}}}
        steps:
          - wire_tap:
              steps:
                - payload: {{json: {{event: order-received, order: "${{payload.id}}"}}}}
              call: {{endpoint: audit, method: POST, path: /events}}{settings}
          - set: {{path: $.state, value: accepted}}
          - respond: {{status: 201}}
    """


async def arrived(backend: BackendServer, count: int) -> None:
    """Until ``count`` requests reached the backend (the event loop goes on meanwhile)."""
    deadline = time.monotonic() + 15
    while len(backend.requests) < count:
        assert time.monotonic() < deadline, f"{count} requests did not reach the backend in 15 s"
        await asyncio.sleep(0.02)


def _count(outcome: str, step: str = "orders/steps[0]") -> float:
    return metrics.REGISTRY.get_sample_value("interlace_wire_taps_total",
                                             {"flow": "orders", "step": step, "outcome": outcome}) or 0.0


async def test_the_copy_is_reshaped_by_its_own_steps_and_the_flow_keeps_its_message(tmp_path: Path,
                                                                                   audit: BackendServer) -> None:
    write_flows(tmp_path, _flows(audit))
    sent = _count("sent")
    async with facade_client(tmp_path) as client:
        answer = await client.post("/orders", json={"id": "o-1", "total": 12})
    # closing the flows waited for the tap: it has arrived and been counted
    assert answer.status_code == 201 and answer.json() == {"id": "o-1", "total": 12, "state": "accepted"}
    assert [(r.method, r.path) for r in audit.requests] == [("POST", "/events")]
    assert json.loads(audit.requests[0].body) == {"event": "order-received", "order": "o-1"}
    assert _count("sent") == sent + 1


async def test_the_flow_answers_while_the_tap_is_still_on_its_way(tmp_path: Path, audit: BackendServer) -> None:
    audit.set_behaviour(delay=30)
    write_flows(tmp_path, _flows(audit))
    failed, sent = _count("failed"), _count("sent")
    async with facade_client(tmp_path) as client:
        answer = await client.post("/orders", json={"id": "o-2"})
        # the caller has its answer and the tap has no outcome yet: the flow did not wait for it
        assert answer.status_code == 201 and _count("failed") == failed and _count("sent") == sent
        await arrived(audit, 1)  # the backend holds the tap's request, unanswered
        audit.stop()  # the backend dies mid-request: the tap fails, the flow never knew
    assert _count("failed") == failed + 1 and _count("sent") == sent


async def test_a_failing_tap_is_logged_and_counted_never_the_callers_problem(
        tmp_path: Path, audit: BackendServer, caplog: pytest.LogCaptureFixture) -> None:
    audit.set_behaviour(status=503)
    write_flows(tmp_path, _flows(audit))
    failed = _count("failed")
    with caplog.at_level(logging.WARNING, "interlace.wire_tap"):
        async with facade_client(tmp_path) as client:
            answers = [await client.post("/orders", json={"id": f"o-{n}"}) for n in range(2)]
    assert [a.status_code for a in answers] == [201, 201]
    assert _count("failed") == failed + 2
    lines = [r.getMessage() for r in caplog.records if r.name == "interlace.wire_tap"]
    assert len(lines) == 2 and all("wire tap orders/steps[0] failed: backend-status" in line for line in lines)


async def test_past_max_in_flight_a_message_is_not_tapped_and_is_counted_as_dropped(
        tmp_path: Path, audit: BackendServer) -> None:
    audit.set_behaviour(delay=30)
    write_flows(tmp_path, _flows(audit, max_in_flight=2))
    dropped, failed = _count("dropped"), _count("failed")
    async with facade_client(tmp_path) as client:
        answers = [await client.post("/orders", json={"id": f"o-{n}"}) for n in range(5)]
        await arrived(audit, 2)
        audit.stop()
    assert [a.status_code for a in answers] == [201] * 5
    assert len(audit.requests) == 2
    assert _count("dropped") == dropped + 3 and _count("failed") == failed + 2


async def test_a_tap_to_a_sequence_sees_the_copy_as_it_was_when_the_step_ran(tmp_path: Path,
                                                                           audit: BackendServer) -> None:
    write_flows(tmp_path, f"""
    endpoints:
      audit: {{http: {{url: "{audit.url}"}}}}
    sequences:
      archive:
        - set: {{header: x-archived-by, value: tap}}
        - call: {{endpoint: audit, method: PUT, path: "/archive/${{payload.id}}"}}
    flows:
      orders:
        source: {{http: {{method: POST, path: /orders}}}}
        steps:
          - wire_tap: {{sequence: archive}}
          - set: {{path: $.id, value: changed-after-the-tap}}
    """)
    async with facade_client(tmp_path) as client:
        answer = await client.post("/orders", json={"id": "o-9"})
    assert answer.json() == {"id": "changed-after-the-tap"}
    assert [(r.method, r.path) for r in audit.requests] == [("PUT", "/archive/o-9")]
    assert audit.requests[0].headers["x-archived-by"] == "tap"
    assert json.loads(audit.requests[0].body) == {"id": "o-9"}


def test_stopping_the_engine_waits_for_the_taps_on_their_way(tmp_path: Path, audit: BackendServer) -> None:
    audit.set_behaviour(delay=1.0)
    write_flows(tmp_path, f"""
    endpoints:
      audit: {{http: {{url: "{audit.url}"}}}}
    sequences:
      two-calls:
        - call: {{endpoint: audit, method: POST, path: /first}}
        - call: {{endpoint: audit, method: POST, path: /second}}
    flows:
      orders:
        source: {{http: {{method: POST, path: /orders}}}}
        steps:
          - wire_tap: {{sequence: two-calls, timeout: 20s}}
          - respond: {{status: 202}}
    """)
    with run_engine(tmp_path) as engine:
        assert httpx.post(f"{engine.url}/orders", json={"id": 1}, timeout=10).status_code == 202
        wait_for(lambda: len(audit.requests) == 1, "the tap's first call")
        assert engine.terminate() == 0
    # the second call was made after SIGTERM: the engine stopped only once its tap was done
    assert [r.path for r in audit.requests] == ["/first", "/second"]


@pytest.mark.parametrize(("step", "message", "where"), [
    ("{sequence: archive, call: {endpoint: audit}}", "give call or sequence, not both", "5:30"),
    ("{call: {endpoint: nowhere}}", "unknown endpoint 'nowhere'", "5:37"),
    ("{sequence: nowhere}", "unknown sequence 'nowhere'", "5:30"),
    ("{timeout: 0s, sequence: archive}", "a duration greater than zero", "5:29"),
    ("{max_in_flight: 0, sequence: archive}", "wire_tap", "5:35"),
    ("{max_in_flight: 2}", "needs somewhere to send its copy: call (an endpoint), sequence, or steps", "5:19"),
])
def test_a_wrong_tap_is_a_load_error_at_its_place(tmp_path: Path, step: str, message: str, where: str) -> None:
    write_flows(tmp_path, f"""
    flows:
      f:
        source: {{http: {{path: /f}}}}
        steps:
          - wire_tap: {step}
    sequences:
      archive: [{{log: archived}}]
    endpoints:
      audit: {{http: {{url: "http://127.0.0.1:9"}}}}
    """)
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    text = str(caught.value)
    assert message in text and f"flows.yaml:{where}:" in text, text
