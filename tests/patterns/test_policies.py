"""settings.policies: what the whole project requires, run before every flow served over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.loader import LoadErrors, load_project
from tests.support.engine import facade_client, write_flows

SETTINGS = """
settings:
  policies:
    - authenticate:
        api_key: {keys: {gateway: k-123}}
    - throttle: {limit: 2, per: 1m}
"""


@pytest.mark.anyio
async def test_every_flow_runs_the_projects_policies_unless_it_opts_out(tmp_path: Path) -> None:
    write_flows(tmp_path, SETTINGS, "settings.yaml")
    write_flows(tmp_path, """
    flows:
      orders:
        source: {http: {method: GET, path: /orders}}
        steps:
          - respond: {json: {by: "${auth.key}"}}
      health:
        source: {http: {method: GET, path: /health}}
        policies: false
        steps:
          - respond: {json: {ok: true}}
    """)
    async with facade_client(tmp_path) as client:
        anonymous = await client.get("/orders")
        keyed = [await client.get("/orders", headers={"X-Api-Key": "k-123"}) for _ in range(3)]
        health = await client.get("/health")
    assert anonymous.status_code == 401
    assert [r.status_code for r in keyed] == [200, 200, 429]
    assert keyed[0].json() == {"by": "gateway"}
    assert health.status_code == 200


def test_a_bad_policy_is_reported_where_it_is_written(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    settings:
      policies:
        - throttle: {limit: 0, per: 1s}
    """, "settings.yaml")
    write_flows(tmp_path, """
    flows:
      a:
        source: {http: {method: GET, path: /a}}
        steps: [{log: a}]
    """)
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    assert "settings.yaml:3:25: throttle: 0 is less than the minimum of 1 in limit" in str(caught.value)


def test_the_openapi_export_declares_the_security_schemes_and_policy_answers(tmp_path: Path) -> None:
    from openapi_spec_validator import validate

    from deploy.openapi import openapi_document

    (tmp_path / "jwks.json").write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "use": "enc"}, '
                                        '{"kty": "EC", "crv": "P-256", "kid": "k", "use": "sig", '
                                        '"x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", '
                                        '"y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}')
    write_flows(tmp_path, SETTINGS, "settings.yaml")
    write_flows(tmp_path, """
    flows:
      orders:
        source: {http: {method: POST, path: /orders}}
        steps:
          - authenticate: {jwt: {jwks: jwks.json}}
          - validate: {schema: {type: object}}
          - respond: {status: 201}
      health:
        source: {http: {method: GET, path: /health}}
        policies: false
        steps: [{respond: {json: {ok: true}}}]
    """)
    document = openapi_document(load_project(tmp_path))
    validate(document)
    orders = document["paths"]["/orders"]["post"]
    assert orders["security"] == [{"apiKey-x-api-key": [], "bearerJWT": []}]  # both must pass
    assert {"401", "403", "422", "429"} <= set(orders["responses"])
    assert document["components"]["securitySchemes"] == {
        "apiKey-x-api-key": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
        "bearerJWT": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                      "description": "A JWT signed by the gateway, verified against its JWKS."}}
    health = document["paths"]["/health"]["get"]
    assert "security" not in health and "429" not in health["responses"]
