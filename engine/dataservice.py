"""Data services: a database table declared as a REST resource, in YAML.

    resources:
      items:
        endpoint: inventory-db          # a sql endpoint
        table: items
        path: /inventory/items
        key: sku
        columns:
          sku:   {type: string, max_length: 64}
          name:  {type: string, required: true, filter: true, sort: true}
          qty:   {type: integer, required: true, minimum: 0, filter: true, sort: true}
          price: {type: number, nullable: true, sort: true}
        page: {limit: 20, max_limit: 100}   # or {mode: keyset}

becomes these routes, each an ordinary flow (so OpenAPI, metrics and tests see them):

==========================  ==========================================================  =======
GET    /inventory/items     list: ?limit=&offset= (or ?after= with keyset paging),     200
                            ?COLUMN= for filter columns, ?sort=name,-qty
POST   /inventory/items     insert the body; the row, Location header                   201
GET    /inventory/items/ID  the row                                                     200
PUT    /inventory/items/ID  replace every column but the key                           200
PATCH  /inventory/items/ID  change the columns given                                    200
DELETE /inventory/items/ID  remove it                                                   204
==========================  ==========================================================  =======

404 when the key has no row, 409 when a write breaks a constraint (a duplicate key), 422 for a
body or query value of the wrong type, all as problem+json.  Statements are SQLAlchemy Core
built from the declared names (never from the request), with every value bound.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from engine.errors import PATH_PARAMETER_PATTERN, FlowError, NotFound
from engine.model import Flow, HttpSource, Location

if TYPE_CHECKING:
    from engine.compiler import CompileContext
    from engine.message import Message
    from engine.registry import StepFn

ACTIONS: Final = ("list", "get", "create", "replace", "update", "delete")
COLUMN_TYPES: Final = {"string": {"type": "string"}, "integer": {"type": "integer"}, "number": {"type": "number"},
                       "boolean": {"type": "boolean"}}
IDENTIFIER: Final = "^[A-Za-z_][A-Za-z0-9_]*$"

RESOURCE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object", "additionalProperties": False, "required": ["endpoint", "table", "path", "key", "columns"],
    "description": "A table served as a REST resource: list (paged, filtered, sorted), get, create, replace, "
                   "update (partial) and delete routes, with 404, 409 and 422 as problem+json.",
    "properties": {
        "description": {"type": "string", "description": "What the resource holds, for the OpenAPI export."},
        "endpoint": {"type": "string", "description": "The sql endpoint holding the table."},
        "table": {"type": "string", "pattern": IDENTIFIER, "description": "The table's name."},
        "path": {"type": "string", "pattern": "^/[^{}]*[^/{}]$",
                 "description": "The collection's path, e.g. /inventory/items; one row is at PATH/{key}."},
        "key": {"type": "string", "pattern": IDENTIFIER, "description": "The primary key column (one of columns)."},
        "columns": {
            "type": "object", "minProperties": 1, "propertyNames": {"pattern": IDENTIFIER},
            "description": "The columns served, by name, each with its JSON type and what the routes may do "
                           "with it.",
            "additionalProperties": {
                "type": "object", "additionalProperties": False, "required": ["type"],
                "properties": {
                    "type": {"enum": list(COLUMN_TYPES), "description": "The column's JSON type."},
                    "required": {"type": "boolean",
                                 "description": "A create or replace must give it (default: false; the key is "
                                                "always required on create)."},
                    "nullable": {"type": "boolean", "description": "null is a valid value (default false)."},
                    "filter": {"type": "boolean", "description": "The list route takes ?COLUMN=value (equality)."},
                    "sort": {"type": "boolean", "description": "The list route may sort by it (?sort=COLUMN or "
                                                               "?sort=-COLUMN for descending)."},
                    "max_length": {"type": "integer", "minimum": 1, "description": "Strings: longest value."},
                    "minimum": {"type": "number", "description": "Numbers: smallest value."},
                    "maximum": {"type": "number", "description": "Numbers: largest value."},
                    "description": {"type": "string", "description": "What the column holds (OpenAPI)."},
                },
            },
        },
        "page": {
            "type": "object", "additionalProperties": False,
            "description": "Paging of the list route: mode offset (default: ?limit=&offset=) or keyset "
                           "(?limit=&after=KEY, rows after that key in key order: stable under inserts); limit "
                           "(default 20) and max_limit (default 100).",
            "properties": {
                "mode": {"enum": ["offset", "keyset"], "description": "offset (default) or keyset paging."},
                "limit": {"type": "integer", "minimum": 1, "description": "Rows per page by default (20)."},
                "max_limit": {"type": "integer", "minimum": 1, "description": "Largest ?limit= accepted (100)."},
            },
        },
        "actions": {"type": "array", "items": {"enum": list(ACTIONS)}, "uniqueItems": True, "minItems": 1,
                    "description": "The routes served (default all): list, get, create, replace, update, delete."},
    },
}


@dataclass
class Column:
    name: str
    type: str
    required: bool = False
    nullable: bool = False
    filter: bool = False
    sort: bool = False
    schema: dict[str, Any] = field(default_factory=dict)


@dataclass
class Resource:
    name: str
    endpoint: str
    table: str
    path: str
    key: str
    columns: dict[str, Column]
    page_mode: str
    limit: int
    max_limit: int
    actions: tuple[str, ...]
    description: str | None
    location: Location


def _column(name: str, spec: dict[str, Any]) -> Column:
    schema: dict[str, Any] = dict(COLUMN_TYPES[spec["type"]])
    if spec.get("nullable"):
        schema["type"] = [schema["type"], "null"]
    if "max_length" in spec:
        schema["maxLength"] = spec["max_length"]
    for bound in ("minimum", "maximum"):
        if bound in spec:
            schema[bound] = spec[bound]
    if spec.get("description"):
        schema["description"] = spec["description"]
    return Column(name, spec["type"], bool(spec.get("required")), bool(spec.get("nullable")),
                  bool(spec.get("filter")), bool(spec.get("sort")), schema)


def read_resource(name: str, spec: dict[str, Any], location: Location) -> Resource:
    """A validated resource declaration; ValueError (with the key at fault) for what the schema cannot say."""
    columns = {str(k): _column(str(k), v) for k, v in spec["columns"].items()}
    key = str(spec["key"])
    if key not in columns:
        hint = difflib.get_close_matches(key, list(columns), n=1)
        raise ValueError(f"key {key!r} is not one of the columns ({', '.join(columns)})"
                         + (f"; did you mean {hint[0]!r}?" if hint else ""))
    if columns[key].type == "string":  # the key is a path segment too (GET /items/{key}, Location)
        columns[key].schema["pattern"] = PATH_PARAMETER_PATTERN
    page = spec.get("page") or {}
    limit, max_limit = int(page.get("limit", 20)), int(page.get("max_limit", 100))
    if limit > max_limit:
        raise ValueError(f"page.limit {limit} is over page.max_limit {max_limit}")
    return Resource(name, str(spec["endpoint"]), str(spec["table"]), str(spec["path"]), key, columns,
                    str(page.get("mode", "offset")), limit, max_limit, tuple(spec.get("actions") or ACTIONS),
                    spec.get("description"), location)


# --- the routes, as flows ------------------------------------------------------------------------

MAX_OFFSET = 2**63 - 1  # a database's 64-bit integer: past it SQLite fails the query (a 502)


def sort_pattern(sortable: list[str]) -> str:
    """What ``?sort=`` accepts, as a regular expression (the same in Python and in the OpenAPI
    document's ECMA dialect): sortable names, each maybe ``-``, separated by commas, or nothing."""
    name = f" *-?(?:{'|'.join(re.escape(n) for n in sorted(sortable))}) *"
    return f"(?:{name}(?:,{name})*)?"


def _row_schema(resource: Resource, *, required: list[str] | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False,
                              "properties": {c.name: c.schema for c in resource.columns.values()}}
    if required:
        schema["required"] = required
    return schema


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content_type": "application/problem+json"}


def route_flows(resource: Resource, file: Any, node: Any) -> list[Flow]:
    """One flow per route of the resource, their steps built by ``build_action``."""
    from engine.loader import _PARAM  # the loader's own path-template reader

    row = _row_schema(resource, required=None)
    key_param = resource.key
    item_path = f"{resource.path}/{{{key_param}}}"
    required_create = list(dict.fromkeys([resource.key, *(c.name for c in resource.columns.values() if c.required)]))
    required_replace = [c.name for c in resource.columns.values() if c.required and c.name != resource.key]
    query: dict[str, dict[str, Any]] = {
        "limit": {"description": f"Rows per page (default {resource.limit}, at most {resource.max_limit}).",
                  "schema": {"type": "integer", "minimum": 1, "maximum": resource.max_limit}},
    }
    if resource.page_mode == "keyset":
        query["after"] = {"description": f"Only rows whose {resource.key} comes after this one (the previous "
                                         "page's next_after).", "schema": resource.columns[resource.key].schema}
    else:
        query["offset"] = {"description": "Rows to skip (default 0).",
                           "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}}
        sortable = [c.name for c in resource.columns.values() if c.sort]
        if sortable:
            query["sort"] = {"description": f"Sort by {', '.join(sortable)}; -name for descending; several "
                                            "separated by commas.",
                             "schema": {"type": "string", "pattern": f"^{sort_pattern(sortable)}$"}}
    for column in resource.columns.values():
        if column.filter:
            query[column.name] = {"description": f"Only rows whose {column.name} equals this.",
                                  "schema": COLUMN_TYPES[column.type]}
    page: dict[str, Any] = {"type": "object", "properties": {
        "items": {"type": "array", "items": row}, "limit": {"type": "integer"},
        **({"next_after": {}} if resource.page_mode == "keyset" else {"offset": {"type": "integer"}})}}
    routes: dict[str, tuple[str, str, dict[str, Any], dict[str, Any] | None, dict[str, dict[str, Any]] | None]] = {
        "list": ("GET", resource.path, {"200": {"description": "A page of rows.", "content_type": "application/json",
                                                "schema": page},
                                        "422": _problem("A query parameter of the wrong type or not declared.")},
                 None, query),
        "create": ("POST", resource.path, {"201": {"description": "The row, as stored.",
                                                   "content_type": "application/json", "schema": row},
                                           "409": _problem("A row with this key exists, or a constraint refused it."),
                                           "422": _problem("The body does not match the columns.")},
                   {"content_type": "application/json", "schema": _row_schema(resource, required=required_create)},
                   None),
        "get": ("GET", item_path, {"200": {"description": "The row.", "content_type": "application/json",
                                           "schema": row}, "404": _problem("No row has this key.")}, None, None),
        "replace": ("PUT", item_path, {"200": {"description": "The row, replaced.", "content_type": "application/json",
                                               "schema": row}, "404": _problem("No row has this key."),
                                       "409": _problem("A constraint refused the change."),
                                       "422": _problem("The body does not match the columns.")},
                    {"content_type": "application/json",
                     "schema": _row_schema(resource, required=required_replace or None)}, None),
        "update": ("PATCH", item_path, {"200": {"description": "The row, changed.",
                                                "content_type": "application/json", "schema": row},
                                        "404": _problem("No row has this key."),
                                        "409": _problem("A constraint refused the change."),
                                        "422": _problem("The body does not match the columns.")},
                   {"content_type": "application/json", "schema": {**row, "minProperties": 1}}, None),
        "delete": ("DELETE", item_path, {"204": {"description": "Deleted."}, "404": _problem("No row has this key.")},
                   None, None),
    }
    flows = []
    for action in resource.actions:
        method, path, responses, request, query_spec = routes[action]
        source = HttpSource([method], path, _PARAM.findall(path), request, responses, query_spec)
        description = f"{action} {resource.name}" + (f": {resource.description}" if resource.description else "")
        flow = Flow(f"{resource.name}.{action}", description, source, None, None, {}, file, resource.location, node)
        flow.builder = _builder(resource, action)
        flows.append(flow)
    return flows


def _builder(resource: Resource, action: str) -> Callable[[CompileContext], StepFn]:
    def build(ctx: CompileContext) -> StepFn:
        from engine.dataservice_actions import compile_action

        return compile_action(resource, action, ctx)

    return build


def convert_value(column: Column, value: str, what: str) -> Any:
    """A path or query value (text) as the column's type; 422 when it is not one."""
    try:
        if column.type == "integer":
            return int(value)
        if column.type == "number":
            return float(value)
        if column.type == "boolean":
            lowered = value.lower()
            if lowered in ("true", "false"):
                return lowered == "true"
            raise ValueError
        return value
    except ValueError:
        raise FlowError(f"{what}: {value!r} is not {'an' if column.type == 'integer' else 'a'} {column.type}",
                        status=422, code="invalid-parameter") from None


def key_of(resource: Resource, msg: Message) -> Any:
    value = msg.path_params.get(resource.key, "")
    try:
        return convert_value(resource.columns[resource.key], value, resource.key)
    except FlowError:
        raise NotFound(f"no {resource.name} {value!r}") from None
