"""The store: state that must outlive a process or be shared by replicas, on SQLAlchemy.

SQLite in WAL mode in the flows' data folder by default (one process, or forked workers on one
host); PostgreSQL when replicas share it (``INTERLACE_STORE_URL=postgresql+psycopg://...``).

The database work runs on the store's own threads (SQLAlchemy's engine is synchronous; the
drivers release the GIL while they wait).  Accepting a message is *group committed*: requests
that arrive while a commit is in progress wait for the next one, which writes them all in one
transaction; each caller learns its id only after that commit, so a 202 always means "on disk".

Claiming is how two processors never send the same message at once: a claim sets a lease
(``locked_until``) on the longest due messages in one statement.  On PostgreSQL the candidate
rows are picked with ``FOR UPDATE SKIP LOCKED``; SQLite has one writer at a time, so its
``UPDATE ... RETURNING`` is already atomic across processes.  A lease that runs out (the
processor crashed) makes the message due again: delivery is at-least-once, and the message id
is the idempotency key a backend dedups on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.schema import CreateIndex, CreateTable

from engine import jsonfast
from engine.observability import new_id
from engine.store import StoreError
from engine.store.tables import (
    attempts,
    dead_letters,
    file_claims,
    firings,
    idempotency_keys,
    messages,
    metadata,
)

log = logging.getLogger("interlace.store")

T = TypeVar("T")
BATCH = 512  # most messages written in one group commit


@dataclass
class StoredMessage:
    seq: int
    id: str
    queue: str
    body: bytes
    content_type: str | None
    headers: dict[str, str]
    vars: dict[str, Any]
    order_key: str | None
    attempts: int
    created: float
    last_error: dict[str, Any] | None = None


@dataclass
class DeadLetter:
    seq: int
    id: str
    store: str
    queue: str
    flow: str | None
    content_type: str | None
    attempts: int
    created: float
    failed_at: float
    error: dict[str, Any]
    body: bytes

    def as_dict(self, *, with_body: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "store": self.store, "queue": self.queue, "flow": self.flow,
                               "content_type": self.content_type, "attempts": self.attempts,
                               "created": self.created, "failed_at": self.failed_at, "error": self.error}
        if with_body:
            out["body"] = self.body.decode("utf-8", errors="replace")
        return out


@dataclass
class Settlement:
    """What a processor reports in one store transaction (``Store.cycle``)."""

    delivered: list[int] = field(default_factory=list)  # seqs whose flow succeeded: deleted
    retries: list[tuple[int, float, dict[str, Any]]] = field(default_factory=list)  # (seq, delay, error)
    renew: list[int] = field(default_factory=list)  # seqs still running: their leases extended

    def __bool__(self) -> bool:
        return bool(self.delivered or self.retries or self.renew)


@dataclass(frozen=True)
class _QueueStatements:
    claim: Any
    delete: Any
    retry: Any
    renew: Any


@dataclass
class _Pending:
    row: dict[str, Any]
    idem_scope: str | None
    idem_key: str | None
    future: asyncio.Future[tuple[str, bool]]


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'interlace.db'}"


def store_url_for(flows_dir: Path) -> str:
    """The store a flow folder uses: INTERLACE_STORE_URL, else SQLite in its data folder."""
    given = os.environ.get("INTERLACE_STORE_URL")
    if given:
        return given
    data = os.environ.get("INTERLACE_DATA_DIR")
    folder = Path(data) if data else (Path(flows_dir) if Path(flows_dir).is_dir() else Path(flows_dir).parent) / "data"
    return default_url(folder)


def safe_url(url: str) -> str:
    """The URL with any password replaced, for logs and the management API."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class Store:
    """One database, shared by every store step, processor, schedule and file poller of a process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.owner = new_id()  # this process, as the owner of leases and claims
        self.is_sqlite = url.startswith("sqlite")
        self._engine: Engine | None = None
        # SQLite has one writer: one thread keeps this process's writes from contending with
        # each other (other processes wait on busy_timeout).  PostgreSQL takes a few at once.
        self._pool = ThreadPoolExecutor(1 if self.is_sqlite else 4, thread_name_prefix="interlace-store")
        self._pending: list[_Pending] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.accepted = 0
        self.commits = 0
        self._wakers: dict[str, asyncio.Event] = {}
        self._prepared: dict[tuple[str, bool], _QueueStatements] = {}

    def waker(self, queue: str) -> asyncio.Event:
        """Set whenever this process commits a message to ``queue``: its processors wake at once."""
        return self._wakers.setdefault(queue, asyncio.Event())

    def wake_all(self) -> None:
        for waker in self._wakers.values():
            waker.set()

    # --- lifetime ------------------------------------------------------------------------

    async def open(self) -> None:
        if self._engine is not None:
            return
        await self._run_raw(self._connect)
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="interlace-store-writer")

    def _connect(self) -> None:
        if self.is_sqlite:
            path = self.url.split("///", 1)[1] if "///" in self.url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(self.url, connect_args={"timeout": 30, "check_same_thread": False},
                                   pool_size=2, max_overflow=2)

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                # WAL: readers never block the writer; synchronous=NORMAL survives a killed
                # process (the WAL is in the OS's hands once written), not a power cut.
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()
        else:
            engine = create_engine(self.url, pool_size=5, max_overflow=5, pool_pre_ping=True)
        try:
            with engine.begin() as conn:
                if self.is_sqlite:
                    # IF NOT EXISTS: workers forked at once (or two engines) on a new file would
                    # otherwise race between create_all's check and its CREATE
                    for table in metadata.sorted_tables:
                        conn.execute(CreateTable(table, if_not_exists=True))
                        for index in table.indexes:
                            conn.execute(CreateIndex(index, if_not_exists=True))
                else:
                    # two replicas starting at once must not both create the tables
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7264015)")
                    metadata.create_all(conn, checkfirst=True)
        except SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(f"cannot open the store {safe_url(self.url)}: {exc.__class__.__name__}") from exc
        self._engine = engine

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            assert self._wake is not None
            self._wake.set()
            await self._writer
        if self._engine is not None:
            await self._run_raw(self._engine.dispose)
        # a database that went away must not hold up the shutdown: pending work is dropped (a
        # message not yet committed got no 202; a lease not recorded runs out)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run_raw(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _tx(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction on a store thread."""
        engine = self._engine
        if engine is None:
            raise StoreError("the store is not open")

        def work() -> T:
            try:
                with engine.begin() as conn:
                    return fn(conn)
            except SQLAlchemyError as exc:
                raise StoreError(f"store {safe_url(self.url)}: {exc.__class__.__name__}: "
                                 f"{str(exc).splitlines()[0][:200]}") from exc

        return await self._run_raw(work)

    # --- accepting (group commit) ---------------------------------------------------------

    async def enqueue(self, queue: str, body: bytes, *, content_type: str | None = None,
                      headers: dict[str, str] | None = None, vars: dict[str, Any] | None = None,
                      order_key: str | None = None, idempotency_key: str | None = None,
                      message_id: str | None = None, delay: float = 0.0) -> tuple[str, bool]:
        """Persist a message; returns (its id, whether the idempotency key had been seen before)
        once it is committed."""
        if self._wake is None or self._closed:
            raise StoreError("the store is not open")
        now = time.time()
        row = {"id": message_id or new_id(), "queue": queue, "body": body, "content_type": content_type,
               "headers": _json(headers or {}), "vars": _json(vars or {}),
               "order_key": order_key, "attempts": 0, "next_at": now + delay, "locked_until": 0.0,
               "owner": None, "created": now, "last_error": None}
        future: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(row, queue if idempotency_key else None, idempotency_key, future))
        self._wake.set()
        return await future

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
                try:
                    results = await self._tx(lambda conn, b=batch: self._write_batch(conn, b))  # type: ignore[misc]
                except Exception as exc:  # every waiter learns of it; the loop goes on
                    error = exc if isinstance(exc, StoreError) else StoreError(str(exc))
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(error)
                    continue
                self.commits += 1
                for item, result in zip(batch, results, strict=True):
                    if not item.future.done():
                        item.future.set_result(result)
                        self.accepted += 0 if result[1] else 1
                for queue in {item.row["queue"] for item in batch}:
                    waker = self._wakers.get(queue)
                    if waker is not None:
                        waker.set()
            if self._closed:
                return

    def _write_batch(self, conn: Connection, batch: list[_Pending]) -> list[tuple[str, bool]]:
        results: list[tuple[str, bool]] = []
        rows: list[dict[str, Any]] = []
        seen: dict[tuple[str, str], str] = {}
        for item in batch:
            if item.idem_key is None or item.idem_scope is None:
                rows.append(item.row)
                results.append((item.row["id"], False))
                continue
            scope_key = (item.idem_scope, item.idem_key)
            if scope_key in seen:
                results.append((seen[scope_key], True))
                continue
            claimed = conn.execute(self._insert_ignore(idempotency_keys).values(
                scope=item.idem_scope, key=item.idem_key, message_id=item.row["id"], created=item.row["created"])
                .returning(idempotency_keys.c.message_id)).first()
            if claimed is not None:
                seen[scope_key] = item.row["id"]
                rows.append(item.row)
                results.append((item.row["id"], False))
            else:
                earlier = conn.execute(select(idempotency_keys.c.message_id).where(
                    idempotency_keys.c.scope == item.idem_scope, idempotency_keys.c.key == item.idem_key)).scalar_one()
                seen[scope_key] = earlier
                results.append((earlier, True))
        if rows:
            conn.execute(insert(messages), rows)
        return results

    def _insert_ignore(self, table: Any) -> Any:
        if self.is_sqlite:
            return sqlite.insert(table).on_conflict_do_nothing()
        return postgresql.insert(table).on_conflict_do_nothing()

    # --- processing ----------------------------------------------------------------------

    async def claim(self, queue: str, limit: int, lease: float, *, ordered: bool = False) -> list[StoredMessage]:
        """Lease up to ``limit`` due messages of ``queue``, the longest due first.  With ``ordered``, a
        message waits while an older one with the same order key is still in the store."""
        return await self.cycle(queue, Settlement(), claim=limit, lease=lease, ordered=ordered)

    async def cycle(self, queue: str, settle: Settlement, *, claim: int, lease: float,
                    ordered: bool = False) -> list[StoredMessage]:
        """One processor round trip, in ONE transaction: delete what was delivered, reschedule what
        failed, extend the leases of what is still running, then lease up to ``claim`` more.

        Batching the outcomes is what makes forwarding cheap (one commit for many messages
        instead of one each); deleting before claiming lets an ordered queue hand out the next
        message of a key in the same transaction that retires the previous one.  A message is
        deleted only after its flow succeeded, so a crash before this commit sends it again:
        at-least-once, as before."""
        statements = self._statements(queue, ordered)
        owner = self.owner

        def work(conn: Connection) -> list[StoredMessage]:
            now = time.time()
            if settle.delivered:
                conn.execute(statements.delete, {"b_seqs": settle.delivered, "b_owner": owner})
            if settle.retries:
                conn.execute(statements.retry, [
                    {"b_seq": seq, "b_owner": owner, "b_next_at": now + delay,
                     "b_last_error": json.dumps(error, default=str)} for seq, delay, error in settle.retries])
            if settle.renew:
                renewed = conn.execute(statements.renew, {"b_seqs": settle.renew, "b_owner": owner,
                                                          "b_until": now + lease}).rowcount
                if renewed != len(settle.renew):
                    log.warning("queue %s: %d of %d leases could not be renewed (they ran out and another "
                                "processor took the messages)", queue, len(settle.renew) - renewed, len(settle.renew))
            if claim <= 0:
                return []
            rows = conn.execute(statements.claim, {"b_now": now, "b_until": now + lease, "b_owner": owner,
                                                   "b_limit": claim}).mappings().all()
            return sorted((_stored(row) for row in rows), key=lambda s: s.seq)

        return await self._tx(work)

    def _statements(self, queue: str, ordered: bool) -> _QueueStatements:
        """The processor's statements for ``queue``, built once (building SQLAlchemy expressions per
        message cost more CPU than running them)."""
        key = (queue, ordered)
        found = self._prepared.get(key)
        if found is not None:
            return found
        m = messages.alias("m")
        now = bindparam("b_now", type_=Float)
        due = and_(m.c.queue == queue, m.c.next_at <= now, m.c.locked_until < now)
        if ordered:
            older = messages.alias("older")
            due = and_(due, ~exists().where(and_(older.c.queue == queue, older.c.order_key == m.c.order_key,
                                                 older.c.seq < m.c.seq)))
        # in the order they fall due (a new message when it was stored, a retry when its backoff
        # ends), the sequence breaking ties: the (queue, next_at) index hands them out in that
        # order and the scan stops at the limit.  ORDER BY seq alone made SQLite read and sort
        # every due row of the queue in each round (17 ms a claim at 30,000 stored: forwarding
        # fell as the backlog grew); the per-key order of an ordered queue is the clause above.
        picked = (select(m.c.seq).where(due).order_by(m.c.next_at, m.c.seq)
                  .limit(bindparam("b_limit", type_=Integer)))
        if not self.is_sqlite:
            picked = picked.with_for_update(skip_locked=True)
        # (bound names differ from the columns': SQLAlchemy reserves those in UPDATE ... SET)
        mine = messages.c.owner == bindparam("b_owner")
        seqs: Any = bindparam("b_seqs", expanding=True)
        prepared = _QueueStatements(
            claim=(update(messages).where(messages.c.seq.in_(picked.scalar_subquery()))
                   .values(locked_until=bindparam("b_until", type_=Float), owner=bindparam("b_owner"),
                           attempts=messages.c.attempts + 1)
                   .returning(*messages.c)),
            delete=delete(messages).where(messages.c.seq.in_(seqs), mine),
            retry=(update(messages).where(messages.c.seq == bindparam("b_seq"), mine)
                   .values(next_at=bindparam("b_next_at"), locked_until=0.0, owner=None,
                           last_error=bindparam("b_last_error"))),
            renew=update(messages).where(messages.c.seq.in_(seqs), mine).values(
                locked_until=bindparam("b_until", type_=Float)),
        )
        self._prepared[key] = prepared
        return prepared

    async def next_due(self, queue: str) -> float | None:
        """When the next message of ``queue`` may be tried (None when it is empty)."""

        # the later of the two times, in each dialect's words
        later = func.max if self.is_sqlite else func.greatest

        def work(conn: Connection) -> float | None:
            value = conn.execute(select(func.min(later(messages.c.next_at, messages.c.locked_until)))
                                 .where(messages.c.queue == queue)).scalar()
            return float(value) if value is not None else None

        return await self._tx(work)

    async def delivered(self, seq: int) -> None:
        await self.cycle("", Settlement(delivered=[seq]), claim=0, lease=0)

    async def retry_later(self, seq: int, delay: float, error: dict[str, Any]) -> None:
        await self.cycle("", Settlement(retries=[(seq, delay, error)]), claim=0, lease=0)

    async def bury(self, seq: int, dead_store: str, flow: str | None, error: dict[str, Any]) -> None:
        """Move a message to the dead letters (one transaction: never lost, never in both)."""

        def work(conn: Connection) -> None:
            row = conn.execute(select(messages).where(messages.c.seq == seq, messages.c.owner == self.owner)
                               ).mappings().first()
            if row is None:
                return  # its lease ran out and another processor has it now
            conn.execute(insert(dead_letters).values(
                id=row["id"], store=dead_store, queue=row["queue"], flow=flow, body=row["body"],
                content_type=row["content_type"], headers=row["headers"], vars=row["vars"],
                order_key=row["order_key"], attempts=row["attempts"], created=row["created"],
                failed_at=time.time(), error=json.dumps(error, default=str)))
            conn.execute(delete(messages).where(messages.c.seq == seq))

        await self._tx(work)

    async def add_dead_letter(self, dead_store: str, *, queue: str, flow: str | None, body: bytes,
                              content_type: str | None, headers: dict[str, str], vars: dict[str, Any],
                              attempts: int, error: dict[str, Any], message_id: str | None = None) -> str:
        """A dead letter from a source that is not the store (a queue, a file)."""
        ident = message_id or new_id()
        now = time.time()

        def work(conn: Connection) -> None:
            conn.execute(self._insert_ignore(dead_letters).values(
                id=ident, store=dead_store, queue=queue, flow=flow, body=body, content_type=content_type,
                headers=json.dumps(headers), vars=json.dumps(vars, default=str), order_key=None,
                attempts=attempts, created=now, failed_at=now, error=json.dumps(error, default=str)))

        await self._tx(work)
        return ident

    # --- operations (management API) -----------------------------------------------------

    async def queue_counts(self) -> dict[str, dict[str, Any]]:
        def work(conn: Connection) -> dict[str, dict[str, Any]]:
            now = time.time()
            out: dict[str, dict[str, Any]] = {}
            for queue, count, oldest, retrying in conn.execute(
                    select(messages.c.queue, func.count(), func.min(messages.c.created),
                           func.sum((messages.c.attempts > 0).cast(Integer)))
                    .group_by(messages.c.queue)):
                out[queue] = {"stored": int(count), "retrying": int(retrying or 0),
                              "oldest_age_seconds": round(now - float(oldest), 3) if oldest else 0.0}
            for store_name, count in conn.execute(select(dead_letters.c.store, func.count())
                                                  .group_by(dead_letters.c.store)):
                out.setdefault(store_name, {"stored": 0, "retrying": 0, "oldest_age_seconds": 0.0})
                out[store_name]["dead"] = int(count)
            for entry in out.values():
                entry.setdefault("dead", 0)
            return out

        return await self._tx(work)

    async def page_stored(self, queue: str, offset: int, limit: int) -> list[dict[str, Any]]:
        def work(conn: Connection) -> list[dict[str, Any]]:
            rows = conn.execute(select(messages).where(messages.c.queue == queue).order_by(messages.c.seq)
                                .offset(offset).limit(limit)).mappings().all()
            return [{"id": r["id"], "attempts": r["attempts"], "created": r["created"], "next_at": r["next_at"],
                     "order_key": r["order_key"], "content_type": r["content_type"],
                     "last_error": json.loads(r["last_error"]) if r["last_error"] else None,
                     "body": bytes(r["body"]).decode("utf-8", errors="replace")} for r in rows]

        return await self._tx(work)

    async def page_dead(self, dead_store: str, offset: int, limit: int) -> list[DeadLetter]:
        def work(conn: Connection) -> list[DeadLetter]:
            rows = conn.execute(select(dead_letters).where(dead_letters.c.store == dead_store)
                                .order_by(dead_letters.c.seq).offset(offset).limit(limit)).mappings().all()
            return [_dead(r) for r in rows]

        return await self._tx(work)

    async def replay(self, dead_store: str, ids: Sequence[str] | None) -> int:
        """Put dead letters back in the queue they came from, as new (attempts 0, due now)."""

        def work(conn: Connection) -> int:
            query = select(dead_letters).where(dead_letters.c.store == dead_store)
            if ids is not None:
                query = query.where(dead_letters.c.id.in_(list(ids)))
            rows = conn.execute(query.order_by(dead_letters.c.seq)).mappings().all()
            now = time.time()
            for r in rows:
                conn.execute(insert(messages).values(
                    id=r["id"], queue=r["queue"], body=r["body"], content_type=r["content_type"],
                    headers=r["headers"], vars=r["vars"], order_key=r["order_key"], attempts=0, next_at=now,
                    locked_until=0.0, owner=None, created=r["created"], last_error=r["error"]))
                conn.execute(delete(dead_letters).where(dead_letters.c.seq == r["seq"]))
            return len(rows)

        return await self._tx(work)

    async def discard(self, dead_store: str, ids: Sequence[str] | None) -> int:
        def work(conn: Connection) -> int:
            statement = delete(dead_letters).where(dead_letters.c.store == dead_store)
            if ids is not None:
                statement = statement.where(dead_letters.c.id.in_(list(ids)))
            return int(conn.execute(statement).rowcount)

        return await self._tx(work)

    # --- schedules and files -------------------------------------------------------------

    async def claim_firing(self, name: str, at: float) -> bool:
        """True for the one replica that runs the firing of schedule ``name`` due at ``at``."""

        def work(conn: Connection) -> bool:
            result = conn.execute(self._insert_ignore(firings).values(name=name, at=at, owner=self.owner,
                                                                      started=time.time())
                                  .returning(firings.c.owner)).first()
            # keep a day of history, enough to answer "did it run" and small enough to scan
            conn.execute(delete(firings).where(firings.c.name == name, firings.c.at < at - 86400))
            return result is not None

        return await self._tx(work)

    async def claim_file(self, source: str, key: str, lease: float) -> bool:
        """Take a file for this process: False when another has it, or it was done already."""

        def work(conn: Connection) -> bool:
            now = time.time()
            result = conn.execute(self._insert_ignore(file_claims).values(
                source=source, key=key, owner=self.owner, state="claimed", lease_until=now + lease, updated=now)
                .returning(file_claims.c.owner)).first()
            if result is not None:
                return True
            # a claim whose process died (lease over, never finished) may be taken again
            taken = conn.execute(update(file_claims).where(
                file_claims.c.source == source, file_claims.c.key == key, file_claims.c.state == "claimed",
                file_claims.c.lease_until < now).values(owner=self.owner, lease_until=now + lease, updated=now))
            return bool(taken.rowcount == 1)

        return await self._tx(work)

    async def finish_file(self, source: str, key: str, state: str) -> None:
        def work(conn: Connection) -> None:
            conn.execute(update(file_claims).where(file_claims.c.source == source, file_claims.c.key == key)
                         .values(state=state, updated=time.time()))
            conn.execute(delete(attempts).where(attempts.c.source == source, attempts.c.key == key))

        await self._tx(work)

    # --- attempts that survive a crash ---------------------------------------------------

    async def attempts_made(self, source: str, key: str, fingerprint: str = "") -> int:
        """The attempts recorded for the message ``key`` of ``source`` (0: none, or the key now names
        another message: its fingerprint differs)."""

        def work(conn: Connection) -> int:
            row = conn.execute(select(attempts.c.attempts, attempts.c.fingerprint).where(
                attempts.c.source == source, attempts.c.key == key)).first()
            return int(row[0]) if row is not None and row[1] == fingerprint else 0

        return await self._tx(work)

    async def record_attempt(self, source: str, key: str, attempt: int, fingerprint: str = "") -> None:
        """Before attempt number ``attempt`` runs: if the process dies in it, it still counts."""

        def work(conn: Connection) -> None:
            now = time.time()
            done = conn.execute(update(attempts).where(attempts.c.source == source, attempts.c.key == key)
                                .values(attempts=attempt, fingerprint=fingerprint, updated=now))
            if not done.rowcount:
                conn.execute(self._insert_ignore(attempts).values(source=source, key=key, fingerprint=fingerprint,
                                                                  attempts=attempt, updated=now))

        await self._tx(work)

    async def forget_attempts(self, source: str, key: str) -> None:
        """The message is settled: its count is not needed any more."""

        def work(conn: Connection) -> None:
            conn.execute(delete(attempts).where(attempts.c.source == source, attempts.c.key == key))

        await self._tx(work)


def _json(value: Any) -> str:
    """JSON text through orjson (json.dumps cost a tenth of an accepted message's CPU)."""
    return jsonfast.dumps(value).decode()


def _stored(row: Any) -> StoredMessage:
    return StoredMessage(seq=int(row["seq"]), id=row["id"], queue=row["queue"], body=bytes(row["body"]),
                         content_type=row["content_type"], headers=jsonfast.loads(row["headers"]),
                         vars=jsonfast.loads(row["vars"]), order_key=row["order_key"], attempts=int(row["attempts"]),
                         created=float(row["created"]),
                         last_error=json.loads(row["last_error"]) if row["last_error"] else None)


def _dead(row: Any) -> DeadLetter:
    return DeadLetter(seq=int(row["seq"]), id=row["id"], store=row["store"], queue=row["queue"], flow=row["flow"],
                      content_type=row["content_type"], attempts=int(row["attempts"]), created=float(row["created"]),
                      failed_at=float(row["failed_at"]), error=json.loads(row["error"]), body=bytes(row["body"]))
