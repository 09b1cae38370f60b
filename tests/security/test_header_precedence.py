"""Issue 9, item 4: a caller's headers never replace an endpoint's or a step's, and its
credentials (Authorization, Cookie, Proxy-*, API keys, the gateway's own) are passed on only
when a flow names them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.backends import BackendServer, SeenRequest
from tests.support.engine import RunningEngine, run_engine, write_flows

pytestmark = pytest.mark.timeout(60)

CALLER = {
    "X-Api-Key": "caller-key", "X-Tenant": "caller-tenant", "Authorization": "Bearer caller-token",
    "Cookie": "session=caller", "Proxy-Authorization": "Basic Y2FsbGVy", "Proxy-Thing": "x",
    "X-Gateway-Secret": "gateway-only", "X-Custom": "passes", "Apikey": "caller-apikey",
}


@pytest.fixture(scope="module")
def engine(backend: BackendServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    folder = write_flows(tmp_path_factory.mktemp("headers"), f"""
    endpoints:
      keyed:
        http:
          url: "{backend.url}"
          headers: {{X-Api-Key: "${{env.BACKEND_KEY}}", X-Tenant: acme}}
    flows:
      default:
        source: {{http: {{method: GET, path: /default}}}}
        steps:
          - call: {{endpoint: keyed, path: /d}}
      step-headers:
        source: {{http: {{method: GET, path: /step}}}}
        steps:
          - call:
              endpoint: keyed
              path: /s
              headers: {{X-Tenant: from-step, X-Trace: '${{headers."x-custom"}}'}}
      named:
        source: {{http: {{method: GET, path: /named}}}}
        steps:
          - call: {{endpoint: keyed, path: /n, forward_headers: [Authorization, X-Custom]}}
      set-by-flow:
        source: {{http: {{method: GET, path: /set}}}}
        steps:
          - set: {{headers: {{Authorization: "Bearer flow-token"}}}}
          - call: {{endpoint: keyed, path: /f}}
    """)
    with run_engine(folder, env={"BACKEND_KEY": "endpoint-secret",
                                 "INTERLACE_CREDENTIAL_HEADERS": "X-Gateway-Secret"}) as running:
        yield running


def seen(backend: BackendServer, engine: RunningEngine, path: str) -> SeenRequest:
    backend.clear()
    answer = httpx.get(engine.url + path, headers=CALLER, timeout=10)
    assert answer.status_code == 200, answer.text
    return backend.wait_for_requests(1)[0]


def names(request: SeenRequest) -> list[str]:
    return [k for k, _ in request.header_list]


def test_endpoint_headers_win_over_the_callers(backend: BackendServer, engine: RunningEngine) -> None:
    request = seen(backend, engine, "/default")
    assert request.headers["x-api-key"] == "endpoint-secret"
    assert request.headers["x-tenant"] == "acme"
    assert names(request).count("x-api-key") == 1 and names(request).count("x-tenant") == 1


def test_credentials_are_not_forwarded_by_default(backend: BackendServer, engine: RunningEngine) -> None:
    request = seen(backend, engine, "/default")
    for name in ("authorization", "cookie", "proxy-authorization", "proxy-thing", "x-gateway-secret", "apikey"):
        assert name not in request.headers, name
    assert request.headers["x-custom"] == "passes"  # an ordinary header still goes


def test_step_headers_win_over_the_endpoint_and_the_caller(backend: BackendServer, engine: RunningEngine) -> None:
    request = seen(backend, engine, "/step")
    assert request.headers["x-tenant"] == "from-step"
    assert request.headers["x-api-key"] == "endpoint-secret"
    assert request.headers["x-trace"] == "passes"
    assert names(request).count("x-tenant") == 1


def test_a_flow_may_name_a_credential_to_forward(backend: BackendServer, engine: RunningEngine) -> None:
    request = seen(backend, engine, "/named")
    assert request.headers["authorization"] == "Bearer caller-token"
    assert request.headers["x-custom"] == "passes"
    assert "cookie" not in request.headers and "x-forwarded-for" not in request.headers
    assert request.headers["x-api-key"] == "endpoint-secret"  # naming does not let the caller's replace it


def test_a_header_the_flow_sets_goes(backend: BackendServer, engine: RunningEngine) -> None:
    request = seen(backend, engine, "/set")
    assert request.headers["authorization"] == "Bearer flow-token"
    assert "cookie" not in request.headers
