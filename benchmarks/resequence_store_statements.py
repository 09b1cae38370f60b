"""The statements a resequence step sends its sql store per message: counts, never time.

    .venv/bin/python benchmarks/resequence_store_statements.py [--messages 120] [--stores postgresql,sqlite]

An in-process engine (tests/support/engine.py's facade_client) resequences ``--messages``
numbers, posted nearly in order (shuffled within windows of 6, as the two-engine test posts
them), into a ledger on 127.0.0.1; the store is a PostgreSQL made for the run
(tests/support/postgres.py) or an SQLite file.  Printed per store: the statements the engine
sent while the messages were held and released (SQLAlchemy's ``before_cursor_execute``, so a
call of a PostgreSQL function is one, and BEGIN/COMMIT are not counted), split into the holds'
and the sender's, and per message.  Counts are load-proof: run it while others work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import Engine, event  # noqa: E402

from tests.support.backends import BackendServer  # noqa: E402
from tests.support.engine import facade_client, write_flows  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

statements = Counter[str]()


def _flows(ledger: BackendServer, url: str) -> str:
    return f"""
    endpoints:
      ledger: {{http: {{url: "{ledger.url}"}}}}
      state: {{sql: {{url: "{url}"}}}}
    flows:
      entries:
        source: {{http: {{method: POST, path: /entries}}}}
        steps:
          - resequence: {{number: "${{payload.seq}}", start: 1, timeout: 1h, store: state,
                          call: {{endpoint: ledger, method: POST, path: /entries}}}}
          - respond: {{status: 202}}
    """


def measure(url: str, name: str, messages: int, root: Path, ledger: BackendServer) -> str:
    folder = write_flows(root / name, _flows(ledger, url))
    shuffle = random.Random(15).shuffle
    numbers: list[int] = []
    for start in range(1, messages + 1, 6):
        window = list(range(start, min(start + 6, messages + 1)))
        shuffle(window)
        numbers += window

    async def run() -> Counter[str]:
        async with facade_client(folder) as client:
            statements.clear()
            for number in numbers:
                assert (await client.post("/entries", json={"seq": number})).status_code == 202
            holds = Counter(statements)
            for _ in range(400):
                if len(ledger.requests) >= messages:
                    break
                await asyncio.sleep(0.05)
            return holds

    holds = asyncio.run(run())
    seen = [json.loads(request.body)["seq"] for request in ledger.requests]
    assert seen == sorted(numbers), seen
    total, held = sum(statements.values()), sum(holds.values())
    top = ", ".join(f"{count} x {text[:50]!r}" for text, count in holds.most_common(4))
    return (f"{name}: {total:,} statements for {messages} messages ({total / messages:.1f} each): "
            f"{held:,} while they were posted ({held / messages:.1f} a hold, the sender's polls included); "
            f"most sent then: {top}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=120)
    parser.add_argument("--stores", default="postgresql,sqlite")
    args = parser.parse_args()
    event.listen(Engine, "before_cursor_execute",
                 lambda _conn, _cursor, statement, *_rest: statements.update([" ".join(statement.split())]))
    with tempfile.TemporaryDirectory(prefix="reseq-statements-") as tmp:
        root = Path(tmp)
        for store in args.stores.split(","):
            with BackendServer() as ledger:
                if store == "sqlite":
                    print(measure(f"sqlite:///{root}/order.db", "sqlite", args.messages, root, ledger))
                else:
                    with PostgresServer() as postgres:
                        print(measure(postgres.url, "postgresql", args.messages, root, ledger))


if __name__ == "__main__":
    main()
