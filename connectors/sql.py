"""SQL endpoints: relational databases through SQLAlchemy 2's asyncio engine.

SQLite (through aiosqlite) is the embedded default: ``url: sqlite:///inventory.db`` is a file
beside the flow file (an absolute path, or one from ``${env.*}``, works too).  PostgreSQL is
the real one: ``url: postgresql://app:${secret.DB_PASSWORD}@db:5432/app`` runs on asyncpg.

In a flow file::

    endpoints:
      inventory-db:
        sql:
          url: sqlite:///inventory.db
          required: true                     # readiness fails while it cannot be used
          pool: {max_connections: 10, acquire_timeout: 5s}
          timeout: {connect: 5s, statement: 10s}
          init:                              # run once, when the database is first reached
            - CREATE TABLE IF NOT EXISTS items (sku TEXT PRIMARY KEY, name TEXT, qty INTEGER)

    steps:
      - call:
          endpoint: inventory-db
          operation: query
          sql: SELECT sku, name, qty FROM items WHERE sku = :sku
          params: {sku: "${path.sku}"}
          expect: one                        # the row as an object; 404 when there is none

Parameters are always bound (``:name`` in the statement, its value from ``params``), never
pasted into the text: ``${...}`` inside ``sql`` is a load error saying so.  A statement outside
a ``transaction`` step runs on its own (autocommit: one statement is atomic by itself, and no
BEGIN/COMMIT round trips are spent on it); ``batch`` runs all its rows in one transaction.
Failures are typed at this edge (``connectors._sql_errors``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

from sqlalchemy import event, text
from sqlalchemy.engine import URL, CursorResult, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction, create_async_engine
from sqlalchemy.pool import StaticPool

from connectors._sql_errors import map_database_error
from connectors._sql_rows import json_rows, xml_rows
from connectors.base import (
    TRANSACTIONS_KEY,
    Connector,
    EndpointContext,
    Invocation,
    Invoke,
    Operation,
    Reply,
    Request,
    Transaction,
    TransactionOptions,
    register_connector,
)
from connectors.resilience import duration_schema, setting_duration
from engine.errors import BackendError, BackendRejected, FlowError, NotFound

if TYPE_CHECKING:
    from sqlalchemy.sql import Executable

    from engine.compiler import CompileContext
    from engine.expressions import Template
    from engine.message import Message

log = logging.getLogger("interlace.sql")

DRIVERS: Final = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
ISOLATION_LEVELS: Final = {"read uncommitted": "READ UNCOMMITTED", "read committed": "READ COMMITTED",
                           "repeatable read": "REPEATABLE READ", "serializable": "SERIALIZABLE"}
# statements that only read, whatever the operation (a query may well be an INSERT ... RETURNING)
READING_STATEMENTS: Final = ("select", "with", "values", "explain", "show", "pragma")
PARAM_TYPES: Final = ("string", "integer", "number", "boolean")
DEFAULT_POOL: Final = 10

_SQL = {"type": "string", "minLength": 1,
        "description": "The statement, with :name for each parameter (bound, never pasted into the text)."}
_PARAMS = {"type": "object",
           "description": "The value of each :name of the statement, e.g. {sku: \"${path.sku}\"}; ${...} allowed."}
_TYPES = {"type": "object", "additionalProperties": {"enum": list(PARAM_TYPES)},
          "description": "Convert parameters before binding, e.g. {qty: integer} for a value read from the path "
                         "or query (text there); a value that does not convert fails with 422 invalid-parameter."}


def _operation_schema(required: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": {"sql": _SQL, "params": _PARAMS, "types": _TYPES, **extra}}


QUERY = Operation(
    "Run a SELECT (or any statement returning rows); the rows become the payload: a list of objects (or one "
    "object with expect: one), or an XML document with as: xml.",
    schema=_operation_schema(["sql"], **{
        "expect": {"enum": ["many", "one", "optional"],
                   "description": "many (default): a list of rows; one: the first row as an object, 404 not-found "
                                  "when there is none; optional: the first row, or null."},
        "as": {"enum": ["json", "xml"], "description": "json (default): objects; xml: <rows><row><column>..."},
        "root": {"type": "string", "description": "XML: the document element's name (default rows)."},
        "row": {"type": "string", "description": "XML: each row's element name (default row)."},
        "not_found": {"type": "string", "description": "expect: one: the 404's message (default: no row matches)."},
    }),
    examples=[{"endpoint": "inventory-db", "operation": "query",
               "sql": "SELECT sku, name, qty FROM items WHERE sku = :sku", "params": {"sku": "${path.sku}"},
               "expect": "one"}],
)
EXECUTE = Operation(
    "Run an INSERT, UPDATE, DELETE or DDL statement; the payload becomes {row_count, key}: the rows it "
    "changed and the generated key (SQLite's rowid, or the first column RETURNING gives; then rows too).",
    schema=_operation_schema(["sql"]),
    examples=[{"endpoint": "inventory-db", "operation": "execute",
               "sql": "UPDATE items SET qty = qty - :n WHERE sku = :sku",
               "params": {"sku": "${path.sku}", "n": "${payload.quantity}"}, "types": {"n": "integer"}}],
)
BATCH = Operation(
    "Run one statement for every object of a list, in one transaction (all rows or none); each object's "
    "keys bind the statement's :names, params adds values common to all rows. The payload becomes {row_count}.",
    schema=_operation_schema(["sql", "rows"], rows={
        "type": "string", "description": "An expression giving the list of objects, e.g. ${payload.items}."}),
    examples=[{"endpoint": "inventory-db", "operation": "batch",
               "sql": "INSERT INTO items (sku, name, qty) VALUES (:sku, :name, :qty)", "rows": "${payload.items}"}],
)


Shape = Callable[[CursorResult[Any], str, "SqlRequest"], Reply]


class SqlRequest(Request):
    __slots__ = ("not_found", "params", "shape", "single", "statement", "writes")

    def __init__(self, operation: str, statement: Executable, params: dict[str, Any] | list[dict[str, Any]],
                 shape: Shape, transaction: Transaction | None, not_found: str = "no row matches", *,
                 writes: bool = True) -> None:
        super().__init__(operation, transaction)
        self.statement = statement
        self.params = params
        self.shape = shape
        self.single = operation != "batch"
        self.writes = writes  # may change data: SQLite must commit it
        self.not_found = not_found

    def view(self) -> dict[str, Any]:
        return {"operation": self.operation, "sql": str(self.statement), "params": self.params}

    async def content(self) -> tuple[bytes, str | None]:
        from engine import jsonfast

        return jsonfast.dumps(self.params), "application/json"


class SqlTransaction(Transaction):
    def __init__(self, connection: AsyncConnection, transaction: AsyncTransaction, reset: str | None) -> None:
        self.connection = connection
        self.transaction = transaction
        self.reset = reset  # a statement undoing a per-connection setting (SQLite's query_only)

    async def commit(self) -> None:
        try:
            await self.transaction.commit()
        finally:
            await self._release()

    async def rollback(self) -> None:
        try:
            await self.transaction.rollback()
        finally:
            await self._release()

    async def _release(self) -> None:
        try:
            if self.reset is not None:
                await self.connection.exec_driver_sql(self.reset)
        finally:
            await self.connection.close()


def _convert(name: str, value: Any, kind: str) -> Any:
    if value is None:
        return None
    try:
        if kind == "integer":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if kind == "number":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            text_value = str(value).strip().lower()
            if text_value in ("true", "1", "yes"):
                return True
            if text_value in ("false", "0", "no"):
                return False
            raise ValueError
        return value if isinstance(value, str) else str(value)
    except (TypeError, ValueError):
        raise FlowError(f"parameter {name!r}: {value!r} is not {'an' if kind == 'integer' else 'a'} {kind}",
                        status=422, code="invalid-parameter") from None


_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


def bind_names(sql: str) -> list[str]:
    """The :names of a statement, as SQLAlchemy's text() finds them."""
    return list(dict.fromkeys(_BIND.findall(sql)))


@register_connector("sql")
class SqlConnector(Connector):
    """A relational database (see the module docstring)."""

    SUMMARY: ClassVar[str] = ("A relational database through SQLAlchemy 2 (asyncio): SQLite embedded (a file "
                              "beside the flows), PostgreSQL; bound parameters, pooled connections, statement "
                              "timeouts, transactions, readiness.")
    SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        # url or urls, not both (said without oneOf, which the reference generator reads as short forms)
        "anyOf": [{"required": ["url"]}, {"required": ["urls"]}],
        "not": {"required": ["url", "urls"]},
        "properties": {
            "url": {"type": "string", "minLength": 1,
                    "description": "The database: sqlite:///file.db (relative to the flow file's folder; "
                                   "sqlite:////abs/path.db absolute; sqlite:///:memory: in memory) or "
                                   "postgresql://user:${secret.DB_PASSWORD}@host:5432/name (asyncpg). Give url or "
                                   "urls, not both."},
            "urls": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                     "description": "Several copies of the database, e.g. a primary and its standby: with strategy: "
                                    "failover (default) a call goes to the first one that can be reached, and "
                                    "moves to the next when it cannot (GET /endpoints shows the one in use as "
                                    "active); a transaction is begun the same way and stays on its database. "
                                    "init runs on each when it is first reached."},
            "pool": {
                "type": "object", "additionalProperties": False,
                "description": "Pooled connections: max_connections (default 10; SQLite files too), "
                               "acquire_timeout (longest wait for a free one, default 5s; then 504).",
                "properties": {
                    "max_connections": {"type": "integer", "minimum": 1, "maximum": 1000,
                                        "description": "Open connections at most (default 10)."},
                    "acquire_timeout": duration_schema("Longest wait for a free connection (default 5s)."),
                },
            },
            "timeout": {
                "type": "object", "additionalProperties": False,
                "description": "connect (opening a connection, default 5s) and statement (longest run of one "
                               "statement, default 30s; PostgreSQL cancels it on the server, SQLite's is "
                               "interrupted). Past either the call fails with backend-timeout (504).",
                "properties": {
                    "connect": duration_schema("Opening a connection (default 5s)."),
                    "statement": duration_schema("Longest run of one statement (default 30s)."),
                },
            },
            "isolation": {"enum": list(ISOLATION_LEVELS),
                          "description": "Isolation level of transaction steps on this endpoint (default: the "
                                         "database's, read committed on PostgreSQL, serializable on SQLite)."},
            "init": {"type": "array", "items": {"type": "string", "minLength": 1},
                     "description": "Statements run in one transaction when the database is first reached (and "
                                    "again after a failure), e.g. CREATE TABLE IF NOT EXISTS and seed rows "
                                    "(INSERT ... ON CONFLICT DO NOTHING)."},
        },
    }
    OPERATIONS: ClassVar[dict[str, Operation]] = {"batch": BATCH, "execute": EXECUTE, "query": QUERY}
    DEFAULT_OPERATION: ClassVar[str | None] = None
    TRANSACTIONS: ClassVar[bool] = True
    MOCK_MATCH: ClassVar[dict[str, Any]] = {
        "sql": {"type": "string", "description": "(sql) The statement's text; * and ? are wildcards, e.g. "
                                                 "'*FROM items*'."},
        "params": {"type": "object", "description": "(sql) Bound parameters the statement must get, with these "
                                                    "values (batch: some row has them)."},
    }
    MOCK_ANSWER: ClassVar[dict[str, Any]] = {
        "rows": {"type": "array", "items": {"type": "object"},
                 "description": "(sql) The rows the statement returns, as objects (column: value): shaped as real "
                                "rows are (a query's expect and as apply: expect: one with no rows is a 404), or "
                                "an execute's RETURNING rows."},
        "row_count": {"type": "integer", "description": "(sql) Rows changed (default: as many as rows, else 1)."},
        "key": {"description": "(sql) The generated key an execute reports."},
    }

    def __init__(self, name: str, config: dict[str, Any], context: EndpointContext | None = None) -> None:
        super().__init__(name, config, context)
        if ("url" in config) == ("urls" in config):
            raise ValueError("give url (one database) or urls (several copies of it), not both or neither")
        self.databases = [_Database(self._url(str(url)))
                          for url in ([config["url"]] if "url" in config else config["urls"])]
        self.url = self.databases[0].url
        self.dialect = self.url.get_backend_name()
        if any(db.url.get_backend_name() != self.dialect for db in self.databases):
            raise ValueError("urls: every database of one endpoint must be of the same kind (sqlite or postgresql)")
        self.targets = tuple(db.url.render_as_string(hide_password=True) for db in self.databases)
        pool = config.get("pool") or {}
        self.pool_size = int(pool.get("max_connections", DEFAULT_POOL))
        self.acquire_timeout = setting_duration(pool, "acquire_timeout", "5s", "pool") or 5.0
        timeout = config.get("timeout") or {}
        self.connect_timeout = setting_duration(timeout, "connect", "5s", "timeout") or 5.0
        self.statement_timeout = setting_duration(timeout, "statement", "30s", "timeout") or 30.0
        isolation = config.get("isolation")
        self.isolation = ISOLATION_LEVELS[isolation] if isolation else None
        self.init = [str(s) for s in config.get("init") or ()]
        for index, statement in enumerate(self.init):
            if "${" in statement:
                raise ValueError(f"init[{index}]: ${{...}} cannot be pasted into SQL; init statements take no "
                                 "parameters (write the values, or insert them from a flow with params)")
        for db in self.databases:
            db.initialised = not self.init

    def _url(self, given: str) -> URL:
        try:
            url = make_url(given)
        except Exception:
            raise ValueError("url: not a database URL (e.g. sqlite:///inventory.db or "
                             "postgresql://user@host:5432/name)") from None
        backend, _, driver = url.drivername.partition("+")
        if backend not in DRIVERS:
            raise ValueError(f"url: {backend!r} databases are not supported; use sqlite or postgresql")
        if not driver:
            url = url.set(drivername=DRIVERS[backend])
        if url.get_backend_name() == "sqlite":
            database = url.database or ":memory:"
            if database != ":memory:" and not Path(database).is_absolute():
                url = url.set(database=str((self.context.folder / database).resolve()))
        return url

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        for db in self.databases:
            if db.engine is None:
                db.engine = self._create_engine(db.url)
            if not db.initialised:
                try:
                    await self._initialise(db)
                except BackendError as exc:  # the engine serves anyway; readiness says why
                    log.warning("endpoint %r: could not prepare the database yet: %s (%s)", self.name, exc.detail,
                                exc.internal)

    def _create_engine(self, url: URL) -> AsyncEngine:
        options: dict[str, Any] = {"pool_timeout": self.acquire_timeout}
        connect_args: dict[str, Any] = {}
        if self.dialect == "sqlite":
            if url.database in (None, "", ":memory:"):
                options = {"poolclass": StaticPool}  # one shared in-memory database, not one per connection
            else:
                options.update(pool_size=self.pool_size, max_overflow=0)
            connect_args["timeout"] = self.connect_timeout  # sqlite3: how long to wait for a lock
        else:
            # a statement outside a transaction step runs on its own: no BEGIN/COMMIT round trips;
            # a transaction step sets its isolation level on the connection it takes
            options.update(pool_size=self.pool_size, max_overflow=0, isolation_level="AUTOCOMMIT")
            if url.drivername == "postgresql+asyncpg":
                connect_args.update(timeout=self.connect_timeout, command_timeout=self.statement_timeout + 5,
                                    server_settings={"statement_timeout": str(int(self.statement_timeout * 1000))})
            elif url.drivername == "postgresql+psycopg":
                connect_args.update(connect_timeout=max(1, int(self.connect_timeout)),
                                    options=f"-c statement_timeout={int(self.statement_timeout * 1000)}")
        engine = create_async_engine(url, connect_args=connect_args, **options)
        if self.dialect == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine

    async def close(self) -> None:
        for db in self.databases:
            engine, db.engine = db.engine, None
            if engine is not None:
                await engine.dispose()

    async def _initialise(self, db: _Database) -> None:
        async with db.lock:
            if db.initialised:
                return
            engine = self._engine(db)
            try:
                async with engine.begin() as conn:
                    for statement in self.init:
                        await conn.exec_driver_sql(statement)
            except Exception as exc:
                raise map_database_error(exc, self.name) from exc
            db.initialised = True
            log.info("endpoint %r: database prepared (%d init statements)%s", self.name, len(self.init),
                     f" on {db.url.render_as_string(hide_password=True)}" if len(self.databases) > 1 else "")

    @property
    def engine(self) -> AsyncEngine | None:
        """The first database's engine (None until opened).  Code keeping its own tables on the
        endpoint's databases goes through the endpoint instead (engine/sqlstore.py), which
        fails over like the flows' calls."""
        return self.databases[0].engine

    def prepare_table(self, statement: str) -> None:
        """Run ``statement`` (a CREATE TABLE IF NOT EXISTS) on each database before its first use,
        after the endpoint's own ``init``: the table of the engine's records (engine/sqlstore.py)
        is then on whichever copy the calls fail over to."""
        if statement not in self.init:
            self.init.append(statement)
            for db in self.databases:
                db.initialised = False

    def _engine(self, db: _Database) -> AsyncEngine:
        if db.engine is None:
            db.engine = self._create_engine(db.url)
        return db.engine

    async def check(self) -> None:
        """Ready while one of its databases answers (with several, the others are the fallback)."""
        failure: BackendError | None = None
        for db in self.databases:
            try:
                if not db.initialised:
                    await self._initialise(db)
                async with asyncio.timeout(self.connect_timeout), self._engine(db).connect() as conn:
                    await conn.exec_driver_sql("SELECT 1")
                return
            except BackendError as exc:
                failure = failure or exc
            except Exception as exc:
                failure = failure or map_database_error(exc, self.name)
        if failure is not None:
            raise failure

    def needs_server(self) -> bool:
        return self.dialect != "sqlite"

    def health(self) -> dict[str, Any]:
        pools = [db.engine.pool.status() if db.engine is not None else "not open" for db in self.databases]
        return {"database": self.dialect, "driver": self.url.drivername,
                "prepared": all(db.initialised for db in self.databases),
                "pool": pools[0] if len(pools) == 1 else pools}

    # --- transactions ------------------------------------------------------------------------

    async def begin(self, options: TransactionOptions, target: int = 0) -> Transaction:
        db = self.databases[target]
        if not db.initialised:
            await self._initialise(db)
        engine = self._engine(db)
        isolation = ISOLATION_LEVELS.get(options.isolation or "", None) if options.isolation else self.isolation
        try:
            connection = await engine.connect()
            try:
                if self.dialect != "sqlite":  # its connections are in autocommit outside transactions
                    await connection.execution_options(isolation_level=isolation or "READ COMMITTED")
                transaction = await connection.begin()
                reset = None
                if options.read_only:
                    if self.dialect == "sqlite":
                        await connection.exec_driver_sql("PRAGMA query_only = ON")
                        reset = "PRAGMA query_only = OFF"
                    else:
                        await connection.exec_driver_sql("SET TRANSACTION READ ONLY")
                return SqlTransaction(connection, transaction, reset)
            except BaseException:
                await connection.close()
                raise
        except Exception as exc:
            raise map_database_error(exc, self.name) from exc

    # --- operations --------------------------------------------------------------------------

    def prepare(self, operation: str, config: dict[str, Any], ctx: CompileContext, invoke: Invoke) -> Invocation:
        from engine.compiler import StepConfigError

        sql = str(config["sql"])
        hole = sql.find("${")
        if hole >= 0:
            raise StepConfigError("${...} cannot be pasted into SQL text (that is how SQL injection happens): "
                                  "write :name in the statement and bind it, e.g. sql: ... WHERE sku = :sku with "
                                  "params: {sku: \"${path.sku}\"}", "sql", hole)
        names = bind_names(sql)
        params: dict[str, Template] = {str(k): ctx.template(v, ("params", k))
                                       for k, v in (config.get("params") or {}).items()}
        types: dict[str, str] = {str(k): str(v) for k, v in (config.get("types") or {}).items()}
        for name in params:
            if name not in names:
                raise StepConfigError(f"params.{name}: the statement has no :{name} (it binds: "
                                      f"{', '.join(names) or 'nothing'})", ("params", name))
        for name in types:
            if name not in names:
                raise StepConfigError(f"types.{name}: the statement has no :{name}", ("types", name))
        rows_expression: Template | None = None
        if operation == "batch":
            rows_expression = ctx.template(config["rows"], "rows")
        else:
            missing = [n for n in names if n not in params]
            if missing:
                raise StepConfigError(f"the statement binds :{missing[0]} but params gives no {missing[0]!r}; add "
                                      f"params: {{{missing[0]}: \"${{...}}\"}}", "params" if params else "sql")
        statement = text(sql)
        writes = not sql.lstrip().lower().startswith(READING_STATEMENTS)
        shape = self.shaper(operation, config, sql)
        endpoint = self.name
        not_found = ctx.template(config["not_found"], "not_found") if "not_found" in config else None

        def values(msg: Message) -> dict[str, Any]:
            bound = {name: template.render(msg) for name, template in params.items()}
            for name, kind in types.items():
                if name in bound:
                    bound[name] = _convert(name, bound[name], kind)
            return bound

        async def run(msg: Message) -> Reply:
            transactions = msg.attributes.get(TRANSACTIONS_KEY)
            transaction = transactions.get(endpoint) if transactions else None
            if rows_expression is None:
                request = SqlRequest(operation, statement, values(msg), shape, transaction, writes=writes)
                if not_found is not None:
                    request.not_found = str(not_found.render(msg))
                return await invoke(request)
            rows = rows_expression.render(msg)
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise FlowError(f"batch rows: expected a list of objects, got {type(rows).__name__}",
                                status=422, code="invalid-parameter")
            common = values(msg)
            batch = []
            for row in rows:
                item = {name: row.get(name) for name in names if name not in common}
                for name, kind in types.items():
                    if name in item:
                        item[name] = _convert(name, item[name], kind)
                batch.append({**item, **common})
            if not batch:
                return Reply(payload={"row_count": 0}, content_type="application/json")
            return await invoke(SqlRequest(operation, statement, batch, shape, transaction))

        return run

    def shaper(self, operation: str, config: dict[str, Any], sql: str) -> Shape:
        """How a result becomes the Reply of ``operation`` with these step keys (see OPERATIONS)."""
        if operation == "query":
            expect = config.get("expect", "many")
            as_xml = config.get("as") == "xml"
            root, row_name = str(config.get("root", "rows")), str(config.get("row", "row"))
            content_type = "application/xml" if as_xml else "application/json"

            def rows(result: CursorResult[Any], dialect: str, request: SqlRequest) -> Reply:
                if not result.returns_rows:
                    raise BackendRejected(f"endpoint {self.name!r}: the query returned no rows to read (use "
                                          "operation: execute for statements that change data)")
                columns = list(result.keys())
                found = result.fetchall() if expect == "many" else result.fetchmany(1)
                if expect != "many" and not found:
                    if expect == "one":
                        raise NotFound(request.not_found)
                    return Reply(payload=None, content_type="application/json")
                if as_xml:
                    return Reply(payload=xml_rows(columns, found, root, row_name), content_type=content_type,
                                 meta={"row_count": len(found)})
                shaped = json_rows(columns, found)
                return Reply(payload=shaped if expect == "many" else shaped[0], content_type=content_type,
                             meta={"row_count": len(found)})

            return rows
        is_insert = sql.lstrip().lower().startswith("insert")

        def changed(result: CursorResult[Any], dialect: str, request: SqlRequest) -> Reply:
            answer: dict[str, Any] = {"row_count": result.rowcount if result.rowcount is not None else -1}
            if result.returns_rows:
                returned = json_rows(list(result.keys()), result.fetchall())
                answer["rows"] = returned
                answer["key"] = next(iter(returned[0].values())) if returned and returned[0] else None
            elif operation == "execute" and is_insert and dialect == "sqlite":
                answer["key"] = result.lastrowid
            return Reply(payload=answer, content_type="application/json", meta={"row_count": answer["row_count"]})

        return changed

    def mock_reply(self, request: Request, answer: Mapping[str, Any], body: bytes | None,
                   content_type: str | None) -> Reply:
        """A flow-test mock's rows or row count, shaped like a real result of the step."""
        assert isinstance(request, SqlRequest)
        if "payload" in answer or body is not None:
            return super().mock_reply(request, answer, body, content_type)
        rows = answer.get("rows")
        result = _MockResult(rows, answer.get("row_count"), request.operation == "query")
        reply = request.shape(cast("CursorResult[Any]", result), self.dialect, request)
        if "key" in answer and isinstance(reply.payload, dict):
            reply.payload["key"] = answer["key"]
        return reply

    async def attempt(self, request: Request, target: int) -> Reply:
        assert isinstance(request, SqlRequest)
        db = self.databases[target]
        if not db.initialised:
            await self._initialise(db)
        try:
            if request.transaction is not None:
                assert isinstance(request.transaction, SqlTransaction)
                result = await self._run(request.transaction.connection, request)
                return request.shape(result, self.dialect, request)
            engine = db.engine or self._engine(db)
            # PostgreSQL's connections autocommit; SQLite's (pysqlite) begin before a change, so
            # a change is committed, while a read needs no transaction
            reads_only = request.single and (self.dialect != "sqlite" or not request.writes)
            connection = engine.connect() if reads_only else engine.begin()
            async with connection as conn:
                result = await self._run(conn, request)
                return request.shape(result, self.dialect, request)
        except FlowError:
            raise
        except Exception as exc:
            raise map_database_error(exc, self.name) from exc

    async def _run(self, conn: AsyncConnection, request: SqlRequest) -> CursorResult[Any]:
        if self.dialect != "sqlite":  # PostgreSQL cancels on the server (statement_timeout)
            return await conn.execute(request.statement, request.params)
        # SQLite has no server to stop an over-long statement (as PostgreSQL's statement_timeout
        # does), and cancelling the await does not stop it either: the driver's thread runs it to
        # the end, and the rollback that follows waits for it, holding the pooled connection (and
        # a write lock).  sqlite3's interrupt(), the one call made for another thread, stops it.
        database = _sqlite_connection(conn)
        if database is None:  # not the driver we know: bound from here at least
            async with asyncio.timeout(self.statement_timeout):
                return await conn.execute(request.statement, request.params)
        stopped = False

        def interrupt() -> None:
            nonlocal stopped
            stopped = True
            database.interrupt()

        timer = asyncio.get_running_loop().call_later(self.statement_timeout, interrupt)
        try:
            return await conn.execute(request.statement, request.params)
        except Exception as exc:
            if stopped:  # "interrupted": it ran out of time
                raise TimeoutError(f"interrupted after {self.statement_timeout:g} s") from exc
            raise
        finally:
            timer.cancel()


class _Database:
    """One database of an endpoint (a target): its URL, its engine (made on first use), whether
    its init statements ran."""

    __slots__ = ("engine", "initialised", "lock", "url")

    def __init__(self, url: URL) -> None:
        self.url = url
        self.engine: AsyncEngine | None = None
        self.initialised = False
        self.lock = asyncio.Lock()


class _MockResult:
    """Rows a flow-test mock gives, as much of a CursorResult as the shapers read."""

    def __init__(self, rows: list[dict[str, Any]] | None, row_count: int | None, query: bool) -> None:
        given = rows or []
        self.returns_rows = rows is not None or query
        self._columns = list(dict.fromkeys(column for row in given for column in row))
        self._rows = [tuple(row.get(column) for column in self._columns) for row in given]
        self.rowcount = row_count if row_count is not None else (len(given) if rows is not None else 1)
        self.lastrowid = None

    def keys(self) -> list[str]:
        return self._columns

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        return self._rows[:size]


def _sqlite_connection(conn: AsyncConnection) -> Any:
    """The sqlite3 connection under ``conn`` (aiosqlite's, in its thread), or None."""
    try:
        fairy = conn.sync_connection.connection if conn.sync_connection is not None else None
        driver = fairy.driver_connection if fairy is not None else None  # aiosqlite's Connection
    except Exception:
        return None
    database = getattr(driver, "_connection", None)
    return database if callable(getattr(database, "interrupt", None)) else None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers go on while one connection writes; foreign keys are off by default in SQLite
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()
