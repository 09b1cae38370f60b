"""The ${...} expression compiler: values, conditions, templates, XPath, errors at load."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from engine.errors import ExpressionError
from engine.expressions import (
    CompileOptions,
    Expr,
    ExpressionSyntaxError,
    Template,
    compile_condition,
    find_expressions,
)
from engine.message import Message

SOAP = b"""<?xml version="1.0"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<m:buyStocks xmlns:m="http://services.samples"><order><symbol>IBM</symbol><price>1.5</price></order>
<order><symbol>MSFT</symbol><price>2</price></order></m:buyStocks></soapenv:Body></soapenv:Envelope>"""


def json_msg(value: object, **kw: object) -> Message:
    return Message(body=json.dumps(value).encode(), content_type="application/json", **kw)  # type: ignore[arg-type]


def test_reads_json_payload_paths_and_indexes() -> None:
    msg = json_msg({"orders": [{"symbol": "IBM"}, {"symbol": "MSFT"}]})
    assert Expr("payload.orders[0].symbol").evaluate(msg) == "IBM"
    assert Expr("payload.orders[-1].symbol").evaluate(msg) == "MSFT"
    assert Expr("payload.orders[5].symbol").evaluate(msg) is None
    assert Expr("payload.missing.deeper").evaluate(msg) is None


def test_comparisons_follow_jmespath_semantics() -> None:
    msg = json_msg({"n": 1, "flag": True, "s": "IBM"})
    assert Expr("payload.s == 'IBM'").evaluate(msg) is True
    assert Expr("payload.n == `1`").evaluate(msg) is True
    # a boolean is not the number 1, unlike in Python
    assert Expr("payload.flag == `1`").evaluate(msg) is False
    assert Expr("payload.n > `0` && payload.s != 'X'").evaluate(msg) is True
    assert Expr("payload.s < `3`").evaluate(msg) is None


def test_headers_query_path_vars_and_env() -> None:
    msg = Message(headers={"x-route": "a"}, query={"q": "1"}, path_params={"id": "7"})
    msg.vars["user"] = {"name": "ada"}
    options = CompileOptions(env={"REGION": "eu"})
    assert Expr('headers."x-route"').evaluate(msg) == "a"
    assert Expr("query.q").evaluate(msg) == "1"
    assert Expr("path.id").evaluate(msg) == "7"
    assert Expr("vars.user.name").evaluate(msg) == "ada"
    assert Expr("env.REGION", env=options.env).evaluate(msg) == "eu"


def test_full_jmespath_falls_back_to_the_interpreter() -> None:
    msg = json_msg({"orders": [{"symbol": "IBM", "qty": 2}, {"symbol": "MSFT", "qty": 5}]})
    assert Expr("payload.orders[?qty > `3`].symbol").evaluate(msg) == ["MSFT"]
    assert Expr("length(payload.orders)").evaluate(msg) == 2
    assert Expr("upper(payload.orders[1].symbol)").evaluate(msg) == "MSFT"


def test_xpath_over_xml_payload_with_namespaces() -> None:
    msg = Message(body=SOAP, content_type="text/xml")
    assert Expr("xpath('//order[1]/symbol') == 'IBM'").evaluate(msg) is True
    assert Expr("xpath('count(//order)')").evaluate(msg) == 2
    expr = Expr("xpath('//m:buyStocks/order/symbol')", namespaces={"m": "http://services.samples"})
    assert expr.evaluate(msg) == ["IBM", "MSFT"]
    assert expr.uses_payload


def _xpath_value_before(result: object) -> object:
    """xpath_value as it was before its shortcuts: every node's text through itertext()."""
    if isinstance(result, list):
        values = [_xpath_value_before(item) for item in result]
        if not values:
            return None
        return values[0] if len(values) == 1 else values
    if isinstance(result, etree._Element):
        return "".join(result.itertext())
    if isinstance(result, bytes):
        return result.decode()
    if isinstance(result, str):
        return str(result)
    if isinstance(result, float) and result.is_integer():
        return int(result)
    return result


MIXED = (b'<?xml version="1.0"?><!-- top --><r xmlns:m="urn:m"><a id="1">x<!--c-->y<?p q?>z<b/>t</a>'
         b'<a id="2"><![CDATA[<x>]]>&amp;&#233;\xc3\xa9</a><a/><a></a><a> </a>'
         b'<m:a>ns<b>in</b>tail</m:a><c><d><e>deep</e></d>after</c><f>p<!--c-->q</f><g>p<?i x?>q</g><?end pi?></r>')
XPATHS = ["//a", "//f", "//g", "//a[1]", "//a[2]", "//a[5]", "//a[6]", "//b", "//m:a", "//m:a/b", "//c", "//e", "/r",
          "//*", "//a/text()", "//text()", "//@id", "//a[1]/@id", "//nothing", "count(//a)", "string(//a[2])",
          '//a[1] = "xyzt"', "sum(//a/@id)", "//a/@id div 4", "name(/*)", "//comment()", "//processing-instruction()",
          "//a[1]/node()", "/r/node()[last()]"]


@pytest.mark.parametrize("path", XPATHS)
def test_xpath_values_are_what_they_were_before_the_shortcuts(path: str) -> None:
    """A childless element's text read directly, a single result without a list: same values
    as through itertext(); comments and processing instructions, which itertext() refused (an
    internal error before), give their text."""
    msg = Message(body=MIXED, content_type="application/xml")
    root = etree.fromstring(MIXED)
    result = root.xpath(path, namespaces={"m": "urn:m"})
    try:
        expected = _xpath_value_before(result)
    except ValueError:
        values = [node.text or "" if isinstance(node, etree._Comment | etree._ProcessingInstruction)
                  else _xpath_value_before(node) for node in result]
        expected = values[0] if len(values) == 1 else values
        assert any(isinstance(node, etree._Comment | etree._ProcessingInstruction) for node in result)
    got = Expr(f"xpath('{path}')", namespaces={"m": "urn:m"}).evaluate(msg)
    assert got == expected
    assert type(got) is type(expected)


xml_names = st.sampled_from(["a", "b", "c"])
xml_text = st.text(alphabet="xy <&>\u00e9", max_size=3).map(lambda t: t.replace("&", "&amp;").replace("<", "&lt;")
                                                                    .replace(">", "&gt;"))


@st.composite
def xml_trees(draw: st.DrawFn, depth: int = 0) -> str:
    name = draw(xml_names)
    parts = [draw(xml_text)]
    for _ in range(draw(st.integers(0, 3 if depth < 3 else 0))):
        parts.append(draw(st.sampled_from(["<!--k-->", "<?p i?>", "<![CDATA[d]]>"]) | xml_trees(depth + 1)))
        parts.append(draw(xml_text))
    return f"<{name}>{''.join(parts)}</{name}>"


@given(xml_trees(), st.sampled_from(["//a", "//b[1]", "//c/a", "/*", "//*", "//b/text()", "//a[2]/b"]))
def test_xpath_values_match_itertext_on_generated_documents(document: str, path: str) -> None:
    body = document.encode()
    got = Expr(f"xpath('{path}')").evaluate(Message(body=body, content_type="text/xml"))
    assert got == _xpath_value_before(etree.fromstring(body).xpath(path))


def test_xpath_strings_do_not_hold_on_to_the_document() -> None:
    """Text and attribute results are plain str, not lxml's smart strings (which keep a
    reference to their element, and so the parsed tree, for as long as the value lives)."""
    msg = Message(body=SOAP, content_type="text/xml")
    for path in ("//order[1]/symbol/text()", "string(//order[2]/symbol)", "//order[1]/symbol"):
        assert type(Expr(f"xpath('{path}')").evaluate(msg)) is str
    assert type(Expr("xpath(payload, '//order[2]/price/text()')").evaluate(msg)) is str


def test_xpath_is_compiled_at_load() -> None:
    with pytest.raises(ExpressionSyntaxError, match="invalid XPath"):
        Expr("xpath('//order[')")
    with pytest.raises(ExpressionSyntaxError, match="quoted literal"):
        Expr("xpath(payload.x)")


def test_xpath_on_json_payload_is_a_clear_error() -> None:
    with pytest.raises(ExpressionError, match="needs an XML payload"):
        Expr("xpath('//a')").evaluate(json_msg({"a": 1}))


def test_unknown_roots_and_functions_fail_at_load() -> None:
    with pytest.raises(ExpressionSyntaxError, match="unknown name 'paylod'"):
        Expr("paylod.x")
    with pytest.raises(ExpressionSyntaxError, match="unknown function nosuch"):
        Expr("nosuch(payload)")
    with pytest.raises(ExpressionSyntaxError, match="invalid expression"):
        Expr("payload.[")


def test_header_only_expression_never_touches_the_body() -> None:
    expr = Expr('headers."x-route" == \'a\'')
    assert not expr.uses_payload
    msg = Message(body=b"{not json", content_type="application/json", headers={"x-route": "a"})
    assert expr.evaluate(msg) is True


def test_template_keeps_type_of_a_whole_expression_and_renders_text_otherwise() -> None:
    msg = json_msg({"n": 3, "tags": ["a"]})
    assert Template("${payload.n}").render(msg) == 3
    assert Template("n=${payload.n}, tags=${payload.tags}").render(msg) == 'n=3, tags=["a"]'
    assert Template({"count": "${payload.n}", "list": ["x", "${payload.tags[0]}"]}).render(msg) == {
        "count": 3, "list": ["x", "a"]}
    assert Template("price $${literal}").render(msg) == "price ${literal}"
    assert Template("plain").is_constant


def test_find_expressions_handles_braces_and_quotes() -> None:
    text = "a ${payload.{x: y}} b ${'}'} c"
    assert [source for _, _, source in find_expressions(text)] == ["payload.{x: y}", "'}'"]
    with pytest.raises(ExpressionSyntaxError, match="unclosed"):
        find_expressions("x ${payload.a")


def test_condition_accepts_with_or_without_braces() -> None:
    msg = json_msg({"ok": True})
    assert compile_condition("${payload.ok}").is_true(msg)
    assert compile_condition("payload.ok").is_true(msg)
    with pytest.raises(ExpressionSyntaxError, match="one expression"):
        compile_condition("x ${payload.ok}")


text_without_dollar = st.text(alphabet=st.characters(blacklist_characters="$"), max_size=40)


@given(text_without_dollar)
def test_text_without_expressions_renders_unchanged(text: str) -> None:
    assert Template(text).render(Message()) == text


@given(st.lists(st.text(alphabet="abcxyz ", max_size=8), min_size=1, max_size=4))
def test_interpolating_variables_joins_their_text(values: list[str]) -> None:
    msg = Message()
    for i, value in enumerate(values):
        msg.vars[f"v{i}"] = value
    template = Template("-".join(f"${{vars.v{i}}}" for i in range(len(values))))
    assert template.render(msg) == "-".join(values)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.from_regex(r"[a-z]{1,4}", fullmatch=True), inner, max_size=3), max_leaves=10))
def test_whole_expression_returns_the_value_unchanged(value: object) -> None:
    msg = Message()
    msg.vars["v"] = value
    assert Template("${vars.v}").render(msg) == value
