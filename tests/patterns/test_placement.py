"""set with action (WSO2's enrich actions): a value placed in the JSON or XML payload as a
replacement, a child or a sibling, through the engine's HTTP front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.support.engine import assert_step_load_error, facade_client, write_flows

pytestmark = pytest.mark.anyio


def _flow(step: str, *, namespaces: str = "") -> str:
    return f"""
    flows:
      place:
        {namespaces}
        source: {{http: {{method: POST, path: /place}}}}
        steps:
          - set: {step}
    """


async def _post_json(tmp_path: Path, step: str, body: Any) -> Any:
    write_flows(tmp_path, _flow(step))
    async with facade_client(tmp_path) as client:
        return await client.post("/place?sku=B-2", json=body)


async def _post_xml(tmp_path: Path, step: str, body: str, namespaces: str = "") -> Any:
    write_flows(tmp_path, _flow(step, namespaces=namespaces))
    async with facade_client(tmp_path) as client:
        return await client.post("/place?sku=B-2", content=body, headers={"content-type": "application/xml"})


def _xml(answer: Any) -> str:
    return etree.tostring(etree.fromstring(answer.content)).decode()


@pytest.mark.parametrize(("step", "body", "expected"), [
    # child: appended to an array, keys added to an object
    ("{path: $.lines, action: child, value: {sku: '${query.sku}', qty: 1}}",
     {"lines": [{"sku": "A-1", "qty": 3}]}, {"lines": [{"sku": "A-1", "qty": 3}, {"sku": "B-2", "qty": 1}]}),
    ("{path: $.customer, action: child, value: {tier: gold}}",
     {"customer": {"id": 7}}, {"customer": {"id": 7, "tier": "gold"}}),
    # sibling: after the element in its array, or keys beside the member in its object
    ("{path: '$.lines[0]', action: sibling, value: {sku: '${query.sku}'}}",
     {"lines": [{"sku": "A-1"}, {"sku": "C-3"}]}, {"lines": [{"sku": "A-1"}, {"sku": "B-2"}, {"sku": "C-3"}]}),
    ("{path: $.customer, action: sibling, value: {channel: web}}",
     {"customer": {"id": 7}}, {"customer": {"id": 7}, "channel": "web"}),
    # every match gets its own copy: after each element of the array, in order
    ("{path: '$.lines[*]', action: sibling, value: {gap: true}}",
     {"lines": [1, 2]}, {"lines": [1, {"gap": True}, 2, {"gap": True}]}),
    ("{path: '$.orders[*].lines', action: child, value: {sku: x}}",
     {"orders": [{"lines": []}, {"lines": [{"sku": "y"}]}]},
     {"orders": [{"lines": [{"sku": "x"}]}, {"lines": [{"sku": "y"}, {"sku": "x"}]}]}),
    # replace stays what set: {path} always did
    ("{path: $.customer.tier, action: replace, value: gold}",
     {"customer": {"id": 7}}, {"customer": {"id": 7, "tier": "gold"}}),
])
async def test_a_json_value_is_placed_as_a_child_or_a_sibling(tmp_path: Path, step: str, body: Any,
                                                              expected: Any) -> None:
    answer = await _post_json(tmp_path, step, body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == expected


async def test_placed_copies_are_separate_values(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    flows:
      place:
        source: {http: {method: POST, path: /place}}
        steps:
          - set: {path: '$.lists[*]', action: child, value: {n: 0}}
          - set: {path: '$.lists[0][0].n', value: 1}
    """)
    async with facade_client(tmp_path) as client:
        answer = await client.post("/place", json={"lists": [[], []]})
    assert answer.json() == {"lists": [[{"n": 1}], [{"n": 0}]]}


@pytest.mark.parametrize(("step", "body", "detail"), [
    ("{path: $.name, action: child, value: x}", {"name": "Ada"},
     "set at $.name is a string: a child goes into an array or an object"),
    ("{path: $.customer, action: child, value: x}", {"customer": {}},
     "set at $.customer is an object: a child of it must be an object (its keys are added), not a string"),
    ("{path: $.missing, action: child, value: {a: 1}}", {"other": 1},
     "set at $.missing: nothing there to add a child to"),
    ("{path: $, action: sibling, value: {a: 1}}", {"other": 1},
     "is the whole payload: it has no siblings"),
])
async def test_a_request_that_cannot_take_the_value_is_a_422_that_says_why(tmp_path: Path, step: str, body: Any,
                                                                          detail: str) -> None:
    answer = await _post_json(tmp_path, step, body)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert detail in answer.json()["detail"]


@pytest.mark.parametrize(("step", "body", "expected"), [
    ("{xpath: /order/lines, action: child, value: '<line sku=\"${query.sku}\">1</line>'}",
     "<order><lines><line sku=\"A-1\">3</line></lines></order>",
     '<order><lines><line sku="A-1">3</line><line sku="B-2">1</line></lines></order>'),
    ("{xpath: /order/id, action: sibling, value: '<channel>web</channel><seen/>'}",
     "<order><id>7</id><total>5</total></order>",
     "<order><id>7</id><channel>web</channel><seen/><total>5</total></order>"),
    ("{xpath: /order/total, action: replace, value: '<amount currency=\"EUR\">5</amount>'}",
     "<order><id>7</id><total>5</total></order>",
     '<order><id>7</id><amount currency="EUR">5</amount></order>'),
    # text: the element's content replaced, or text appended
    ("{xpath: /order/id, value: '${query.sku}'}",
     "<order><id>7<old/></id></order>", "<order><id>B-2</id></order>"),
    ("{xpath: /order/note, action: child, value: ' (checked)'}",
     "<order><note>ok</note></order>", "<order><note>ok (checked)</note></order>"),
    # every matching element gets its own copy
    ("{xpath: //line, action: child, value: '<ok/>'}",
     "<order><line/><line/></order>", "<order><line><ok/></line><line><ok/></line></order>"),
    # the root replaced by one element
    ("{xpath: /order, value: '<cancelled id=\"7\"/>'}", "<order/>", '<cancelled id="7"/>'),
])
async def test_an_xml_value_is_placed_as_a_replacement_a_child_or_a_sibling(tmp_path: Path, step: str, body: str,
                                                                           expected: str) -> None:
    answer = await _post_xml(tmp_path, step, body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/xml")
    assert _xml(answer) == expected


async def test_a_requests_text_never_becomes_markup(tmp_path: Path) -> None:
    write_flows(tmp_path, _flow("{xpath: /order, action: child, value: '<note>${payload.comment}</note>'}"))
    write_flows(tmp_path, """
    flows:
      place:
        source: {http: {method: POST, path: /place}}
        steps:
          - set: {var: comment, value: '${query.c}'}
          - set: {xpath: /order, action: child, value: '<note by="${query.c}">${vars.comment}</note>'}
          - set: {xpath: /order, action: child, value: '${query.c}'}
    """)
    hostile = '"/><admin>yes</admin><x a="'
    async with facade_client(tmp_path) as client:
        answer = await client.post("/place", params={"c": hostile}, content="<order/>",
                                   headers={"content-type": "application/xml"})
    root = etree.fromstring(answer.content)
    assert root.find("admin") is None and root.find(".//admin") is None
    note = root.find("note")
    assert note is not None and note.text == hostile and note.get("by") == hostile
    assert note.tail == hostile  # the text value appended after the last child, as text


async def test_namespaced_xpaths_and_markup_use_the_flows_prefixes(tmp_path: Path) -> None:
    answer = await _post_xml(tmp_path, "{xpath: '/o:order', action: child, value: '<o:line>1</o:line>'}",
                             '<order xmlns="urn:orders"/>', namespaces="namespaces: {o: 'urn:orders'}")
    assert answer.status_code == 200, answer.text
    assert _xml(answer) == '<order xmlns="urn:orders"><line>1</line></order>'
    assert etree.fromstring(answer.content)[0].tag == "{urn:orders}line"


@pytest.mark.parametrize(("step", "body", "status", "detail"), [
    ("{xpath: /order/none, action: child, value: '<a/>'}", "<order/>", 422, "set at /order/none: no element there"),
    ("{xpath: /order/@id, action: child, value: '<a/>'}", "<order id='1'/>", 422,
     "selects text or attributes; it must select elements"),
    ("{xpath: /order, action: sibling, value: '<a/>'}", "<order/>", 422,
     "is the document's root: it has no siblings"),
    ("{xpath: /order, value: '<a/><b/>'}", "<order/>", 422, "it is replaced by one element, not 2"),
])
async def test_an_xml_request_that_cannot_take_the_value_is_a_422(tmp_path: Path, step: str, body: str,
                                                                 status: int, detail: str) -> None:
    answer = await _post_xml(tmp_path, step, body)
    assert answer.status_code == status
    assert detail in answer.json()["detail"]


async def test_an_xpath_over_json_is_refused_as_the_wrong_media_type(tmp_path: Path) -> None:
    answer = await _post_json(tmp_path, "{xpath: /order, action: child, value: '<a/>'}", {"order": 1})
    assert answer.status_code == 415
    assert answer.json()["detail"] == "set at /order needs an XML body; the request's is application/json"


@pytest.mark.parametrize(("step", "message", "where"), [
    ("{var: x, value: 1, action: child}", "action places a value in the payload: it goes with path or xpath", "5:41"),
    ("{xpath: '/order[', value: '<a/>'}", "invalid XPath '/order['", "5:22"),
    ("{xpath: /order, value: '<a>'}",
     "the XML template is not well-formed: Opening and ending tag mismatch: a line 1 and value", "5:37"),
    ("{xpath: /order, value: '<a/> and text'}", "the value mixes markup and text", "5:37"),
    ("{xpath: /order, path: $.a, value: 1}", "set one of var, header, path or xpath per step, not path and xpath",
     "5:14"),
    ("{path: $.a, action: append, value: 1}", "expected one of replace, child, sibling in action", "5:34"),
])
def test_a_wrong_placement_is_a_load_error_at_its_place(tmp_path: Path, step: str, message: str,
                                                         where: str) -> None:
    assert_step_load_error(tmp_path, "set", step, message, where)
