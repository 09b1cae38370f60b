"""JMESPath queries compiled to closures answer exactly what jmespath's interpreter answers."""

from __future__ import annotations

from typing import Any

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.expressions import _OPTIONS, compile_query

QUERIES = [
    "{trades: orders[*].{ticker: symbol, buyer: buyerID, price: price, qty: volume}}",
    "orders[0].symbol",
    "orders[-1]",
    "orders[5]",
    "orders[*].symbol",
    "orders[].items[]",
    "orders[].items[].sku",
    "orders[?symbol == 'IBM'].price",
    "orders[?symbol != 'IBM'] | length(@)",
    "orders[?flag].symbol",
    "orders[?price > `10`].symbol",
    "orders[0:2].symbol",
    "map.*.symbol",
    "[orders[0].symbol, missing, `3`]",
    "orders | [0]",
    "a.b.c",
    "a || b",
    "a && b",
    "!a",
    "@",
    "`{\"k\": [1, 2]}`",
    "orders[*].[symbol, price]",
    "orders[*].{s: symbol, inner: items[*].sku}",
    "upper(orders[0].symbol)",
    "orders[?flag == `true`].symbol",
    "orders[?price == `1`].symbol",
]

DOCUMENTS: list[Any] = [
    {"orders": [{"symbol": "IBM", "buyerID": "a", "price": 12.5, "volume": 3, "flag": True,
                 "items": [{"sku": 1}, {"sku": 2}]},
                {"symbol": "MSFT", "price": 1, "flag": False, "items": [[{"sku": 3}]]},
                {"symbol": "X", "price": True, "flag": 0, "items": "no"}],
     "map": {"x": {"symbol": "A"}, "y": {"symbol": None}, "z": 3},
     "a": {"b": {"c": 0}}, "b": []},
    {"orders": "not a list", "map": [1, 2], "a": None, "b": "x"},
    {"orders": [], "a": {"b": [1]}, "b": {}},
    [1, 2, 3],
    None,
    "text",
    {"orders": [None, 1, [], {"symbol": ["IBM"]}]},
]


def _interpreted(query: str, document: Any) -> Any:
    return jmespath.search(query, document, options=_OPTIONS)


@pytest.mark.parametrize("query", QUERIES)
def test_compiled_query_matches_the_interpreter(query: str) -> None:
    compiled = compile_query(query)
    for document in DOCUMENTS:
        try:
            expected = _interpreted(query, document)
        except jmespath.exceptions.JMESPathError:
            with pytest.raises(jmespath.exceptions.JMESPathError):
                compiled(document)
            continue
        assert compiled(document) == expected, (query, document)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["IBM", "", "a"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["orders", "symbol", "price", "items", "a", "b"]), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(document=JSON, query=st.sampled_from(QUERIES))
def test_compiled_query_matches_on_any_document(document: Any, query: str) -> None:
    try:
        expected = _interpreted(query, document)
    except jmespath.exceptions.JMESPathError:
        return
    assert compile_query(query)(document) == expected
