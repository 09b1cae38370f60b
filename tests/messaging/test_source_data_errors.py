"""A message a source brings (a file, a queue's message) carries its sender's data: a wrong shape
in it is the data's fault, and the error its source records says so (422 ``request-data-invalid``
or ``payload-shape``), as the front answers a caller; the same error on data the flow made stays
the flow's (500 ``expression-error``).  A schedule brings no data: its errors are the flow's.
``interlace test`` message cases see the same statuses (Source.brings_data)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from engine.testing.cli import run_paths
from engine.testing.report import Style, text_report
from tests.support.brokers import RabbitServer
from tests.support.engine import run_engine, write_flows

FLOWS = """
flows:
  count:
    source: {file: {folder: "${env.INBOX_DIR}", glob: "*.count.json", poll: 50ms, settle: 100ms}}
    steps:
      - set: {var: n, value: "${length(payload.items)}"}
  count-own:
    source: {file: {folder: "${env.INBOX_DIR}", glob: "*.own.json", poll: 50ms, settle: 100ms}}
    steps:
      - payload: {json: {items: 5}}
      - set: {var: n, value: "${length(payload.items)}"}
  write:
    source: {file: {folder: "${env.INBOX_DIR}", glob: "*.write.json", poll: 50ms, settle: 100ms}}
    steps:
      - set: {path: $.meta.seen, value: true}
      - set: {path: "$.items[0].id", value: 1}
"""


def _until(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def drop(folder: Path, name: str, text: str) -> None:
    temp = folder / f".{name}.part"
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, folder / name)


def test_a_files_data_of_the_wrong_shape_is_recorded_as_the_datas_fault(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    env = {"INBOX_DIR": str(inbox), "INTERLACE_DATA_DIR": str(tmp_path / "data")}
    with run_engine(write_flows(tmp_path / "flows", FLOWS), env=env):
        drop(inbox, "good.count.json", '{"items": [1, 2]}')
        drop(inbox, "bad.count.json", '{"items": 5}')
        drop(inbox, "bad.own.json", '{"items": [1, 2]}')
        drop(inbox, "bad.write.json", '{"items": "x"}')
        failed = inbox / "failed"
        reports = ["bad.count.json.error", "bad.own.json.error", "bad.write.json.error"]
        done = inbox / "done" / "good.count.json"
        _until(lambda: all((failed / name).exists() for name in reports) and done.exists())
        count, own, write = ((failed / name).read_text() for name in reports)
    assert count.startswith("the request does not fit this flow in its body: ${length(payload.items)} needs")
    assert "code: request-data-invalid" in count and "status: 422" in count
    assert "code: expression-error" in own and "status: 500" in own
    assert "code: payload-shape" in write and "status: 422" in write


SUITE_FLOWS = """
flows:
  count-file:
    source: {file: {folder: inbox, glob: "*.json"}}
    steps:
      - set: {var: n, value: "${length(payload.items)}"}
  count-schedule:
    source: {schedule: {every: 1h}}
    steps:
      - set: {var: n, value: "${length(payload.items)}"}
"""

SUITE = """
cases:
  - name: a file of the wrong shape is the file's fault
    message: {flow: count-file, json: {items: 5}}
    expect:
      outcome: failed
      error: {status: 422, code: request-data-invalid}
  - name: a schedule brings no data, its errors are the flow's
    message: {flow: count-schedule, json: {items: 5}}
    expect:
      outcome: failed
      error: {status: 500, code: expression-error}
"""


@pytest.mark.anyio
async def test_a_suites_message_case_sees_what_its_source_would_record(tmp_path: Path) -> None:
    (tmp_path / "flows.yaml").write_text(dedent(SUITE_FLOWS).lstrip())
    (tmp_path / "flows.test.yaml").write_text(dedent(SUITE).lstrip())
    text, passed, failed = text_report(await run_paths([tmp_path]), style=Style(False))
    assert (passed, failed) == (2, 0), text


AMQP_FLOWS = """
endpoints:
  broker:
    amqp: {url: "${env.AMQP_URL}"}
flows:
  count:
    source:
      amqp: {endpoint: broker, queue: "${env.QUEUE}"}
    on_error:
      redelivery: {max_attempts: 1, dead_letter: {source: true}}
    steps:
      - choice:
          when:
            - if: ${payload.own == `true`}
              steps: [{payload: {json: {items: 5}}}]
      - set: {var: n, value: "${length(payload.items)}"}
"""


async def _publish_and_drain(url: str, queue: str, bodies: list[dict[str, object]] | None) -> list[Any]:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        declared = await channel.declare_queue(f"{queue}.dead", durable=True)
        if bodies is not None:
            await channel.declare_queue(queue, durable=True)
            for body in bodies:
                await channel.default_exchange.publish(
                    aio_pika.Message(json.dumps(body).encode(), content_type="application/json"), routing_key=queue)
            return []
        out = []
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            out.append(message)
        return out


@pytest.mark.service("rabbitmq")
@pytest.mark.slow
def test_a_queue_message_of_the_wrong_shape_is_dead_lettered_as_the_datas_fault(
        tmp_path: Path, rabbit: RabbitServer) -> None:
    queue = f"counts-{time.monotonic_ns()}"
    env = {"AMQP_URL": rabbit.url, "QUEUE": queue, "INTERLACE_DATA_DIR": str(tmp_path / "data")}
    dead: list[Any] = []
    with run_engine(write_flows(tmp_path / "flows", AMQP_FLOWS), env=env):
        asyncio.run(_publish_and_drain(rabbit.url, queue, [{"items": [1]}, {"items": 5}, {"own": True}]))

        def arrived() -> bool:
            dead.extend(asyncio.run(_publish_and_drain(rabbit.url, queue, None)))
            return len(dead) >= 2

        _until(arrived, timeout=30)
    errors = {json.dumps(json.loads(m.body)): (m.headers["x-interlace-error-status"],
                                                m.headers["x-interlace-error-code"]) for m in dead}
    assert errors == {'{"items": 5}': (422, "request-data-invalid"), '{"own": true}': (500, "expression-error")}
