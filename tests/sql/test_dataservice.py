"""Data services on a real PostgreSQL: the inventory example's resource with keyset paging, and
the OpenAPI export describing every route of a resource with its schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from deploy.openapi import openapi_document
from engine.loader import LoadErrors, load_project
from tests.support.engine import REPO, facade_client, write_flows

pytestmark = pytest.mark.anyio

EXAMPLE = (REPO / "flows" / "inventory-data.yaml").read_text()


async def test_the_example_runs_on_postgresql_with_keyset_paging(tmp_path: Path, pg_url: str) -> None:
    text = EXAMPLE.replace("page: {limit: 20, max_limit: 100}", "page: {mode: keyset, limit: 2}")
    async with facade_client(write_flows(tmp_path, text), env={"INVENTORY_DB": pg_url}) as client:
        first = (await client.get("/inventory/items")).json()
        assert [i["sku"] for i in first["items"]] == ["SKU-1", "SKU-2"] and first["next_after"] == "SKU-2"
        second = (await client.get("/inventory/items", params={"after": first["next_after"]})).json()
        assert [i["sku"] for i in second["items"]] == ["SKU-3", "SKU-7"]
        assert (await client.get("/inventory/items", params={"offset": "2"})).status_code == 422  # keyset only
        created = await client.post("/inventory/items", json={"sku": "SKU-0", "name": "awl", "qty": 5, "price": 3})
        assert created.status_code == 201 and created.headers["location"] == "/inventory/items/SKU-0"
        assert (await client.post("/inventory/items", json={"sku": "SKU-0", "name": "awl", "qty": 1})).status_code \
            == 409
        assert (await client.patch("/inventory/items/SKU-0", json={"price": None})).json()["price"] is None
        assert (await client.patch("/inventory/items/SKU-0", json={"sku": "SKU-00"})).status_code == 409  # RFC 9110
        assert (await client.put("/inventory/items/SKU-0", json={"name": "awl"})).status_code == 422  # qty required
        assert (await client.delete("/inventory/items/SKU-0")).status_code == 204
        assert (await client.get("/inventory/items/SKU-0")).status_code == 404
        injected = "'; DROP TABLE items; --"
        assert (await client.get(f"/inventory/items/{injected}")).status_code == 404
        assert (await client.get("/inventory/items", params={"name": injected})).json()["items"] == []
        assert len((await client.get("/inventory/items", params={"limit": "100"})).json()["items"]) == 5


def test_the_openapi_export_describes_every_route_with_its_schemas() -> None:
    document = openapi_document(load_project(REPO / "flows"))
    validate(json.loads(json.dumps(document)))
    collection, item = document["paths"]["/inventory/items"], document["paths"]["/inventory/items/{sku}"]
    assert sorted(collection) == ["get", "post"] and sorted(item) == ["delete", "get", "patch", "put"]
    row = collection["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert row["required"] == ["sku", "name", "qty"]
    assert row["properties"]["qty"] == {"type": "integer", "minimum": 0, "description": "Units in stock."}
    assert row["properties"]["price"]["type"] == ["number", "null"]
    page = collection["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert page["properties"]["items"]["items"]["properties"]["sku"]["maxLength"] == 32
    assert {p["name"] for p in collection["get"]["parameters"]} == {"limit", "offset", "sort", "name"}
    assert set(item["put"]["responses"]) >= {"200", "404", "409", "422"}
    assert "minProperties" in item["patch"]["requestBody"]["content"]["application/json"]["schema"]


@pytest.mark.parametrize(("change", "message"), [
    ("key: sku", "key: skus"),
    ("endpoint: inventory-db", "endpoint: nowhere"),
    ("endpoint: inventory-db", "endpoint: web"),
])
def test_a_wrong_resource_is_a_load_error_at_its_place(tmp_path: Path, change: str, message: str) -> None:
    # one more endpoint, of another kind, under endpoints:
    text = EXAMPLE.replace(change, message).replace(
        "\nresources:", "\n  web:\n    http: {url: 'http://127.0.0.1:9'}\n\nresources:", 1)
    write_flows(tmp_path, text)
    with pytest.raises(LoadErrors) as raised:
        load_project(tmp_path)
    expected = {"key: skus": "resource 'items': key 'skus' is not one of the columns (sku, name, qty, price); did "
                             "you mean 'sku'?",
                "endpoint: nowhere": "unknown endpoint 'nowhere'",
                "endpoint: web": "endpoint 'web' is not a sql endpoint"}[message]
    assert expected in str(raised.value)
    assert "flows.yaml:" in str(raised.value)
