"""What each route of a data service runs (see engine.dataservice): statements built once per
shape of request from the declared names, every value bound, sent through the sql endpoint."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, column, delete, insert, select, table, update
from sqlalchemy.sql import Executable

from connectors.sql import SqlConnector, SqlRequest
from engine.compiler import CompileContext, StepConfigError
from engine.dataservice import MAX_OFFSET, Resource, convert_value, key_of, sort_pattern
from engine.errors import Conflict, FlowError, NotFound
from engine.message import JSON, Message
from engine.urls import quote_segment

if TYPE_CHECKING:
    from engine.registry import StepFn

_RESERVED = frozenset({"limit", "offset", "after", "sort"})


def _invalid(detail: str) -> FlowError:
    return FlowError(detail, status=422, code="invalid-parameter")


def compile_action(resource: Resource, action: str, ctx: CompileContext) -> StepFn:
    endpoint = ctx.endpoint(resource.endpoint, "endpoint")
    connector = getattr(endpoint, "connector", None)
    if not isinstance(connector, SqlConnector):
        if not hasattr(endpoint, "invoke"):
            async def broken(msg: Message) -> None:
                raise FlowError(f"endpoint {resource.endpoint!r} did not load")
            return broken
        raise StepConfigError(f"endpoint {resource.endpoint!r} is not a sql endpoint", "endpoint")
    invoke = endpoint.invoke
    names = list(resource.columns)
    rows_table = table(resource.table, *(column(n) for n in names))
    key_column = rows_table.c[resource.key]
    selected = [rows_table.c[n] for n in names]
    many = connector.shaper("query", {"expect": "many"}, "")
    optional = connector.shaper("query", {"expect": "optional"}, "")
    one = connector.shaper("query", {"expect": "one"}, "")
    label = resource.name

    async def run_query(statement: Executable, params: dict[str, Any], shape: Any,
                        not_found: str = "no row matches", *, writes: bool = False) -> Any:
        reply = await invoke(SqlRequest("query", statement, params, shape, None, not_found, writes=writes))
        return reply.payload

    def answer(msg: Message, value: Any, status: int = 200) -> None:
        msg.status = status
        msg.set_payload(value, JSON, "application/json")

    if action == "get":
        by_key = select(*selected).where(key_column == bindparam("key"))

        async def get(msg: Message) -> None:
            key = key_of(resource, msg)
            answer(msg, await run_query(by_key, {"key": key}, one, f"no {label} {key!r}"))

        return get

    if action == "delete":
        removing = delete(rows_table).where(key_column == bindparam("key")).returning(key_column)

        async def remove(msg: Message) -> None:
            key = key_of(resource, msg)
            if await run_query(removing, {"key": key}, optional, writes=True) is None:
                raise NotFound(f"no {label} {key!r}")
            msg.status = 204
            msg.set_body(b"", None)

        return remove

    if action == "list":
        return _compile_list(resource, rows_table, selected, many, run_query, answer)

    statements: dict[tuple[str, ...], Executable] = {}  # one per set of columns a body gives

    def written(columns: tuple[str, ...]) -> Executable:
        statement = statements.get(columns)
        if statement is None:
            values: dict[str, Any] = {n: bindparam(f"v_{n}") for n in columns}
            if action == "create":
                statement = insert(rows_table).values(values).returning(*selected)
            else:
                statement = (update(rows_table).where(key_column == bindparam("key")).values(values)
                             .returning(*selected))
            statements[columns] = statement
        return statement

    non_key = [n for n in names if n != resource.key]
    ctx.needs_body()

    async def write(msg: Message) -> None:
        body = msg.payload
        if not isinstance(body, dict):
            raise _invalid("the body must be a JSON object of the columns")
        if action == "create":
            columns = tuple(n for n in names if n in body)
            row = await run_query(written(columns), {f"v_{n}": body[n] for n in columns}, optional, writes=True)
            msg.set_header("location", f"{resource.path}/{quote_segment(str(row[resource.key]))}")
            answer(msg, row, 201)
            return
        key = key_of(resource, msg)
        if resource.key in body and body[resource.key] != key:
            # RFC 9110, 9.3.4: a representation inconsistent with the target resource is a 409
            raise Conflict(f"the body's {resource.key} {body[resource.key]!r} is not the one in the path {key!r}; "
                           "a key cannot be changed")
        columns = tuple(non_key) if action == "replace" else tuple(n for n in non_key if n in body)
        if not columns:
            raise _invalid(f"nothing to change: give one of {', '.join(non_key)}")
        params = {"key": key, **{f"v_{n}": body.get(n) for n in columns}}
        row = await run_query(written(columns), params, optional, writes=True)
        if row is None:
            raise NotFound(f"no {label} {key!r}")
        answer(msg, row)

    return write


def _compile_list(resource: Resource, rows_table: Any, selected: list[Any], many: Any, run_query: Any,
                  answer: Any) -> StepFn:
    key_column = rows_table.c[resource.key]
    filters = {c.name: c for c in resource.columns.values() if c.filter}
    sortable = {c.name for c in resource.columns.values() if c.sort}
    keyset = resource.page_mode == "keyset"
    allowed = sorted({"limit", *(["after"] if keyset else ["offset", *(["sort"] if sortable else [])]), *filters})
    statements: dict[tuple[Any, ...], Any] = {}  # one per shape of request: filters given, sort order
    sort_syntax = re.compile(sort_pattern(sorted(sortable))) if sortable else None  # what the OpenAPI says

    def statement(filtered: tuple[str, ...], order: tuple[tuple[str, bool], ...], after: bool) -> Any:
        shape = (filtered, order, after)
        found = statements.get(shape)
        if found is None:
            conditions = [rows_table.c[name] == bindparam(f"f_{name}") for name in filtered]
            if after:
                conditions.append(key_column > bindparam("after"))
            found = select(*selected)
            if conditions:
                found = found.where(and_(*conditions))
            ordering = [rows_table.c[name].desc() if descending else rows_table.c[name] for name, descending in order]
            if resource.key not in {name for name, _ in order}:
                ordering.append(key_column)  # a stable order, so that pages neither repeat nor skip rows
            found = found.order_by(*ordering).limit(bindparam("limit"))
            if not keyset:
                found = found.offset(bindparam("offset"))
            statements[shape] = found
        return found

    def number(msg: Message, name: str, default: int, low: int, high: int | None) -> int:
        text = msg.query.get(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise _invalid(f"{name}: {text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise _invalid(f"{name}: {value} is out of range ({low} to {high if high is not None else 'any'})")
        return value

    async def list_rows(msg: Message) -> None:
        unknown = [name for name in msg.query if name not in allowed]
        if unknown:
            raise _invalid(f"unknown query parameter {unknown[0]!r}; this list takes: {', '.join(allowed)}")
        limit = number(msg, "limit", resource.limit, 1, resource.max_limit)
        params: dict[str, Any] = {"limit": limit}
        filtered = tuple(name for name in filters if name in msg.query)
        for name in filtered:
            params[f"f_{name}"] = convert_value(filters[name], msg.query[name], name)
        order: tuple[tuple[str, bool], ...] = ()
        after = False
        if keyset:
            if "after" in msg.query:
                after = True
                params["after"] = convert_value(resource.columns[resource.key], msg.query["after"], "after")
        else:
            params["offset"] = number(msg, "offset", 0, 0, MAX_OFFSET)
            wanted = msg.query.get("sort")
            if wanted:
                if sort_syntax is None or not sort_syntax.fullmatch(wanted):
                    bad = next((i.strip() for i in wanted.split(",") if i.strip().lstrip("-") not in sortable), wanted)
                    raise _invalid(f"sort: {bad!r} is not a sortable column ({', '.join(sorted(sortable))}); "
                                   "write NAME or -NAME, several separated by commas")
                order = tuple((item.strip().lstrip("-"), item.strip().startswith("-")) for item in wanted.split(","))
        rows = await run_query(statement(filtered, order, after), params, many)
        page: dict[str, Any] = {"items": rows, "limit": limit}
        if keyset:
            page["next_after"] = rows[-1][resource.key] if len(rows) == limit else None
        else:
            page["offset"] = params["offset"]
        answer(msg, page)

    return list_rows
