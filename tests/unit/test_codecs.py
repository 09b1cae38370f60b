"""The JSON and XML codecs, JSON<->XML conversion and XSLT, against hostile and odd input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from engine import jsonfast
from engine.convert import json_to_xml, xml_name, xml_to_json
from engine.errors import FlowError, MalformedBody
from engine.xmlsafe import parse_xml, serialize_xml
from engine.xslt import XsltCompileError, compile_xslt

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "shared" / "bench" / "lib"))

HOSTILE_XML = {
    "billion laughs": b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                      b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>',
    "xxe file": b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>',
    "xxe network": b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "http://127.0.0.1:9/x">]><a>&x;</a>',
    "parameter entity": b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><a/>',
    "external dtd": b'<?xml version="1.0"?><!DOCTYPE a SYSTEM "http://127.0.0.1:9/a.dtd"><a/>',
    "quadratic blowup": b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "' + b"x" * 10000 + b'">]><a>'
                        + b"&x;" * 1000 + b"</a>",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_XML))
def test_hostile_xml_is_refused(name: str) -> None:
    with pytest.raises(MalformedBody, match="DOCTYPE is refused"):
        parse_xml(HOSTILE_XML[name])


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "empty"), (b"<a>", "line 1"), (b"<a></b>", "line 1"), (b"<a>&undefined;</a>", "not defined"),
    (b"\xff\xfe<a/>", "malformed XML"), (b"not xml", "malformed XML"),
])
def test_malformed_xml_says_where(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        parse_xml(body)
    assert reason in str(caught.value)
    assert caught.value.status == 400


def test_a_doctype_in_text_after_the_root_is_content_not_an_attack() -> None:
    root = parse_xml(b"<a><![CDATA[<!DOCTYPE x>]]></a>")
    assert root.text == "<!DOCTYPE x>"


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"a": ', "line 1"), (b'{"a": NaN}', "malformed JSON"), (b'{"a": "\xff"}', "UTF-8"),
    (b"[" * 100_000, "malformed JSON"), (b'{"a": 1,}', "trailing comma"), (b"", "malformed JSON"),
])
def test_malformed_json_is_a_400_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        jsonfast.loads(body)
    assert reason in str(caught.value)


def test_json_round_trip_is_compact() -> None:
    assert jsonfast.dumps({"a": [1, 2.5, None, True], 3: "x"}) == b'{"a":[1,2.5,null,true],"3":"x"}'


names = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=10)
documents = st.recursive(texts, lambda inner: st.dictionaries(names, inner, min_size=1, max_size=4), max_leaves=12)


@given(documents)
def test_json_to_xml_to_json_round_trips_objects_of_strings(value: object) -> None:
    element = parse_xml(serialize_xml(json_to_xml(value, root="doc")))
    assert xml_to_json(element) == {"doc": value}


def test_xml_to_json_convention() -> None:
    element = parse_xml(b'<s:Env xmlns:s="urn:s"><s:Body a="1"><o>x</o><o>y</o><one>1</one>tail</s:Body></s:Env>')
    assert xml_to_json(element) == {"s:Env": {"s:Body": {"@a": "1", "o": ["x", "y"], "one": "1", "#text": "tail"}}}
    stripped = xml_to_json(element, arrays=["one"], strip_namespaces=True, infer_types=True)
    assert stripped == {"Env": {"Body": {"@a": 1, "o": ["x", "y"], "one": [1], "#text": "tail"}}}


def test_json_to_xml_names_lists_and_attributes() -> None:
    element = json_to_xml({"order": {"@id": 7, "line": [{"sku": "a"}, {"sku": "b"}], "2nd key": None, "ok": True}})
    assert serialize_xml(element).endswith(
        b'<root><order id="7"><line><sku>a</sku></line><line><sku>b</sku></line>'
        b"<_2nd_key/><ok>true</ok></order></root>")
    assert xml_name("xmlish") == "_xmlish"
    assert etree.tostring(json_to_xml([1, 2], root="list")) == b"<list><item>1</item><item>2</item></list>"


# the shape of the mediation benchmark's SOAP request (../shared/bench/lib/payloads.py), inline
# so the test does not depend on the benchmark's folder being beside the clone
BENCH_SOAP = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<soapenv:Envelope '
    b'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Header><routing '
    b'xmlns="http://testurl.org">xadmin;server1;community#1.0##</routing></soapenv:Header><soapenv:Body>'
    b'<m:buyStocks xmlns:m="http://services.samples">\n'
    + b"".join(b"<order><symbol>%s</symbol><buyerID>b%d</buyerID><price>%d.5</price><volume>%d</volume></order>\n"
               % (symbol, n, n, n * 10) for n, symbol in enumerate([b"IBM", b"SUN", b"MSFT"], 1))
    + b"</m:buyStocks></soapenv:Body></soapenv:Envelope>"
)


def test_bench_stylesheet_turns_orders_into_trades() -> None:
    stylesheet = compile_xslt(Path(__file__).resolve().parents[2] / "flows" / "bench" / "transform.xsl")
    body = BENCH_SOAP
    result = stylesheet.apply(parse_xml(body))
    assert result.tag == "trades"
    assert len(result) == body.count(b"<order>")
    assert result[0].findtext("ticker") == "IBM"


def test_xslt_compile_errors_carry_the_stylesheet_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.xsl"
    path.write_text('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">\n\n'
                    '<xsl:template match="/"><xsl:value-of select="//["/></xsl:template>\n</xsl:stylesheet>\n')
    with pytest.raises(XsltCompileError) as caught:
        compile_xslt(path)
    assert caught.value.line == 3


def test_xslt_cannot_read_files(tmp_path: Path) -> None:
    path = tmp_path / "steal.xsl"
    path.write_text('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
                    '<xsl:template match="/"><out><xsl:copy-of select="document(\'file:///etc/passwd\')"/></out>'
                    '</xsl:template></xsl:stylesheet>')
    with pytest.raises(FlowError) as caught:
        compile_xslt(path).apply(parse_xml(b"<a/>"))
    assert "root:" not in str(caught.value)
