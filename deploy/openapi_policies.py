"""What a flow's policy steps mean for its OpenAPI operation: the security schemes its
``authenticate`` steps verify, and the answers its throttle, validate and idempotent steps add.

Read from the flow's own top-level steps and the project's ``settings.policies`` (which run
before every flow served over HTTP unless the flow says ``policies: false``).
"""

from __future__ import annotations

from typing import Any

from engine.model import Flow, Project
from engine.yamlio import plain

_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}

# what a step kind adds to the answers of an operation
_ANSWERS = {
    "authenticate": {"401": "No credential, or one that does not verify.",
                     "403": "The credential is not allowed here (a required claim, or the client "
                            "certificate's subject)."},
    "throttle": {"429": "Too many requests: retry after the Retry-After header's seconds."},
    "concurrency": {"429": "Too many requests at once: retry after the Retry-After header's seconds.",
                    "503": "At capacity: retry after the Retry-After header's seconds."},
    "validate": {"422": "The payload does not validate: errors lists each failing path."},
    "idempotent": {"409": "A request with this idempotency key is in progress (or was already processed).",
                   "422": "This idempotency key was used for another request."},
}


def _policy_steps(project: Project, flow: Flow) -> list[Any]:
    steps = [plain(step) for step in (flow.steps or [])]
    settings = project.settings or {}
    if settings.get("policies") and not (flow.node is not None and flow.node.get("policies") is False):
        steps = [*settings["policies"], *steps]
    return [step for step in steps if isinstance(step, dict)]


def _scheme(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if "client_cert" in config:
        return "mutualTLS", {"type": "mutualTLS",
                             "description": "A TLS client certificate signed by the facade's client CA."}
    if "api_key" in config:
        header = str(config["api_key"].get("header", "X-Api-Key"))
        return f"apiKey-{header.lower()}", {"type": "apiKey", "in": "header", "name": header}
    jwt = config.get("jwt") or {}
    header = str(jwt.get("header", "Authorization"))
    if header.lower() == "authorization":
        return "bearerJWT", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                             "description": "A JWT signed by the gateway, verified against its JWKS."}
    return f"jwt-{header.lower()}", {"type": "apiKey", "in": "header", "name": header,
                                     "description": "A JWT signed by the gateway (e.g. WSO2's X-JWT-Assertion), "
                                                    "verified against its JWKS."}


def policies_of(project: Project, flow: Flow) -> tuple[dict[str, Any], list[dict[str, list[str]]], dict[str, Any]]:
    """(security schemes, the operation's security requirement, the answers the policies add)."""
    schemes: dict[str, Any] = {}
    required: dict[str, list[str]] = {}  # every authenticate step must pass: one requirement, all its schemes
    optional = False
    answers: dict[str, Any] = {}
    for step in _policy_steps(project, flow):
        for kind, texts in _ANSWERS.items():
            if kind in step:
                for status, text in texts.items():
                    answers.setdefault(status, {"description": text, "content": _PROBLEM})
        config = step.get("authenticate")
        if isinstance(config, dict):
            name, scheme = _scheme(config)
            schemes[name] = scheme
            required[name] = []
            optional = optional or bool((config.get("jwt") or {}).get("optional"))
    requirement = [required] if required else []
    if optional:
        requirement.append({})  # open while no JWKS is configured: the requirement is optional
    return schemes, requirement, answers
