"""Whose mistake a run-time expression error is (engine/expression_blame.py): each expression
evaluated on a message as the front makes it, and on one whose data the flow or a backend chose."""

from __future__ import annotations

import json

import jmespath
import pytest

from engine import expression_blame
from engine.errors import FlowError
from engine.expressions import EngineFunctions, Expr, Template
from engine.message import JSON, Message


def request(body: object = None, headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> Message:
    msg = Message(json.dumps(body).encode() if body is not None else b"", content_type="application/json",
                  headers=headers, query=query)
    msg.payload_is_request = True  # as the front sets it
    return msg


def failure(source: str, msg: Message) -> tuple[int, str]:
    with pytest.raises(FlowError) as caught:
        Expr(source).evaluate(msg)
    return caught.value.status, caught.value.code


CALLERS = [
    "length(payload.items)", "sum(payload.items[*].qty)", "payload.items[*].qty | sum(@)", "join(', ', payload.items)",
    "length(payload.items) > `2`", "payload.ok && length(payload.items) == `1`", "sort_by(payload.items, &k)",
    "upper(payload.name || payload.alias)", "max_by(payload.items, &price)", "length(payload.items[?qty > `1`])",
    "map(&length(a), payload.items)",
]


@pytest.mark.parametrize("source", CALLERS)
def test_a_type_error_on_the_requests_body_is_the_callers(source: str) -> None:
    body = {"items": 5, "ok": True, "name": 3}
    if "map(" in source or "max_by" in source:
        body = {"items": [{"a": 1, "price": True}]}
    assert failure(source, request(body)) == (422, "request-data-invalid")


FLOWS_OWN = [
    "length(vars.items)",  # the flow's variables
    "length(payload.none || `5`)",  # the flow's literal may be what reached length()
    "length(abs(payload.n))",  # a function's result: the flow's choice of functions
    "join(`5`, payload.items)",  # a literal that never fits
    "length(payload.ok == `true`)",  # a comparison's boolean
    "sum([payload.a, payload.b])",  # a list the flow built
    "length(env.INTERLACE_NEVER_SET) || length(payload.items)",
    "`[{\"a\": 5}]`[*].length(a)",
]


@pytest.mark.parametrize("source", FLOWS_OWN)
def test_an_error_that_may_come_from_the_flow_is_its_500(source: str) -> None:
    msg = request({"items": [1], "n": 1, "ok": True, "a": 1, "b": "x"})
    msg.vars["items"] = 5
    assert Expr(source).blame is None
    assert failure(source, msg) == (500, "expression-error")


def test_the_body_stops_being_the_callers_once_replaced_or_changed() -> None:
    for change in ("set_payload", "set_body", "mark_payload_changed"):
        msg = request({"items": 5})
        if change == "set_payload":
            msg.set_payload({"items": 5}, JSON)
        elif change == "set_body":
            msg.set_body(b'{"items": 5}', "application/json")  # a backend's reply, the same bytes
        else:
            msg.mark_payload_changed()
        assert failure("length(payload.items)", msg) == (500, "expression-error"), change
    unmarked = Message(b'{"items": 5}', content_type="application/json")  # a queue's, a schedule's message
    assert failure("length(payload.items)", unmarked) == (500, "expression-error")


@pytest.mark.parametrize(("source", "reads"), [
    ("length(payload.items)", {("items",)}),
    ("length(payload.order.lines[0].sku)", {("order", "lines")}),
    ("sum(payload.items[*].qty)", {("items",)}),
    ("length(payload)", {()}),
    ("sum(payload[*].qty)", {()}),
    ("upper(payload.name || payload.alias)", {("name",), ("alias",)}),
])
def test_an_expression_knows_the_places_of_the_body_it_reads(source: str, reads: set[tuple[str, ...]]) -> None:
    blame = Expr(source).blame
    assert blame is not None and blame.payload_reads == reads


FUNCTIONS = EngineFunctions().FUNCTION_TABLE


def test_a_transform_query_over_the_body_reads_the_top_level_fields_it_names() -> None:
    tree = jmespath.compile("{n: length(items), first: order.lines[0]}").parsed
    blame = expression_blame.of(tree, FUNCTIONS, document=True)
    assert blame is not None and blame.payload_reads == {("items",), ("order",)}


def test_the_body_stays_the_callers_where_no_step_wrote() -> None:
    edited = request({"items": 5, "meta": {"seen": "x"}})
    edited.set_payload_edited(edited.payload, (("meta", "seen"),))  # as set: {path: $.meta.seen} leaves it
    assert failure("length(payload.items)", edited) == (422, "request-data-invalid")
    assert failure("abs(payload.meta.seen)", edited) == (500, "expression-error")  # the flow's own value
    assert failure("length(payload.meta.seen.n)", edited) == (500, "expression-error")  # under it
    assert failure("abs(payload.meta)", edited) == (500, "expression-error")  # above it: holds the flow's
    edited.set_payload_edited(edited.payload, ((),))  # a write at $: all the flow's
    assert failure("length(payload.items)", edited) == (500, "expression-error")


def test_headers_and_query_count_when_missing_never_for_text_the_flow_misreads() -> None:
    assert failure('lower(headers."x-agent")', request()) == (422, "request-data-invalid")
    assert failure("upper(query.name)", request()) == (422, "request-data-invalid")
    # a header is text whatever the caller sends: a number needed from it is the flow's reading
    assert failure('abs(headers."x-n")', request(headers={"x-n": "7"})) == (500, "expression-error")
    # a header the flow set, or a backend's headers, are not the caller's
    own = request()
    own.set_header("X-Other", "a")
    assert failure('lower(headers."x-agent")', own) == (422, "request-data-invalid")
    own.set_header("X-Agent", "a")
    own.headers.pop("x-agent")  # set by the flow, then gone: still the flow's doing
    assert failure('lower(headers."x-agent")', own) == (500, "expression-error")
    replied = request()
    replied.replace_headers({})
    assert failure('lower(headers."x-agent")', replied) == (500, "expression-error")


def test_the_detail_names_the_part_and_the_types_never_the_value() -> None:
    with pytest.raises(FlowError) as caught:
        Template("n=${length(payload.secretish)}").render(request({"secretish": 123456789}))
    assert caught.value.detail == ("the request does not fit this flow in its body: ${length(payload.secretish)} "
                                   "needs string or array or object for length(), and got number")
    assert "123456789" not in caught.value.detail
    with pytest.raises(FlowError) as caught:
        Expr("join(', ', payload.tags)").evaluate(request({"tags": ["a", 2]}))
    assert caught.value.detail.endswith("needs array-string for join(), and got number")
