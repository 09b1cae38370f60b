"""The foreach step (split and aggregate; WSO2's iterate/foreach with aggregate, Camel's split):
run steps once per item, one after the other or with bounded concurrency, and gather results.

Items come from an expression over the payload (``items``: JMESPath, or ``xpath('...')`` for an
XML node set) or, for bodies too large to hold, straight from the request body as it streams
(``stream: {json: $.orders[*]}`` or ``stream: {xml: order}``).  Each item is the payload of its
own message; ``${vars.index}`` is its position.  Results are gathered in item order.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from lxml import etree

from engine.compiler import CompileContext, StepConfigError, Steps, internal_error
from engine.convert import json_to_xml, xml_name
from engine.errors import ExpressionError, FlowError
from engine.expression_blame import Blame
from engine.expressions import Expr, ExpressionSyntaxError, find_expressions
from engine.message import JSON, XML, Message
from engine.registry import STEPS_REF, StepFn, step_kind
from engine.steps._fork import duration_field, fork, result_of, seconds
from engine.steps._items import ijson_prefix, json_items, xml_items
from engine.steps._shapers import HEADERS, STATUS, VARS, Shaper, shapers_of, step_ids
from engine.steps.basic import compile_jsonpath, json_payload

AGGREGATES = ("array", "xml", "none")


@dataclass(frozen=True)
class _Plan:
    steps: Steps
    concurrency: int
    on_error: str
    index_var: str
    count: int | None
    timeout: float | None
    keep_results: bool  # False with aggregate: none, so a long split holds no item


@step_kind(
    "foreach",
    summary="Split the payload (or the streaming body) into items, run steps per item, aggregate the results.",
    category="route",
    schema={
        "type": "object", "additionalProperties": False, "required": ["steps"],
        "properties": {
            "items": {"type": "string",
                      "description": "Where the items are: ${...} over the payload giving a list (JMESPath, e.g. "
                                     "${payload.orders}) or an XML node set (${xpath('//order')})."},
            "xpath": {"type": "string",
                      "description": "An XPath over the XML payload selecting the item elements, e.g. //inv:order "
                                     "(prefixes from the file's namespaces); compiled at load."},
            "stream": {"type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
                       "description": "Split the request body as it arrives, never holding it whole.",
                       "properties": {
                           "json": {"type": "string", "pattern": r"^\$",
                                    "description": "A path to array items: $[*], $.orders[*]."},
                           "xml": {"type": "string",
                                   "description": "The name of the repeated element (any namespace), or "
                                                  "{uri}name."}}},
            "steps": STEPS_REF,
            "concurrency": {"type": "integer", "minimum": 1, "maximum": 1000,
                            "description": "How many items run at once (default 1: one after the other)."},
            "on_item_error": {"enum": ["fail", "collect"],
                              "description": "fail (default): the first failing item fails the step; collect: "
                                             "failed items are left out and listed in the errors variable."},
            "errors": {"type": "string",
                       "description": "A variable that receives [{index, error}] for the items that failed."},
            "aggregate": {"enum": list(AGGREGATES),
                          "description": "array (default): the results in item order; xml: an element per "
                                         "result under root; none: results are dropped (side effects only)."},
            "reduce": {"type": "string",
                       "description": "An expression whose payload is the array of results, e.g. "
                                      "sum(payload[*].total); its value is the aggregate."},
            "into": {"type": "string", "pattern": r"^\$",
                     "description": "JSONPath in the JSON payload where the aggregate goes."},
            "var": {"type": "string", "description": "Put the aggregate in this variable instead."},
            "root": {"type": "string", "description": "Root element of aggregate: xml (default results)."},
            "item": {"type": "string", "description": "Element of each JSON result under aggregate: xml "
                                                      "(default item)."},
            "index_var": {"type": "string", "description": "The variable holding the item's position (default "
                                                           "index)."},
            "complete": {"type": "object", "additionalProperties": False,
                         "description": "Finish early: after count results, or when timeout passes (items "
                                        "still running are cancelled, the rest not started).",
                         "properties": {"count": {"type": "integer", "minimum": 1},
                                        "timeout": duration_field("How long the items may take in all.")}},
            "stats": {"type": "string",
                      "description": "A variable that receives {items, succeeded, failed, complete}."},
        },
    },
    examples=[{"items": "${payload.orders}", "concurrency": 4,
               "steps": [{"call": {"endpoint": "pricing", "method": "POST", "path": "/price"}}],
               "into": "$.priced"},
              {"stream": {"xml": "order"}, "aggregate": "none",
               "steps": [{"call": {"endpoint": "warehouse", "method": "POST"}}]}],
    branches=("steps",),
)
def compile_foreach(config: Any, ctx: CompileContext) -> StepFn:
    sources = [k for k in ("items", "xpath", "stream") if k in config]
    if len(sources) != 1:
        raise StepConfigError("foreach needs one source of items: items (an expression), xpath (XML elements) "
                              "or stream (the body as it arrives)" + (f", not {' and '.join(sources)}"
                                                                       if sources else ""))
    if "into" in config and "var" in config:
        raise StepConfigError("give into (a JSONPath) or var, not both", "var")
    aggregate = config.get("aggregate", "array")
    reduce = ctx.expression(config["reduce"], "reduce", reads_body=False) if "reduce" in config else None
    if reduce is not None and aggregate != "array":
        raise StepConfigError("reduce works on the array of results; it goes with aggregate: array", "reduce")
    into = compile_jsonpath(config["into"], ctx, "into") if "into" in config else None
    if into is not None and aggregate == "xml":
        raise StepConfigError("into puts a JSON value in the payload; use var or no destination with "
                              "aggregate: xml", "into")
    complete = config.get("complete") or {}
    plan = _Plan(ctx.steps(config["steps"], "steps"), int(config.get("concurrency", 1)),
                 config.get("on_item_error", "fail"), str(config.get("index_var", "index")),
                 complete.get("count"),
                 seconds(complete["timeout"], ("complete", "timeout")) if "timeout" in complete else None,
                 aggregate != "none")
    root, item_name = xml_name(str(config.get("root", "results"))), xml_name(str(config.get("item", "item")))
    var, errors_var, stats_var = config.get("var"), config.get("errors"), config.get("stats")
    source = _source(config, ctx)
    # whether the items are pieces of the payload as it is (a stream or xpath of the body, items:
    # ${payload.orders}): then, while the payload is the request's, so is each item, and an
    # expression error on one is the caller's (engine/expression_blame.py)
    split_blame = _payload_read(config["items"], ctx) if "items" in config else None
    split_payload = "items" not in config or split_blame is not None
    # items from an expression through steps that only shape values: no message per item. Such
    # steps never wait, and neither does a listed source, so the general path (a message per
    # item) runs them one after the other, each whole, and this path answers as it does:
    # - at concurrency 1, complete.timeout too: the general path's items then all run in one turn
    #   of the event loop, which a timeout cannot cut (asyncio.wait finds the feeder done);
    # - at any concurrency without complete.count or complete.timeout: the items' tasks run in
    #   the order they were made, each to its end; results, failures and stats are the same.
    # Left out, at concurrency above 1: complete.count (the general path starts up to
    # `concurrency` items before it sees the count reached, and counts them in stats.items) and
    # complete.timeout (its feeder waits for a free slot, and the timeout can cut it there).
    # Left out always: a step traced by OpenTelemetry (tracing on, a kind that does work, e.g.
    # transform): engine/instrument.py wraps it so that each item has its own span, and it is no
    # shaper then. A test's or try-it's trace (msg.trace) is kept: each item's steps are recorded
    # as Steps.run records them.
    value_only = plan.concurrency == 1 or (plan.count is None and plan.timeout is None)
    shapers = shapers_of(plan.steps) if value_only else None
    listed = ctx.template(config["items"], "items") if shapers is not None and "items" in config else None
    ids = step_ids(plan.steps)
    # one payload step whose template only reads fields: every item rendered by one comprehension
    made = shapers[0].each(plan.index_var) if shapers is not None and len(shapers) == 1 \
        and shapers[0].each is not None and plan.count is None else None
    at_once, containers = made if made is not None else (None, False)  # containers: no result is XML
    # what the reduce may know of the results rendered at once: plain dicts, each with these keys,
    # and of those the keys holding a value of the item (the JSON parser's when the items are)
    rows: frozenset[str] | None = getattr(at_once, "row_keys", None) if reduce is not None else None
    item_keys: frozenset[str] | None = getattr(at_once, "item_keys", None) if rows is not None else None
    # items read by a path of fields of the payload: when the body is still unparsed JSON, they
    # are the parser's own values, seen by no step
    parsed_items = listed is not None and bool(listed.expressions) and all(
        e.fields is not None and e.fields[0] == "payload" for e in listed.expressions)
    # a reduce reading only the payload is given the results as a value: no message to make
    on_results = reduce is not None and reduce.reads_payload_only
    render_listed = listed.renderer if listed is not None else None
    # a reduce reading the results only by their count and aggregates of their fields, of rows
    # each rendered at once: only the columns it reads are rendered, and no row is made
    columns = _reduced_columns(reduce, at_once) if on_results and rows is not None else None

    async def run(msg: Message) -> None:
        if into is not None and not msg.is_streaming:
            json_payload(msg, "foreach into a JSONPath")
        # the places of the body split still the caller's (a step may have written others)
        from_request = split_payload and (split_blame.roots_are_request(msg) if split_blame is not None
                                          else msg.payload_is_request_at(()))
        rendered = None
        parsed = False
        if render_listed is not None and shapers is not None:
            parsed = parsed_items and msg.json_unread()
            items = render_listed(msg)
            if type(items) is not list:
                items = _listed_items(items)
            if columns is not None and reduce is not None and type(items) is list \
                    and (found := _columns_at_once(columns, msg, items, parsed)) is not None:
                if msg.trace is not None:
                    msg.trace.extend(ids * len(items))  # one step, run for every item
                _all_succeeded(msg, len(items))
                _place(msg, reduce.evaluate_columns(len(items), found, item_keys if parsed else None))
                return
            rendered = _all_at_once(at_once, msg, items, parsed) if at_once is not None else None
            plain = rendered is not None and containers
            if rendered is not None:
                if msg.trace is not None:
                    msg.trace.extend(ids * len(rendered))
                results = rendered if plan.keep_results else []
                failures: list[Any] = []
                stats = {"items": len(rendered), "succeeded": len(rendered), "failed": 0, "complete": True} \
                    if stats_var is not None else {}
            else:
                results, failures, stats = _shape_items(msg, items, plan, shapers, ids, from_request)
        else:
            plain = False
            results, failures, stats = await _run_items(msg, source(msg), plan, from_request)
        if errors_var is not None:
            msg.vars[errors_var] = failures
        if stats_var is not None:
            msg.vars[stats_var] = stats
        if aggregate == "none":
            return
        value: Any
        if aggregate == "xml":
            value = _as_xml(results, root, item_name)
        else:
            # an XML result gathered as JSON is its text (inline: one call fewer per item); results
            # that are all dicts or lists just made are the array as they are
            value = results if plain else [("".join(r.itertext()) if isinstance(r, etree._Element) else r)
                                           for r in results]
            if reduce is not None:
                known = rows if rendered is not None else None
                typed = item_keys if known is not None and parsed else None
                if on_results:
                    value = reduce.evaluate_payload(value, known, typed)
                else:
                    probe = Message(body=b"", correlation_id=msg.correlation_id)
                    probe.set_payload(value, JSON)
                    probe.vars = msg.vars
                    value = reduce.evaluate_rows(probe, known, typed) if known is not None else reduce.evaluate(probe)
        _place(msg, value)

    def _place(msg: Message, value: Any) -> None:
        if var is not None:
            msg.vars[var] = value
        elif into is not None:
            document = json_payload(msg, "foreach into a JSONPath")
            msg.set_payload(into.update_or_create(document if document is not None else {}, value), JSON,
                            msg.content_type)
        else:
            msg.set_payload(value, XML if aggregate == "xml" else JSON)

    def _all_succeeded(msg: Message, count: int) -> None:
        """The errors and stats variables once all ``count`` items were rendered at once (set
        before the reduce, as run sets them: an error handler after a failing reduce sees them)."""
        if errors_var is not None:
            msg.vars[errors_var] = []
        if stats_var is not None:
            msg.vars[stats_var] = {"items": count, "succeeded": count, "failed": 0, "complete": True}

    return run


def _reduced_columns(reduce: Any, at_once: Any) -> dict[str, Any] | None:
    """The column renders (engine/template_code.py ``Generator._columns``) of the keys a reduce
    reads (``Expr.columnar``), when it reads the results only so and each such key has one."""
    keys: frozenset[str] | None = reduce.columnar
    available: dict[str, Any] | None = getattr(at_once, "columns", None)
    if keys is None or available is None or not keys <= available.keys():
        return None
    return {key: available[key] for key in keys}


def _columns_at_once(columns: dict[str, Any], msg: Message, items: list[Any],
                     parsed: bool) -> dict[str, list[Any]] | None:
    """Each column's values for the items, or None to take the rows' way (as _all_at_once: a
    render only reads, so the rows' way renders again and answers as it would have)."""
    try:
        return {key: column(msg, items, parsed) for key, column in columns.items()}
    except Exception:
        return None


ItemSource = Any  # Callable[[Message], AsyncIterator[Any]]


def _source(config: Any, ctx: CompileContext) -> ItemSource:
    if "items" in config:
        expression = ctx.template(config["items"], "items")
        ctx.needs_body()

        async def from_expression(msg: Message) -> AsyncIterator[Any]:
            for item in _listed_items(expression.render(msg)):
                yield item

        return from_expression
    if "xpath" in config:
        try:
            compiled = etree.XPath(str(config["xpath"]), namespaces=ctx.namespaces, smart_strings=False)
        except etree.XPathError as exc:
            raise StepConfigError(f"invalid XPath {config['xpath']!r}: {exc}", "xpath") from exc
        ctx.needs_body()

        async def from_xpath(msg: Message) -> AsyncIterator[Any]:
            document = msg.payload
            if msg.kind != XML or document is None:
                raise ExpressionError(f"foreach xpath needs an XML payload, the message is "
                                      f"{msg.content_type or 'empty'}")
            found = compiled(document)
            for node in found if isinstance(found, list) else [found]:
                yield copy.deepcopy(node) if isinstance(node, etree._Element) else node

        return from_xpath
    stream = config["stream"]
    if "json" in stream:
        try:
            prefix = ijson_prefix(str(stream["json"]))
        except ValueError as exc:
            raise StepConfigError(str(exc), ("stream", "json")) from exc

        def from_json(msg: Message) -> AsyncIterator[Any]:
            return json_items(_body_chunks(msg), prefix)

        return from_json
    element = str(stream["xml"])

    def from_xml(msg: Message) -> AsyncIterator[Any]:
        return xml_items(_body_chunks(msg), element)

    return from_xml


def _payload_read(items: Any, ctx: CompileContext) -> Blame | None:
    """The Blame of ``items`` when it is one whole ``${...}`` whose value is read from the payload
    as it is (it says which places of the payload it reads), else None."""
    if not isinstance(items, str):
        return None
    spans = find_expressions(items.strip())
    if len(spans) != 1 or spans[0][0] != 0 or spans[0][1] != len(items.strip()):
        return None
    try:
        blame = Expr(spans[0][2]).blame
    except ExpressionSyntaxError:
        return None  # ctx.template has already said so at its line
    return blame if blame is not None and blame.value_is_read and blame.roots == {"payload"} else None


def _listed_items(value: Any) -> Iterable[Any]:
    if type(value) is list:  # a JSON array, by far the most common: no ABC check
        return value
    if value is None:
        return ()
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        raise ExpressionError(f"foreach items gave {type(value).__name__}, not a list; point items at a "
                              f"list, e.g. ${{payload.orders}}")
    return value


def _all_at_once(render_items: Any, msg: Message, items: Iterable[Any], parsed: bool = False) -> list[Any] | None:
    """Every item's result from one comprehension (a payload step reading only fields), or None
    to take _shape_items: items that are not a list, or a render that raised (it only reads, so
    _shape_items then renders again item by item and fails or collects as it would).  ``parsed``:
    the items are the JSON parser's own values."""
    if type(items) is not list:
        return None
    try:
        rendered: list[Any] = render_items(msg, items, parsed)
    except Exception:
        return None
    return rendered


def _shape_items(msg: Message, items: Iterable[Any], plan: _Plan, shapers: tuple[Shaper, ...],
                 ids: tuple[str, ...], from_request: bool = False) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """What _run_items gives for steps that only shape the message, run on one scratch message
    that takes each item in turn.  What the steps write (the payload always; variables, headers,
    status for set and remove) is put back as the fork made it before each item, so what one
    item sees is what it would see on a message of its own."""
    scratch = fork(msg)
    index_var, keep, count, collect = plan.index_var, plan.keep_results, plan.count, plan.on_error != "fail"
    writes = frozenset().union(*(shaper.writes for shaper in shapers))
    base_vars = scratch.vars if VARS in writes else None
    base_headers = (scratch.headers, scratch.headers_explicit) if HEADERS in writes else None
    base_status = scratch.status
    reset_status = STATUS in writes
    first = tuple(zip(ids[:-1], (shaper.apply for shaper in shapers[:-1]), strict=True))
    last_id, last = ids[-1], shapers[-1]
    last_apply, last_value = last.apply, last.value  # value: the last step's payload, not set on scratch
    trace = msg.trace
    if trace is not None:  # a test's or try-it's: each step's id before it runs, as Steps.run records it
        first = tuple((step_id, _recorded(apply, step_id, trace)) for step_id, apply in first)
        last_apply = _recorded(last_apply, last_id, trace)
        last_value = _recorded(last_value, last_id, trace) if last_value is not None else None
    results: list[Any] = []
    failures: list[dict[str, Any]] = []
    succeeded = seen = 0
    cut_by_count = False
    variables = scratch.vars
    for index, item in enumerate(items):
        if count is not None and succeeded >= count:
            cut_by_count = True
            break
        seen += 1
        if base_vars is not None:
            variables = scratch.vars = dict(base_vars)
        if base_headers is not None:
            scratch.headers, scratch.headers_explicit = dict(base_headers[0]), set(base_headers[1])
        if reset_status:
            scratch.status = base_status
        scratch.set_payload(item, XML if isinstance(item, etree._Element) else JSON)
        if from_request:
            scratch.payload_is_request = True  # set_payload cleared it: this item is the caller's
            scratch.payload_edits = ()  # the last item's, written by the steps
        variables[index_var] = index
        step_id = last_id
        try:
            for step_id, apply in first:  # noqa: B007 (the except reads which step raised)
                apply(scratch)
            step_id = last_id
            if last_value is not None:
                result = last_value(scratch)
            else:
                last_apply(scratch)
                result = scratch.payload
        except Exception as exc:
            if not hasattr(exc, "step_id"):
                exc.step_id = step_id  # type: ignore[attr-defined]
            error = exc if isinstance(exc, FlowError) else internal_error(exc)
            if not collect:
                raise error from (None if error is exc else exc)
            failures.append({"index": index, "error": error.as_dict()})
            continue
        succeeded += 1
        if keep:
            results.append(result)
    stats = {"items": seen, "succeeded": succeeded, "failed": len(failures), "complete": not cut_by_count}
    return results, failures, stats


def _recorded(run: Callable[[Message], Any], step_id: str, trace: list[str]) -> Callable[[Message], Any]:
    def recorded(msg: Message) -> Any:
        trace.append(step_id)
        return run(msg)
    return recorded


async def _body_chunks(msg: Message) -> AsyncIterator[bytes]:
    stream = msg.take_stream()
    if stream is None:
        yield msg.body
        return
    async for chunk in stream:
        yield chunk


async def _run_items(msg: Message, items: AsyncIterator[Any], plan: _Plan,
                     from_request: bool = False) -> tuple[list[Any], list[Any], dict[str, Any]]:
    results: dict[int, Any] = {}
    succeeded = 0
    failures: list[dict[str, Any]] = []
    limit = asyncio.Semaphore(plan.concurrency)
    running: set[asyncio.Task[None]] = set()
    first_error: list[FlowError] = []
    seen = 0
    complete = True
    cut_by_count = False

    async def one(index: int, item: Any) -> None:
        try:
            branch = fork(msg, item, with_payload=True, item_is_request=from_request)
            branch.vars[plan.index_var] = index
            await plan.steps.run(branch)
            nonlocal succeeded
            succeeded += 1
            if plan.keep_results:
                results[index] = result_of(branch)
        except FlowError as exc:
            _failed(index, exc)
        except Exception as exc:
            _failed(index, internal_error(exc))
        finally:
            limit.release()

    def _failed(index: int, exc: FlowError) -> None:
        if plan.on_error == "fail":
            if not first_error:
                first_error.append(exc)
                for task in list(running):  # fail fast: the others' results no longer matter
                    if task is not asyncio.current_task():
                        task.cancel()
        else:
            failures.append({"index": index, "error": exc.as_dict()})

    async def feed() -> None:
        nonlocal seen, cut_by_count
        async for item in items:
            await limit.acquire()
            if first_error or (plan.count is not None and succeeded >= plan.count):
                cut_by_count = not first_error
                limit.release()
                break
            task = asyncio.ensure_future(one(seen, item))
            running.add(task)
            task.add_done_callback(running.discard)
            seen += 1
        while running:
            await asyncio.wait(set(running))
        if first_error:
            return

    async def in_order() -> None:
        # one at a time: no task, no semaphore, no event-loop turn between items
        nonlocal seen, cut_by_count, succeeded
        run_steps, index_var, keep, count = plan.steps.run, plan.index_var, plan.keep_results, plan.count
        async for item in items:
            if first_error:
                return
            if count is not None and succeeded >= count:
                cut_by_count = True
                return
            index = seen
            seen += 1
            try:
                branch = fork(msg, item, with_payload=True, item_is_request=from_request)
                branch.vars[index_var] = index
                await run_steps(branch)
                succeeded += 1
                if keep:
                    results[index] = branch.payload
            except FlowError as exc:
                _failed(index, exc)
            except Exception as exc:
                _failed(index, internal_error(exc))

    if plan.concurrency == 1 and plan.timeout is None:
        await in_order()  # in this task: nothing to cancel from outside
        feeder = None
    else:
        feeder = asyncio.ensure_future(in_order() if plan.concurrency == 1 else feed())
    try:
        if feeder is None:
            pass
        elif plan.timeout is None:
            await feeder
        else:
            done, _ = await asyncio.wait({feeder}, timeout=plan.timeout)
            if not done:
                complete = False
                feeder.cancel()
                for task in list(running):
                    task.cancel()
                await asyncio.gather(feeder, *running, return_exceptions=True)
            else:
                feeder.result()
    except BaseException:
        if feeder is not None:
            feeder.cancel()
        for task in list(running):
            task.cancel()
        raise
    if first_error:
        raise first_error[0]
    ordered = list(results.values()) if plan.concurrency == 1 else [results[i] for i in sorted(results)]
    if plan.count is not None and len(ordered) > plan.count:
        ordered = ordered[:plan.count]
    stats = {"items": seen, "succeeded": min(succeeded, plan.count or succeeded), "failed": len(failures),
             "complete": complete and not cut_by_count}
    failures.sort(key=lambda f: f["index"])
    return ordered, failures, stats


def _as_xml(results: list[Any], root: str, item: str) -> etree._Element:
    element = etree.Element(root)
    for value in results:
        if isinstance(value, etree._Element):
            element.append(value)
        else:
            element.append(json_to_xml(value, root=item))
    return element
