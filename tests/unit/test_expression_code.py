"""An expression compiled to one generated function (engine/expression_code.py) answers as the
closures it replaces, and as jmespath's own interpreter where those do: the same values of the
same types, fresh lists and dicts per evaluation, the same first error and its text, for every
shape of message on the way."""

from __future__ import annotations

import re
from typing import Any

import jmespath
import pytest
from lxml import etree

from engine.errors import ExpressionError
from engine.expressions import _INTERPRETER, Context, Expr
from engine.message import JSON, XML, Message

ENV = {"REGION": "eu", "EMPTY": ""}
SECRETS = {"token": "s3cret"}


def _message(payload: Any, kind: str = JSON) -> Message:
    msg = Message(headers={"x-client-id": "c-1"}, path_params={"id": "42"}, query={"page": "2"},
                  correlation_id="corr-1")
    msg.set_payload(payload, kind)
    msg.vars = {"customer": {"name": "Ada", "tags": ["a", "b"]}, "index": 3, "none": None, "ratio": 0.5,
                "ok": True, "list": [1, 2, 3], "empty": [], "text": ""}
    msg.attributes["auth"] = {"sub": "u-1"}
    return msg


def _outcome(run: Any, msg: Message) -> Any:
    try:
        value = run(msg)
    except Exception as exc:  # jmespath's errors, and the TypeError its filters raise on mixed types
        return (type(exc), re.sub(r" at 0x[0-9a-f]+", "", str(exc)))  # length(@): the message view's address
    if isinstance(value, Context):  # @ at the root: the view of the message, one per evaluation
        return (Context, value.msg)
    if isinstance(value, list):
        return [(Context, v.msg) if isinstance(v, Context) else v for v in value]
    return value


SOURCES = [
    # the split benchmark's reduce, and the aggregates of one field (fused when every element holds it)
    "{count: length(payload), qty: sum(payload[*].qty)}", "sum(payload[*].qty)", "avg(payload[*].qty)",
    "max(payload[*].qty)", "min(payload[*].qty)", "max(payload[*].id)", "min(payload[*].id)",
    "sum(payload.items[*].qty)",
    "sum(vars.list)", "avg(vars.empty)", "max(vars.customer.tags)", "length(payload)", "length(payload.id)",
    "length(vars.none)", "sum(payload)", "avg(payload)", "max(payload)", "min(payload)",
    # fields, chains, indexes
    "payload.id", "payload.a.b.c", "payload.a[0]", "payload.a[0].b", "payload.items[-1]", "payload[0]", "payload[-2]",
    "payload[5]", "payload[0].qty", "vars.list[1]", "vars.list[-4]", "payload.missing.deeper[0]",
    'headers."x-client-id"', "path.id", "query.page", "auth.sub", "tls.subject", "client.address", "params.x",
    "status", "method",
    "error.code", "correlation_id", "env.REGION", "env.MISSING", "secret.token", "secret.none",
    # selections, projections, comparisons, logic, literals, the current value
    "[payload.id, vars.index]", "{a: payload.id, b: {c: vars.customer.name, d: [vars.index, `1`]}}",
    "payload[*].qty", "payload[*].a.b", "payload[*][0]", "payload[*].{id: id, q: qty}", "payload.a.{x: b}",
    "payload.id == 'x'", "payload.id != `7`", "payload.qty > `2`", "vars.index >= `3`", "vars.index < payload.qty",
    "vars.ratio <= `0.5`", "payload.id == `null`", "vars.ok == `true`", "vars.index == `3.0`",
    "payload.id || 'none'", "payload.id && vars.index", "vars.text || vars.empty || `0`", "!payload.ok",
    "!(payload.id)", "!vars.empty", "`[1, 2]`", "`{\"k\": 1}`", "'text'", "`2.5`", "`true`", "`null`", "@",
    "[@, payload.id]", "length(@)",
    # functions in general, and what stays with the closures or jmespath's interpreter
    "join(',', payload[*].id)", "to_string(payload)", "contains(vars.customer.tags, 'a')",
    "not_null(payload.missing, vars.index)", "sort_by(payload, &qty)[*].id", "payload[?qty > `1`].id",
    "payload[0:2]", "payload[].a", "payload.* | [0]", "payload | length(@)", "lower(payload.id)",
    "upper(vars.customer.name)", "default(payload.id, 'd')", "keys(payload)", "type(payload)",
]
SHAPES: list[Any] = [
    [{"id": "a", "qty": 2, "a": {"b": 1}}, {"id": "b", "qty": 5}, {"id": "c", "qty": None}], [],
    [{"id": "a", "qty": 2}, {"id": "b", "qty": 5.5}], [{"id": "a", "qty": 2}, {"id": "b"}],
    [{"id": "a", "qty": True}], [{"id": "x", "qty": "2"}, {"id": "y", "qty": "10"}], [{"qty": [1]}],
    {"id": 1, "qty": 3, "a": [{"b": 2}], "items": [{"qty": 1}, {"qty": 2}, {"qty": 3}]}, {"id": "x", "a": "text"},
    {"id": None, "a": {"b": {"c": [1, 2]}}}, "text", None, 7, 2.5, True, False, 0, "",
    [[1, 2], [3]], [1, 2.5, -3], [True, 1], [1, None], ["b", "a", "c"], ["a", 1], [False],
    [{"id": 1, "qty": 3}, {"id": None}, "x", 4, None], [{"qty": 0.1}, {"qty": 0.2}, {"qty": 0.3}],
    {"id": "abc"}, {"id": [1, 2]}, {"id": {"k": 1}}, {"ok": False}, {"ok": []},
]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("payload", SHAPES, ids=range(len(SHAPES)))
def test_the_generated_function_answers_as_the_closures(source: str, payload: Any) -> None:
    expr = Expr(source, env=ENV, secrets=SECRETS)
    msg = _message(payload)
    got, expected = _outcome(expr._run, msg), _outcome(expr._on_context, msg)
    assert got == expected
    assert repr(got) == repr(expected)  # the same types inside: 2 not 2.0, True not 1


@pytest.mark.parametrize("source", [s for s in SOURCES if "@" not in s])  # @ at the root is the message view
@pytest.mark.parametrize("payload", SHAPES, ids=range(len(SHAPES)))
def test_the_generated_function_answers_as_jmespath(source: str, payload: Any) -> None:
    msg = _message(payload)
    expr = Expr(source, env=ENV, secrets=SECRETS)
    try:
        expected: Any = _INTERPRETER.visit(jmespath.compile(source).parsed, Context(msg, ENV, SECRETS))
    except Exception as exc:
        expected = (type(exc), str(exc))
    try:
        got: Any = expr._run(msg)
    except Exception as exc:
        got = (type(exc), str(exc))
    assert got == expected
    assert repr(got) == repr(expected)


def test_the_reduce_of_the_split_benchmark_is_generated_and_builds_fresh_values() -> None:
    expr = Expr("{count: length(payload), qty: sum(payload[*].qty), ids: payload[*].id}", env={}, secrets={})
    assert expr._run.__name__ == "evaluate"  # the generated function, not the closures on a Context
    msg = _message([{"id": "a", "qty": 2}, {"id": "b", "qty": 3}])
    first, second = expr.evaluate(msg), expr.evaluate(msg)
    assert first == second == {"count": 2, "qty": 5, "ids": ["a", "b"]}
    assert first is not second and first["ids"] is not second["ids"]


def test_an_aggregate_of_a_field_reads_each_element_once_and_keeps_jmespaths_errors() -> None:
    expr = Expr("sum(payload[*].qty)", env={}, secrets={})
    assert expr.evaluate(_message([{"qty": 1}, {"qty": 2.5}])) == 3.5
    assert expr.evaluate(_message([{"qty": 1}, {"other": 2}, {"qty": None}])) == 1  # nulls and missing: left out
    with pytest.raises(ExpressionError) as raised:
        expr.evaluate(_message([{"qty": 1}, {"qty": True}]))
    assert "invalid type for value: True" in str(raised.value) and "array-number" in str(raised.value)
    with pytest.raises(ExpressionError):
        expr.evaluate(_message({"qty": 1}))  # not a list: null, which sum() refuses as jmespath does


def test_the_payload_is_read_once_and_a_bad_body_fails_first() -> None:
    expr = Expr("{a: payload.id, b: payload.qty, c: length(payload)}", env={}, secrets={})
    msg = Message(body=b'{"id": 1, "qty": 2}', content_type="application/json")
    assert expr.evaluate(msg) == {"a": 1, "b": 2, "c": 2}
    bad = Message(body=b'{"id": ', content_type="application/json")
    with pytest.raises(Exception) as raised:
        expr.evaluate(bad)
    assert "malformed JSON" in str(raised.value)


def test_xpath_env_and_secret_reads_are_generated_too() -> None:
    expr = Expr("{symbol: xpath('//symbol'), region: env.REGION, token: secret.token}", env=ENV, secrets=SECRETS)
    assert expr._run.__name__ == "evaluate"
    msg = _message(etree.fromstring(b"<order><symbol>ACME</symbol></order>"), XML)
    assert expr.evaluate(msg) == {"symbol": "ACME", "region": "eu", "token": "s3cret"}
    with pytest.raises(ExpressionError, match="needs an XML payload"):
        expr.evaluate(_message({"symbol": "x"}))


def test_nothing_of_the_expression_becomes_code() -> None:
    # names, keys and literals that look like Python stay data
    for source in ["{\"__import__('os')\": payload.\"x') or __import__('os') or ('\"}",
                   "payload.\"a\\\"b\" || '); import os; ('", "[`\"});print(1);({\"`, payload.\"\\n\"]"]:
        expr = Expr(source, env={}, secrets={})
        msg = _message({"x') or __import__('os') or ('": 1, "a\"b": None, "\n": 2})
        assert _outcome(expr._run, msg) == _outcome(expr._on_context, msg)


def test_a_tree_nested_deeper_than_the_generator_takes_keeps_the_closures() -> None:
    source = "[" * 60 + "payload.id" + "]" * 60
    expr = Expr(source, env={}, secrets={})
    assert expr._run == expr._on_context
    value: Any = expr.evaluate(_message({"id": 5}))
    for _ in range(60):
        value = value[0]
    assert value == 5


ROWS = frozenset({"id", "qty", "line"})
ROW_LISTS: list[Any] = [
    [], [{"id": "a", "qty": 2, "line": 0}, {"id": "b", "qty": 5.5, "line": 1}],
    [{"id": "a", "qty": None, "line": 0}, {"id": None, "qty": 3, "line": 1}],
    [{"id": "a", "qty": True, "line": 0}], [{"id": "x", "qty": "2", "line": 0}, {"id": "y", "qty": "10", "line": 1}],
    [{"id": 1, "qty": [1], "line": 0}], [{"id": 2, "qty": {"k": 1}, "line": 0}, {"id": 3, "qty": 1, "line": 1}],
]


@pytest.mark.parametrize("source", ["{count: length(payload), qty: sum(payload[*].qty)}", "avg(payload[*].qty)",
                                    "max(payload[*].qty)", "min(payload[*].id)", "sum(payload[*].line)",
                                    "sum(payload[*].missing)", "[sum(payload[*].qty), payload[*].id]"])
@pytest.mark.parametrize("rows", ROW_LISTS, ids=range(len(ROW_LISTS)))
def test_an_aggregate_told_its_rows_answers_as_one_that_checks_them(source: str, rows: list[Any]) -> None:
    # a foreach's results rendered from a mapping template are plain dicts holding its keys
    expr = Expr(source, env={}, secrets={})
    msg = _message(rows)
    assert repr(_outcome(lambda m: expr.evaluate_rows(m, ROWS), msg)) == repr(_outcome(expr.evaluate, msg))


def test_a_split_rendered_from_a_mapping_tells_its_keys_to_the_reduce() -> None:
    from engine.expressions import Template

    made = Template({"id": "${payload.id}", 3: "${payload.qty}", "$${x}": "${vars.index}"}).for_items("index")
    assert made is not None and getattr(made[0], "row_keys", None) == frozenset({"id", "3", "${x}"})
    for value in ({"${payload.id}": 1, "qty": "${payload.qty}"}, ["${payload.id}"], "${payload.id}"):
        made = Template(value).for_items("index")
        assert made is None or getattr(made[0], "row_keys", None) is None


# rows as a split of a JSON body gives them: the JSON parser's own values (orjson), odd ones too
PARSED_ROW_LISTS: list[str] = [
    "[]", '[{"id": "a", "qty": 2, "line": 0}, {"id": "b", "qty": 5, "line": 1}]',
    '[{"id": "a", "qty": 2, "line": 0}, {"id": "b", "qty": 5.5, "line": 1}, {"id": "c", "qty": -0.25, "line": 2}]',
    '[{"id": "a", "qty": 1e300, "line": 0}, {"id": "b", "qty": 1.5e-10, "line": 1}]',  # a float written with e
    '[{"id": "a", "qty": 1, "line": 0}, {"id": "b", "qty": true, "line": 1}]', '[{"id": "a", "qty": false, "line": 0}]',
    '[{"id": "a", "qty": true, "line": 0}, {"id": "b", "qty": 2.5, "line": 1}]',
    '[{"id": "a", "qty": 0, "line": 0}, {"id": "b", "qty": 1, "line": 1}, {"id": "c", "qty": false, "line": 2}]',
    '[{"id": "a", "qty": "2", "line": 0}, {"id": "b", "qty": "10", "line": 1}]',
    '[{"id": "a", "qty": 3, "line": 0}, {"id": "b", "qty": null, "line": 1}, {"id": "c", "qty": 4, "line": 2}]',
    '[{"id": "a", "qty": null, "line": 0}]', '[{"id": "a", "qty": [1], "line": 0}, {"id": "b", "qty": 1, "line": 1}]',
    '[{"id": "a", "qty": {"k": 1}, "line": 0}]', '[{"id": "a", "qty": 9223372036854775807, "line": 0}, '
    '{"id": "b", "qty": 9223372036854775807, "line": 1}]', '[{"id": "a", "qty": 18446744073709551615, "line": 0}]',
    '[{"id": "a", "qty": 2, "line": 0}, {"id": "b", "qty": "e", "line": 1}]',
]
REDUCES = ["{count: length(payload), qty: sum(payload[*].qty)}", "sum(payload[*].qty)", "avg(payload[*].qty)",
           "max(payload[*].qty)", "min(payload[*].qty)", "sum(payload[*].line)",
           "[sum(payload[*].qty), avg(payload[*].id)]"]


@pytest.mark.parametrize("source", REDUCES)
@pytest.mark.parametrize("text", PARSED_ROW_LISTS, ids=range(len(PARSED_ROW_LISTS)))
def test_an_aggregate_told_its_rows_are_the_parsers_answers_as_one_that_checks_them(source: str, text: str) -> None:
    # a foreach told that the rows' values are the JSON parser's checks only for bools: the
    # answer, its type and jmespath's error text stay those of the checked way
    from engine import jsonfast

    expr = Expr(source, env={}, secrets={})
    assert expr.reads_payload_only
    expected = repr(_outcome(expr.evaluate, _message(jsonfast.loads(text))))
    for typed in (ROWS, frozenset({"qty"}), frozenset()):
        msg = _message(jsonfast.loads(text))
        assert repr(_outcome(lambda m, t=typed: expr.evaluate_rows(m, ROWS, t), msg)) == expected, typed
        assert repr(_outcome(lambda m, t=typed: expr.evaluate_payload(m.payload, ROWS, t), msg)) == expected, typed
    assert repr(_outcome(lambda m: expr.evaluate_payload(m.payload), _message(jsonfast.loads(text)))) == expected


COLUMNAR = {"{count: length(payload), qty: sum(payload[*].qty)}": frozenset({"qty"}),
            "sum(payload[*].qty)": frozenset({"qty"}), "avg(payload[*].qty)": frozenset({"qty"}),
            "max(payload[*].qty)": frozenset({"qty"}), "min(payload[*].qty)": frozenset({"qty"}),
            "sum(payload[*].line)": frozenset({"line"}), "length(payload)": frozenset(),
            "[sum(payload[*].qty), avg(payload[*].id)]": frozenset({"qty", "id"}),
            "{n: length(payload), top: max(payload[*].id), env: env.REGION}": frozenset({"id"}),
            # any other read of the rows needs the rows
            "[sum(payload[*].qty), payload[*].id]": None, "payload[0].qty": None, "length(payload[*].qty)": None,
            "sum(payload.items[*].qty)": None, "{n: length(payload), v: vars.index}": None, "sum(vars.list)": None}


@pytest.mark.parametrize("source", list(COLUMNAR))
def test_a_reduce_reading_the_rows_by_count_and_aggregates_needs_only_their_columns(source: str) -> None:
    assert Expr(source, env=ENV, secrets={}).columnar == COLUMNAR[source]


@pytest.mark.parametrize("source", [s for s, keys in COLUMNAR.items() if keys is not None])
@pytest.mark.parametrize("text", [*PARSED_ROW_LISTS, "ROW_LISTS"])
def test_a_reduce_given_the_rows_columns_answers_as_one_given_the_rows(source: str, text: str) -> None:
    # the same value, of the same type, or the same error and its text, from the count and the
    # columns as from the rows (told they are plain dicts holding their keys, and whose values
    # are the parser's, or not)
    from engine import jsonfast

    expr = Expr(source, env=ENV, secrets={})
    keys = expr.columnar
    assert keys is not None
    for rows in (ROW_LISTS if text == "ROW_LISTS" else [jsonfast.loads(text)]):
        columns = {key: [row[key] for row in rows] for key in keys}
        for typed in ((None,) if text == "ROW_LISTS" else (None, ROWS, frozenset({"qty"}), frozenset())):
            expected = repr(_outcome(lambda m, t=typed: expr.evaluate_payload(m.payload, ROWS, t), _message(rows)))
            assert expected == repr(_outcome(expr.evaluate, _message(rows)))
            got = repr(_outcome(lambda _m, t=typed, c=columns, n=len(rows): expr.evaluate_columns(n, c, t),
                                _message(None)))
            assert got == expected, (rows, typed)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("payload", SHAPES, ids=range(len(SHAPES)))
def test_an_expression_reading_only_the_payload_answers_on_the_payload_alone(source: str, payload: Any) -> None:
    expr = Expr(source, env=ENV, secrets=SECRETS)
    if not expr.reads_payload_only:
        return
    msg = _message(payload)
    got, expected = _outcome(lambda m: expr.evaluate_payload(m.payload), msg), _outcome(expr.evaluate, msg)
    assert got == expected
    assert repr(got) == repr(expected)


def test_only_an_expression_reading_nothing_but_the_payload_is_evaluated_on_it_alone() -> None:
    payload_only = ["{count: length(payload), qty: sum(payload[*].qty)}", "payload[*].qty", "payload.id == 'x'",
                    "join(',', payload[*].id)", "[payload.id, env.REGION, secret.token]", "`1`"]
    for source in payload_only:
        assert Expr(source, env=ENV, secrets=SECRETS).reads_payload_only, source
    more = ["[payload.id, vars.index]", "sum(vars.list)", "@", "length(@)", 'headers."x-client-id"', "status",
            "payload[?qty > `1`].id", "payload[*].{id: id, q: qty}", "payload | length(@)", "correlation_id",
            "payload.id", "payload"]
    for source in more:  # other roots, the message view, one closure on a Context, or a plain path
        assert not Expr(source, env=ENV, secrets=SECRETS).reads_payload_only, source


def test_the_parsers_numbers_are_told_from_its_bools_by_their_json_text() -> None:
    from engine.expression_code import _no_bools

    assert _no_bools([1, 2, -3, 2.5, 0, 0.0, 9223372036854775807])
    for values in ([1, True], [False], [0, False], [1e300], [1.5e-10, 1]):  # a float with e: tested type by type
        assert not _no_bools(values), values
    assert not _no_bools([2**70])  # beyond orjson's integers: tested type by type
