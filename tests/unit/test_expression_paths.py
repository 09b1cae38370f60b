"""A `${...}` that is a path of fields from a message root is read straight from the message;
its answers are the general evaluator's, for every shape of value on the way."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree

from engine.expressions import Context, Expr, Template
from engine.message import JSON, XML, Message


def _message(payload: Any, kind: str = JSON) -> Message:
    msg = Message(headers={"x-client-id": "c-1"}, path_params={"id": "42"}, query={"page": "2"})
    msg.set_payload(payload, kind)
    msg.vars = {"customer": {"name": "Ada", "tags": ["a"]}, "index": 3, "none": None}
    msg.attributes["auth"] = {"sub": "u-1"}
    return msg


SOURCES = ["payload", "payload.id", "payload.a.b.c", "payload.missing.deeper", "vars.customer.name",
           "vars.customer.tags", "vars.index.x", "vars.none.x", 'headers."x-client-id"', "path.id", "query.page",
           "auth.sub", "tls.subject", "params.x", "status", "method", "error.code"]
PAYLOADS = [{"id": 7, "a": {"b": {"c": [1, 2]}}}, {"id": None, "a": "text"}, [1, 2, 3], "plain", None]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_direct_path_answers_as_the_general_one(source: str, payload: Any) -> None:
    expr = Expr(source, env={}, secrets={})
    assert expr.direct is not None
    msg = _message(payload)
    assert expr.direct(msg) == expr._getter(Context(msg, {}, {}))


def test_an_xml_payload_and_other_expressions() -> None:
    msg = _message(etree.fromstring(b"<order><id>1</id></order>"), XML)
    assert Expr("payload.id", env={}, secrets={}).evaluate(msg) is None
    for source in ("payload.items[0]", "env.HOME", "length(payload)", "payload.id || 'x'"):
        assert Expr(source, env={}, secrets={}).direct is None  # these take the general path


def test_a_mapping_template_keeps_its_literal_keys() -> None:
    msg = _message({"id": 7})
    template = Template({"id": "${payload.id}", 3: "${vars.index}", "$${literal}": 1, "k-${path.id}": True})
    assert template.render(msg) == {"id": 7, "3": 3, "${literal}": 1, "k-42": True}
    assert Template({"id": "${payload.id}", 3: "x", "$${literal}": 1}).render(msg) == \
        {"id": 7, "3": "x", "${literal}": 1}


COMPILED = ["{count: length(payload), qty: sum(payload[*].qty)}", "[length(payload), vars.index]",
            "payload[*].qty", "payload[*].a.b", "payload[*][0]", "max(payload[*].qty)", "join(',', payload[*].id)",
            "{a: payload[*].id, b: {c: vars.customer.name}}", "length(vars.customer.tags)", "to_string(payload)",
            "sort_by(payload, &qty)[*].id", "not_null(payload.missing, vars.index)", "payload[*].{id: id, q: qty}",
            "contains(vars.customer.tags, 'a')", "[payload[*].qty, headers.\"x-client-id\"]",
            # the functions answered by a builtin on their plainest arguments, and projections of one field
            "length(payload)", "sum(payload)", "avg(payload)", "max(payload)", "min(payload)",
            "sum(payload[*].qty)", "avg(payload[*].qty)", "min(payload[*].qty)", "max(payload[*].id)",
            "length(payload[*].id)", "length(payload.id)"]
SHAPES = [[{"id": "a", "qty": 2, "a": {"b": 1}}, {"id": "b", "qty": 5}, {"id": "c", "qty": None}], [],
          {"id": 1}, "text", None, [[1, 2], [3]], [{"id": "x", "qty": "2"}],
          # numbers, mixed int/float, bools (not numbers to jmespath), nulls, strings, mixed kinds
          [1, 2.5, -3], [True, 1], [1, None], ["b", "a", "c"], ["a", 1], [False], 7, 2.5, True,
          [{"id": "b", "qty": 1.5}, {"id": "a", "qty": True}], [{"id": 1, "qty": 3}, {"id": None}, "x", 4, None],
          [{"qty": 0.1}, {"qty": 0.2}, {"qty": 0.3}], {"id": "abc"}, {"id": [1, 2]}, {"id": {"k": 1}}]


@pytest.mark.parametrize("source", COMPILED)
@pytest.mark.parametrize("payload", SHAPES)
def test_compiled_selections_projections_and_functions_answer_as_jmespath(source: str, payload: Any) -> None:
    import jmespath
    from jmespath import exceptions as jp_exceptions

    from engine.expressions import _INTERPRETER

    msg = _message(payload)
    tree = jmespath.compile(source).parsed
    try:
        expected: Any = _INTERPRETER.visit(tree, Context(msg, {}, {}))
    except jp_exceptions.JMESPathError as exc:
        expected = (type(exc), str(exc))
    try:
        got: Any = Expr(source, env={}, secrets={})._getter(Context(msg, {}, {}))
    except jp_exceptions.JMESPathError as exc:
        got = (type(exc), str(exc))
    assert got == expected
    assert type(got) is type(expected)  # 2 is not 2.0, True is not 1: the same value, of the same type
