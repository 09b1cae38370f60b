"""AMQP consume-transform-publish: the engine against a hand-written aio-pika floor, back to back.

    .venv/bin/python benchmarks/amqp_pipeline.py [--messages 5000] [--rounds 3] [--profile /tmp/amqp.spy]

A RabbitMQ made for the run (tests/support/brokers.py).  Each cell pre-loads ``--messages``
JSON messages into a queue, then times until all of them are in the output queue:

- floor: a loop written with aio-pika alone: prefetch 50, parse the JSON, add a field,
  publish with confirms (persistent), ack;
- engine: a flow with ``source: amqp`` (prefetch 50, concurrency 50: as many messages at once
  as the floor, whose callbacks run every prefetched message at once; ``--concurrency 8`` costs
  ~15 % more CPU a message, fewer confirms and deliveries per read), a ``payload`` step doing
  the same reshaping, and ``call: {operation: publish}`` with confirms; ack after the flow.

Reported per cell: messages/s and CPU µs per message of the consumer (the floor's own process,
or the engine's), and engine/floor both ways; then ONE line, ``RATIO``: the median over the
rounds of throughput per CPU (floor CPU / engine CPU per message), which the other processes on
a shared machine distort far less than the wall rate (the broker shares the cores too), and
whether it meets the goal (>= 0.8x).  Figures are noisy still: cells alternate so drift hits
both; ``--rounds`` more for a steadier median.  ``--profile PATH`` samples the engine with py-spy
(``--gil``: where its CPU goes) into PATH.N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.brokers import RabbitServer  # noqa: E402
from tests.support.engine import run_engine, write_flows  # noqa: E402

FLOWS = """
endpoints:
  broker:
    amqp: {url: "${env.AMQP_URL}"}
flows:
  pipeline:
    source: {amqp: {endpoint: broker, queue: "${env.QUEUE}", prefetch: 50, concurrency: CONCURRENCY}}
    steps:
      - payload: {json: {order: "${payload.order}", items: "${payload.items}", routed: true}}
      - call: {endpoint: broker, operation: publish, routing_key: "${env.QUEUE}.out"}
"""

BODY = json.dumps({"order": 1001, "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}]}).encode()


async def preload(url: str, queue: str, count: int) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for name in (queue, f"{queue}.out"):
            await channel.declare_queue(name, durable=True)
        for start in range(0, count, 500):
            await asyncio.gather(*(channel.default_exchange.publish(
                aio_pika.Message(BODY, content_type="application/json", delivery_mode=2), routing_key=queue)
                for _ in range(min(500, count - start))))


async def out_count(url: str, queue: str) -> int:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(f"{queue}.out", durable=True)
        return int(declared.declaration_result.message_count or 0)


async def floor(url: str, queue: str, count: int) -> None:
    """The hand-written pipeline: what the engine is measured against."""
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=50)
        source = await channel.declare_queue(queue, durable=True)
        done = 0
        finished = asyncio.Event()

        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal done
            payload = json.loads(message.body)
            out = json.dumps({"order": payload["order"], "items": payload["items"], "routed": True}).encode()
            await channel.default_exchange.publish(aio_pika.Message(out, content_type="application/json",
                                                                    delivery_mode=2), routing_key=f"{queue}.out")
            await message.ack()
            done += 1
            if done >= count:
                finished.set()

        await source.consume(handle)
        await finished.wait()


def cell_floor(rabbit: RabbitServer, count: int, n: int) -> tuple[float, float]:
    queue = f"floor{n}"
    asyncio.run(preload(rabbit.url, queue, count))
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    asyncio.run(floor(rabbit.url, queue, count))
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return count / seconds, cpu / count * 1e6


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cell_engine(rabbit: RabbitServer, count: int, n: int, work: Path, concurrency: int,
                profile: Path | None = None) -> tuple[float, float]:
    queue = f"engine{n}"
    asyncio.run(preload(rabbit.url, queue, count))
    folder = write_flows(work / f"flows{n}", FLOWS.replace("CONCURRENCY", str(concurrency)))
    env = {"AMQP_URL": rabbit.url, "QUEUE": queue, "INTERLACE_DATA_DIR": str(work / f"data{n}")}
    with run_engine(folder, env=env, wait_ready=True) as engine:
        spy = None
        if profile is not None:  # py-spy samples the engine while it drains the queue
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--gil", "-r", "250",
                                    "-f", "raw", "-o", str(profile), "-p", str(engine.process.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        cpu0 = cpu_seconds(engine.process.pid)
        started = time.monotonic()
        while asyncio.run(out_count(rabbit.url, queue)) < count:
            time.sleep(0.05)
        seconds = time.monotonic() - started
        cpu = cpu_seconds(engine.process.pid) - cpu0
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
    return count / seconds, cpu / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50,
                        help="the engine source's concurrency (default 50: the floor runs every prefetched message "
                             "at once)")
    parser.add_argument("--profile", type=Path, help="py-spy the engine's cells (raw stacks to PROFILE.N)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="interlace-bench-amqp-"))
    cpu_ratios: list[float] = []
    wall_ratios: list[float] = []
    try:
        with RabbitServer() as rabbit:
            for n in range(args.rounds):
                f_rate, f_cpu = cell_floor(rabbit, args.messages, n)
                profile = args.profile.with_name(f"{args.profile.name}.{n}") if args.profile else None
                e_rate, e_cpu = cell_engine(rabbit, args.messages, n, work, args.concurrency, profile)
                cpu_ratios.append(f_cpu / e_cpu)
                wall_ratios.append(e_rate / f_rate)
                print(json.dumps({"round": n, "floor_per_s": round(f_rate), "floor_cpu_us": round(f_cpu),
                                  "engine_per_s": round(e_rate), "engine_cpu_us": round(e_cpu),
                                  "engine_vs_floor_cpu": round(cpu_ratios[-1], 2),
                                  "engine_vs_floor_wall": round(wall_ratios[-1], 2)}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # throughput per CPU (floor CPU / engine CPU per message): what the shared machine does not distort
    cpu_ratio, wall_ratio = statistics.median(cpu_ratios), statistics.median(wall_ratios)
    print(f"RATIO engine/floor {cpu_ratio:.2f}x by CPU per message (median of {len(cpu_ratios)} rounds: "
          f"{', '.join(f'{r:.2f}' for r in cpu_ratios)}); {wall_ratio:.2f}x by wall messages/s; "
          f"goal >= 0.8x: {'met' if cpu_ratio >= 0.8 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
