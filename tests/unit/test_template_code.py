"""A template compiled to one generated function (engine/template_code.py) answers as the closures
it replaces: the same values of the same types, fresh lists and dicts per render, the same first
error, for every shape of message on the way."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree

from engine.errors import ExpressionError
from engine.expressions import CompileOptions, ExpressionSyntaxError, Template
from engine.message import JSON, XML, Message

OPTIONS = CompileOptions(env={"REGION": "eu"}, secrets={})


def _message(payload: Any, kind: str = JSON) -> Message:
    msg = Message(headers={"x-client-id": "c-1"}, path_params={"id": "42"}, query={"page": "2"},
                  correlation_id="corr-1")
    msg.set_payload(payload, kind)
    msg.vars = {"customer": {"name": "Ada", "tags": ["a"]}, "index": 3, "none": None, "ratio": 0.5, "ok": True}
    msg.attributes["auth"] = {"sub": "u-1"}
    return msg


def _closures(value: Any) -> Any:
    """The template as the closures render it (what the generated function replaces)."""
    template = Template.__new__(Template)
    template.expressions = []
    return template._compile(value, OPTIONS)


TEMPLATES: list[Any] = [
    {"id": "${payload.id}", "qty": "${payload.qty}", "line": "${vars.index}"},  # the split benchmark's item
    "${payload}", "${payload.a.b.c}", "${payload.missing.deeper}", "${vars.none.x}", "${vars.index.x}",
    "order ${payload.id} of ${vars.customer.name}: ${payload.a} ${vars.ok} ${vars.none} ${vars.ratio}",
    {"${payload.id}": "${payload.qty}", "k-${path.id}": [1, "${query.page}", 2.5, None, True, {"n": "${status}"}]},
    {3: "${method}", None: "${correlation_id}", True: "${headers.\"x-client-id\"}", 1.5: "x"},
    {"$${literal}": "$${also} ${payload.id}", "plain": "text", "nested": {"list": [[], {}], "deep": [["${payload}"]]}},
    ["${vars.customer}", "${auth.sub}", "${tls.subject}", "${client.address}", "${params.x}", "${error.code}"],
    {"env": "${env.REGION}", "fn": "${length(vars.customer.tags)}", "or": "${payload.id || 'none'}"},
    {"first": "${vars.index}", "then": "${payload.id}", "again": "${payload.qty}"},  # the payload read second
    "${payload.id}${payload.qty}", "a${payload.id}", "${payload.id}b", "",
]
PAYLOADS: list[Any] = [{"id": 7, "qty": 2.5, "a": {"b": {"c": [1, 2]}}}, {"id": None, "a": "text"},
                       {"id": "x", "qty": {"k": [1]}, "a": {"b": None}}, [1, 2, 3], "plain", 0, None, True]


@pytest.mark.parametrize("value", TEMPLATES, ids=range(len(TEMPLATES)))
@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_the_generated_function_answers_as_the_closures(value: Any, payload: Any) -> None:
    template = Template(value, OPTIONS)
    msg = _message(payload)
    got, expected = template.render(msg), _closures(value)(msg)
    assert got == expected
    assert repr(got) == repr(expected)  # the same types inside: 2 not 2.0, "true" not True


def test_each_render_gives_fresh_lists_and_dicts() -> None:
    template = Template({"ids": ["${payload.id}", []], "fixed": {"a": [1]}}, OPTIONS)
    msg = _message({"id": 1})
    first, second = template.render(msg), template.render(msg)
    assert first == second == {"ids": [1, []], "fixed": {"a": [1]}}
    first["ids"][1].append("changed")
    first["fixed"]["a"].append(2)
    assert second == {"ids": [1, []], "fixed": {"a": [1]}}
    assert template.render(msg) == {"ids": [1, []], "fixed": {"a": [1]}}


def test_an_xml_payload_read_by_xpath_and_by_fields() -> None:
    order = etree.fromstring(b"<order><id>1</id><qty>2</qty></order>")
    value = {"id": "${xpath('/order/id')}", "field": "${payload.id}", "text": "qty ${xpath('//qty')}"}
    msg = _message(order, XML)
    assert Template(value, OPTIONS).render(msg) == _closures(value)(msg) == {"id": "1", "field": None,
                                                                              "text": "qty 2"}


def test_the_first_error_is_the_closures_first_error() -> None:
    # length() of a number fails; the payload read after it must not be what raises first
    value = {"n": "${length(vars.index)}", "id": "${payload.id}"}
    broken = Message(body=b"{not json", content_type="application/json")
    broken.vars = {"index": 3}
    for render in (Template(value, OPTIONS).render, _closures(value)):
        with pytest.raises(ExpressionError, match="length"):
            render(broken)
    # a payload read first, and the body does not parse: both raise the parse error
    value = {"id": "${payload.id}", "n": "${length(vars.index)}", "again": "${payload.qty}"}
    errors = []
    for render in (Template(value, OPTIONS).render, _closures(value)):
        with pytest.raises(Exception) as caught:
            render(broken)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]


def test_a_syntax_error_points_where_the_closures_pointed() -> None:
    for text in ("a ${payload.[} b", "${payload.[}", "x ${nosuch.root}"):
        offsets = []
        for compile_it in (lambda t: Template(t, OPTIONS), _closures):
            with pytest.raises(ExpressionSyntaxError) as caught:
                compile_it(text)
            offsets.append((str(caught.value), caught.value.offset))
        assert offsets[0] == offsets[1], text


def test_a_structure_nested_too_deep_for_the_generator_keeps_the_closures() -> None:
    value: Any = "${payload.id}"
    for _ in range(60):
        value = {"n": [value]}
    template = Template(value, OPTIONS)
    rendered = template.render(_message({"id": 9}))
    for _ in range(60):
        rendered = rendered["n"][0]
    assert rendered == 9
    assert len(template.expressions) == 1


def test_names_and_texts_of_the_file_never_become_code() -> None:
    # keys, texts and field names that look like Python stay data
    value = {"__import__('os')": "') + str(1/0) + ('", "k": "${payload.\"a'b\\\"c\"}",
             "t": "\\n'''\"\"\" ${payload.\"x y\"}"}
    msg = _message({"a'b\"c": 1, "x y": 2})
    assert Template(value, OPTIONS).render(msg) == _closures(value)(msg) == \
        {"__import__('os')": "') + str(1/0) + ('", "k": 1, "t": "\\n'''\"\"\" 2"}


ITEMS: list[Any] = [{"id": 7, "qty": 2.5, "a": {"b": {"c": [1, 2]}}}, {"id": None}, [1, 2], "plain", 0, None, True,
                    {"id": "x", "a": "text"}, etree.fromstring(b"<item><id>1</id></item>")]


@pytest.mark.parametrize("value", TEMPLATES, ids=range(len(TEMPLATES)))
def test_all_items_at_once_answer_as_one_message_per_item(value: Any) -> None:
    # what a foreach's one-payload-step path renders (Template.for_items) against the template
    # rendered on a fork of the message per item (payload: the item, vars.index: its position)
    from engine.steps._fork import fork

    template = Template(value, OPTIONS)
    made = template.for_items("index")
    msg = _message({"items": "the parent's payload"})
    reads_more = any(e.fields is None or (len(e.fields) == 1 and e.fields[0] not in ("payload", "status", "method",
                                                                                     "correlation_id"))
                     for e in template.expressions)
    if reads_more or template.is_constant:  # not only paths of fields, or a whole root the fork copies
        assert made is None
        return
    assert made is not None
    render_items, containers = made
    expected = []
    for index, item in enumerate(ITEMS):
        branch = fork(msg, item, with_payload=True)
        branch.vars["index"] = index
        expected.append(template.render(branch))
    got = render_items(msg, ITEMS)
    assert repr(got) == repr(expected)
    assert containers == all(isinstance(result, (dict, list)) for result in got)


def test_all_items_at_once_read_the_index_variable_they_are_given() -> None:
    template = Template({"at": "${vars.line}", "outer": "${vars.index}", "deeper": "${vars.line.x}"}, OPTIONS)
    made = template.for_items("line")
    assert made is not None
    assert made[0](_message(None), ["a", "b"]) == [{"at": 0, "outer": 3, "deeper": None},
                                                        {"at": 1, "outer": 3, "deeper": None}]


def test_all_items_at_once_by_subscript_until_an_item_lacks_a_field() -> None:
    # plain dict items are read by subscript; an item lacking a field (or not a dict) answers as
    # the .get reads would, and so do all renders after it
    from engine.steps._fork import fork

    template = Template({"id": "${payload.id}", "qty": "${payload.qty}", "deep": "${payload.a.b}",
                         "line": "${vars.index}"}, OPTIONS)
    made = template.for_items("index")
    assert made is not None
    render_items = made[0]
    msg = _message({"items": "the parent's payload"})

    def one_message_each(items: list[Any]) -> list[Any]:
        expected = []
        for index, item in enumerate(items):
            branch = fork(msg, item, with_payload=True)
            branch.vars["index"] = index
            expected.append(template.render(branch))
        return expected

    full = [{"id": n, "qty": n * 1.5, "a": {"b": [n]}} for n in range(3)] + [{"id": 9, "qty": 0, "a": "text"}]
    lacking = [{"id": 1, "qty": 2, "a": {}}, {"id": 2, "a": {"b": 1}}, [3], None]
    for items in (full, full, lacking, full, lacking):
        assert repr(render_items(msg, items)) == repr(one_message_each(items))


PARSED_ITEMS = [  # each as the JSON parser gives it: full dicts; with items that are no dict; lacking fields
    '[{"id": 1, "qty": 2, "a": {"b": 3}}, {"id": "x", "qty": null, "a": "text"}]',
    '[{"id": 7, "qty": 2.5, "a": {"b": {"c": [1, 2]}}}, [1, 2], "plain", 0, null, true, false, 1.5e300, '
    '{"id": 1, "qty": 2, "a": {"b": 3}}]',
    '[{"id": 7, "qty": 2.5, "a": {"b": 1}}, {"id": null}, {}, [1], {"id": 1, "qty": 2, "a": {"b": 3}}]', "[]"]


@pytest.mark.parametrize("value", TEMPLATES, ids=range(len(TEMPLATES)))
@pytest.mark.parametrize("text", PARSED_ITEMS, ids=range(len(PARSED_ITEMS)))
def test_items_of_the_json_parser_at_once_answer_as_one_message_per_item(value: Any, text: str) -> None:
    # told that the items are the JSON parser's (plain_), the render subscripts them untested;
    # the answers stay those of a message per item, for items that are no dict or lack a field
    import orjson

    from engine.steps._fork import fork

    template = Template(value, OPTIONS)
    made = template.for_items("index")
    if made is None:
        return
    render_items = made[0]
    msg = _message({"items": "the parent's payload"})
    items = orjson.loads(text)
    expected = []
    for index, item in enumerate(items):
        branch = fork(msg, item, with_payload=True)
        branch.vars["index"] = index
        expected.append(template.render(branch))
    for plain in (True, True, False, True):
        assert repr(render_items(msg, items, plain)) == repr(expected)


def test_a_split_rendered_from_a_mapping_tells_which_keys_hold_values_of_the_item() -> None:
    made = Template({"id": "${payload.id}", "all": "${payload}", "deep": "${payload.a.b}", "line": "${vars.index}",
                     "text": "n ${payload.id}", "c": 1, "tenant": "${vars.tenant}", "s": "${status}"},
                    OPTIONS).for_items("index")
    assert made is not None
    assert getattr(made[0], "item_keys", None) == frozenset({"id", "all", "deep"})


def test_a_message_says_when_its_payload_is_a_json_body_no_one_has_read() -> None:
    # what a foreach asks before its items are read: are they about to be the JSON parser's own?
    async def chunks() -> Any:
        yield b"{}"

    fresh = Message(b'{"items": [1]}', content_type="application/json")
    assert fresh.json_unread()
    assert fresh.payload == {"items": [1]}
    assert not fresh.json_unread()  # read once: a step may have changed it since
    assert Message(b'{"a": 1}', content_type="application/problem+json").json_unread()
    assert not Message(b"<a/>", content_type="application/xml").json_unread()
    assert not Message(b"a", content_type="text/plain").json_unread()
    set_one = Message(b'{"a": 1}', content_type="application/json")
    set_one.set_payload({"a": 1}, JSON)
    assert not set_one.json_unread()
    assert not Message(None, chunks(), "application/json").json_unread()  # still streaming


COLUMN_TEMPLATES: list[Any] = [
    {"id": "${payload.id}", "qty": "${payload.qty}", "line": "${vars.index}"},  # the split benchmark's item
    {"deep": "${payload.a.b}", "c": 1, "f": 2.5, "t": "text", "n": None, 3: "${method}", "s": "${status}",
     "tenant": "${vars.customer.name}", "all": "${payload}", "$${x}": "$${y}"},
]


@pytest.mark.parametrize("value", COLUMN_TEMPLATES, ids=range(len(COLUMN_TEMPLATES)))
@pytest.mark.parametrize("text", PARSED_ITEMS, ids=range(len(PARSED_ITEMS)))
def test_a_column_of_all_items_at_once_is_that_key_of_every_row(value: Any, text: str) -> None:
    # a foreach whose reduce reads only some columns renders those alone: each is exactly the
    # key's values of the rows render_items makes, for items that are no dict or lack a field,
    # told that the items are the parser's or not, and after a KeyError made render_items slow
    import orjson

    made = Template(value, OPTIONS).for_items("index")
    assert made is not None
    render_items = made[0]
    columns = vars(render_items)["columns"]
    assert set(columns) == vars(render_items)["row_keys"]
    msg = _message({"items": "the parent's payload"})
    for items in (orjson.loads(text), ITEMS):
        for plain in (True, False, True):
            if items is ITEMS and plain:
                continue  # ITEMS are not all the parser's values (an XML element)
            rows = render_items(msg, items, plain)
            for key, column in columns.items():
                assert repr(column(msg, items, plain)) == repr([row[key] for row in rows]), key


def test_a_template_whose_unread_keys_could_raise_has_no_columns() -> None:
    # text around a ${...} takes its value's text, which could fail: such a key cannot be left out
    for value in ({"id": "${payload.id}", "text": "n ${payload.id}"}, {"id": "${payload.id}", "n": {"k": 1}},
                  {"id": "${payload.id}", "l": ["${payload.qty}"]}):
        made = Template(value, OPTIONS).for_items("index")
        assert made is not None and "columns" not in vars(made[0])
