"""The http connector kind as the loader, the editor schema and the docs see it."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from connectors.base import Connector, connector_kinds, register_connector
from connectors.http import HttpConnector, HttpEndpoint
from connectors.resilience import settings_schema

SCHEMA = settings_schema(HttpConnector)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def objects(schema: dict[str, Any], where: str = "http") -> list[tuple[str, dict[str, Any]]]:
    found = [(where, schema)] if "properties" in schema else []
    for name, sub in schema.get("properties", {}).items():
        found += objects(sub, f"{where}.{name}")
    return found


def test_the_http_kind_is_registered_and_is_a_connector() -> None:
    assert connector_kinds()["http"] is HttpConnector
    assert isinstance(HttpEndpoint("e", {"url": "http://127.0.0.1:1"}).connector, Connector)


def test_every_setting_is_described_and_unknown_keys_are_refused() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    for where, schema in objects(SCHEMA):
        assert schema.get("additionalProperties") is False, where
        for name, prop in schema["properties"].items():
            assert len(prop.get("description", "")) > 20, f"{where}.{name} has no description"


@pytest.mark.parametrize("config", [
    {"url": "http://crm/api"},
    {"url": "${env.CRM_URL}"},
    {"urls": ["http://a", "http://b"], "strategy": "round-robin",
     "timeout": {"connect": "1s", "read": 5, "total": "8s"},
     "retry": {"attempts": 3, "backoff": "100ms", "max_backoff": "2s", "on_status": [502, 503], "on_timeout": True},
     "breaker": {"failures": 5, "reset": "30s", "on_status": [503]},
     "pool": {"max_connections": 20, "keepalive": "1m"}, "headers": {"X-Api-Key": "${secret.KEY}"}},
])
def test_valid_configs(config: dict[str, Any]) -> None:
    VALIDATOR.validate(config)


@pytest.mark.parametrize("config", [
    {}, {"url": "http://a", "urls": ["http://b"]}, {"url": "http://a", "retries": 3}, {"urls": []},
    {"url": "http://a", "strategy": "random"}, {"url": "http://a", "timeout": {"idle": "1s"}},
    {"url": "http://a", "retry": {"attempts": 0}}, {"url": "http://a", "breaker": {"failures": 0}},
    {"url": "http://a", "retry": {"on_status": [99]}}, {"url": "http://a", "headers": {"X": 1}},
])
def test_invalid_configs(config: dict[str, Any]) -> None:
    assert list(VALIDATOR.iter_errors(config))


@pytest.mark.parametrize(("config", "message"), [
    ({"url": "ftp://host/"}, "not an http:// or https:// URL"),
    ({"url": "crm/api"}, "not an http:// or https:// URL"),
    ({"url": "http://host:99999/"}, "port is not a number"),
    ({"url": "http://host/api?key=1"}, "cannot have a query"),
    ({"url": "http://a", "urls": ["http://b"]}, "not both"),
    ({"url": "http://a", "timeout": {"read": "soon"}}, r"timeout\.read: expected a duration"),
    ({"url": "http://a", "retry": {"backoff": "-1s"}}, r"retry\.backoff: expected a duration"),
    ({"url": "http://a", "breaker": {"reset": "1 fortnight"}}, r"breaker\.reset: expected a duration"),
])
def test_what_the_schema_cannot_check_the_constructor_does(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpEndpoint("e", config)


def test_health_is_json_and_has_no_credentials() -> None:
    endpoint = HttpEndpoint("e", {"urls": ["https://u:topsecret@crm.internal:8443/api/", "http://[::1]:81"],
                                  "breaker": {"failures": 2}})
    assert endpoint.health() == {
        "kind": "http", "strategy": "failover", "required": False, "active": None,
        "targets": [{"target": "https://crm.internal:8443/api/", "breaker": "closed", "consecutive_failures": 0},
                    {"target": "http://[::1]:81", "breaker": "closed", "consecutive_failures": 0}],
    }


def test_a_kind_name_cannot_be_taken_twice() -> None:
    class Other(Connector):
        SCHEMA: dict[str, Any] = {"type": "object"}

    with pytest.raises(ValueError, match="registered twice"):
        register_connector("http")(Other)
    with pytest.raises(TypeError, match="needs a SCHEMA"):
        register_connector("no-schema")(type("NoSchema", (), {}))
