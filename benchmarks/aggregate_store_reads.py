"""What one aggregate group of N adds costs its store: commands, statements, rows and bytes, never time.

    .venv/bin/python benchmarks/aggregate_store_reads.py [--adds 1000] [--stores redis,sqlite,postgresql]

An in-process engine (tests/support/engine.py's facade_client) gathers ``--adds`` lines of one
order into one group, ``complete: {size: N}``, in each store: Redis and PostgreSQL made for the
run on 127.0.0.1 (tests/support/), SQLite in a temporary file.  Each line's value is a 100-byte
string.  Printed per store:

- Redis: the commands Redis ran (``INFO commandstats``: calls per command, counting those a
  script runs) and the bytes it sent to its clients (``total_net_output_bytes``);
- SQL: the statements the engine sent (SQLAlchemy's ``before_cursor_execute``: a call of a
  PostgreSQL function is one) and the rows and value bytes that came back to the aggregate's
  repository (counted in ``engine/steps/_groups.py``'s ``_rows``).

Counts are load-proof: run it while others work.  Compare the figures of two commits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import Engine, event  # noqa: E402

import engine.steps._groups as groups_module  # noqa: E402
from tests.patterns.test_wire_tap import arrived  # noqa: E402
from tests.support.backends import BackendServer  # noqa: E402
from tests.support.engine import facade_client, write_flows  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.redis_server import RedisServer, redis_server  # noqa: E402

statements = Counter[str]()
returned = {"rows": 0, "bytes": 0}
_original_rows = groups_module._rows


def _counted_rows(result: Any, dialect: str, request: Any) -> Any:
    reply = _original_rows(result, dialect, request)
    returned["rows"] += len(reply.payload)
    returned["bytes"] += sum(len(cell) for row in reply.payload for cell in row if isinstance(cell, bytes | memoryview))
    return reply


def _flows(backend: BackendServer, store: str, adds: int) -> str:
    return f"""
    endpoints:
      orders: {{http: {{url: "{backend.url}"}}}}
      groups: {store}
    flows:
      lines:
        source: {{http: {{method: POST, path: /lines}}}}
        steps:
          - aggregate:
              correlation: "${{payload.order}}"
              value: "${{payload.line}}"
              complete: {{size: {adds}}}
              max_size: {adds}
              store: groups
              call: {{endpoint: orders, method: POST, path: "/orders/${{vars.group.key}}"}}
          - respond: {{status: 202}}
    """


def _redis_info(redis: RedisServer, section: str) -> dict[str, str]:
    text = redis.command("INFO", section).decode()
    return dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line and not line.startswith("#"))


def measure_redis(adds: int, root: Path, backend: BackendServer) -> str:
    with redis_server(root) as redis:
        folder = write_flows(root / "redis", _flows(backend, f'{{redis: {{url: "{redis.url}"}}}}', adds))

        async def run() -> tuple[dict[str, str], dict[str, str]]:
            async with facade_client(folder) as client:
                await client.post("/lines", json={"order": "warm-up", "line": "x"})
                redis.command("CONFIG", "RESETSTAT")
                before = _redis_info(redis, "stats")
                for n in range(adds):
                    answer = await client.post("/lines", json={"order": "o-1", "line": f"{n:0100d}"})
                    assert answer.status_code == 202, answer.text
                await arrived(backend, 1)
                return before, _redis_info(redis, "stats")

        before, after = asyncio.run(run())
        commands = {name.removeprefix("cmdstat_"): int(value.split(",")[0].removeprefix("calls="))
                    for name, value in _redis_info(redis, "commandstats").items()}
        sent = int(after["total_net_output_bytes"]) - int(before["total_net_output_bytes"])
        listed = ", ".join(f"{name} {count}" for name, count in sorted(commands.items(), key=lambda kv: -kv[1]))
        return f"redis: {sent:,} bytes sent to the engine; commands: {listed}"


def measure_sql(adds: int, url: str, name: str, root: Path, backend: BackendServer) -> str:
    folder = write_flows(root / name, _flows(backend, f'{{sql: {{url: "{url}"}}}}', adds))

    async def run() -> None:
        async with facade_client(folder) as client:
            await client.post("/lines", json={"order": "warm-up", "line": "x"})
            statements.clear()
            returned.update(rows=0, bytes=0)
            for n in range(adds):
                answer = await client.post("/lines", json={"order": "o-1", "line": f"{n:0100d}"})
                assert answer.status_code == 202, answer.text
            await arrived(backend, 1)

    asyncio.run(run())
    total = sum(statements.values())
    top = ", ".join(f"{count} x {text[:60]!r}" for text, count in statements.most_common(6))
    return (f"{name}: {total:,} statements, {returned['rows']:,} rows and {returned['bytes']:,} value bytes "
            f"returned; most sent: {top}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adds", type=int, default=1000)
    parser.add_argument("--stores", default="redis,sqlite,postgresql")
    args = parser.parse_args()
    groups_module._rows = _counted_rows  # type: ignore[assignment]
    event.listen(Engine, "before_cursor_execute",
                 lambda _conn, _cursor, statement, *_rest: statements.update([" ".join(statement.split())]))
    with tempfile.TemporaryDirectory(prefix="agg-reads-") as tmp, BackendServer() as backend:
        root = Path(tmp)
        for store in args.stores.split(","):
            backend.requests.clear()
            if store == "redis":
                print(measure_redis(args.adds, root, backend))
            elif store == "sqlite":
                print(measure_sql(args.adds, f"sqlite:///{root}/groups.db", "sqlite", root, backend))
            else:
                with PostgresServer() as postgres:
                    print(measure_sql(args.adds, postgres.url, "postgresql", root, backend))
            sent = backend.requests[-1].body if backend.requests else b""
            assert sent.count(b",") == args.adds - 1, f"{store}: the group sent was not {args.adds} lines"


if __name__ == "__main__":
    main()
