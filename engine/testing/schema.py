"""The JSON Schema of test suites (``*.test.yaml``); part of ``interlace schema``.

A mock rule's ``match``, ``respond`` and ``expect.calls`` hold the http keys written here and
the keys every connector kind declares for its mocks (``MOCK_MATCH``, ``MOCK_ANSWER``); which
of them suit one endpoint is checked when the suite loads (engine.testing.runner)."""

from __future__ import annotations

import copy
from typing import Any

from engine.testing.client_cert import CLIENT_CERT_REQUEST

BODY: dict[str, Any] = {
    "json": {"description": "A JSON body (any YAML value)."},
    "xml": {"type": "string", "description": "An XML body."},
    "text": {"type": "string", "description": "A text body."},
    "file": {"type": "string", "description": "A body read from this file, relative to the suite."},
    "content_type": {"type": "string", "description": "Content-Type (default by body kind)."},
}

HEADERS = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}

RESPONSE: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "What the mocked endpoint answers.",
    "properties": {
        "status": {"type": "integer", "minimum": 100, "maximum": 599, "description": "Status (default 200)."},
        "headers": {**HEADERS, "description": "Headers of the answer."},
        "delay": {"type": ["string", "number"],
                  "description": "Answer after this long; longer than the endpoint's read timeout makes the call "
                                 "time out (without waiting for it)."},
        **BODY,
    },
}

MOCK_RULE: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "One rule: calls that match get the response (or the failure). The first matching rule wins.",
    "properties": {
        "match": {
            "type": "object", "additionalProperties": False,
            "description": "Which calls this rule answers (default: all).",
            "properties": {
                "method": {"type": "string"},
                "path": {"type": "string", "description": "The path after the endpoint's URL; * and ? wildcards."},
                "query": {"type": "object", "description": "Query parameters that must be present with these values."},
                "headers": {**HEADERS, "description": "Headers that must be present with these values."},
                "body": {"type": "string", "description": "A condition over the call's body, e.g. "
                                                          "${payload.id == '7'} or ${xpath('//sku') == 'A'}."},
            },
        },
        "respond": {"oneOf": [RESPONSE, {"type": "array", "items": RESPONSE, "minItems": 1,
                                         "description": "Successive calls get these in turn; the last repeats."}]},
        "fail": {"enum": ["timeout", "unreachable", "rejected", "constraint", "fault"],
                 "description": "Fail the call as a backend that times out or refuses connections (the endpoint's "
                                "retries, failover and breaker then act as in production); other kinds than http "
                                "also: rejected (the backend refused the request), constraint (a database "
                                "constraint: 409), fault (an application fault)."},
    },
    "oneOf": [{"required": ["respond"]}, {"required": ["fail"]}],
}

CALLS: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "What an endpoint must have received.",
    "properties": {
        "count": {"type": "integer", "minimum": 0, "description": "Calls in all."},
        "method": {"type": "string", "description": "Method of the last call."},
        "path": {"type": "string", "description": "Path of the last call (after the endpoint URL)."},
        "headers": {**HEADERS, "description": "Headers of the last call."},
        "json": {"description": "The last call's body, as JSON, exactly."},
        "json_subset": {"description": "Keys and values the last call's JSON body must contain."},
        "body_contains": {"type": "string", "description": "Text the last call's body must contain."},
        "jmespath": {"type": "object", "description": "JMESPath over the last call's JSON body: expected value."},
        "xpath": {"type": "object", "description": "XPath over the last call's XML body: expected value."},
    },
}

EXPECT: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "What must come out.",
    "properties": {
        "status": {"type": "integer"},
        "headers": {**HEADERS, "description": "Headers the answer must carry with these values."},
        "json": {"description": "The answer's JSON body, exactly."},
        "json_subset": {"description": "Keys and values the JSON body must contain (lists: these items in order)."},
        "text": {"type": "string", "description": "The answer's body as text, exactly."},
        "xml": {"type": "string", "description": "The answer's XML body (compared canonicalised)."},
        "file": {"type": "string", "description": "A file the body must equal (JSON and XML compared parsed)."},
        "body_contains": {"type": "string", "description": "Text the body must contain."},
        "jmespath": {"type": "object", "description": "JMESPath expression over the JSON body: expected value."},
        "xpath": {"type": "object", "description": "XPath over the XML body: expected value (text of one node, a "
                                                   "list for several, a number for count())."},
        "calls": {"type": "object", "additionalProperties": CALLS,
                  "description": "Per mocked endpoint, what it received."},
        "outcome": {"enum": ["done", "failed"],
                    "description": "(message cases) Whether the flow succeeded (the source would acknowledge) "
                                   "or failed (its redelivery policy would act)."},
        "error": {"type": "object", "description": "(message cases) Keys and values ${error.*} must contain."},
    },
}

MESSAGE: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["flow"],
    "description": "Run a flow whose source is not http (a processor, schedule, file or queue) on this message, "
                   "as its source would deliver it.",
    "properties": {
        "flow": {"type": "string", "description": "The flow's name."},
        "headers": HEADERS,
        "vars": {"type": "object", "description": "Variables the source sets (e.g. message_id, file_name)."},
        **BODY,
    },
}

CASE: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["name", "expect"],
    "oneOf": [{"required": ["request"]}, {"required": ["message"]}],
    "properties": {
        "message": MESSAGE,
        "name": {"type": "string", "description": "What the case shows, in words."},
        "request": {
            "type": "object", "additionalProperties": False, "required": ["path"],
            "properties": {
                "method": {"type": "string", "description": "Default GET, or POST with a body."},
                "path": {"type": "string", "pattern": "^/"},
                "query": {"type": "object"},
                "headers": HEADERS,
                "client_cert": CLIENT_CERT_REQUEST,
                "client": {"type": "string", "default": "127.0.0.1",
                           "description": "The address the request comes from, as the connection's peer "
                                          "(default 127.0.0.1): ${client.address}, and the throttle's policies "
                                          "and networks read it."},
                "repeat": {"type": "integer", "minimum": 1, "maximum": 1000,
                           "description": "Send the request this many times (default 1); expect checks the last "
                                          "answer and calls counts every call: for caches, limits, idempotency."},
                **BODY,
            },
        },
        "env": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "Environment for this case (over the suite's)."},
        "mocks": {"type": "object", "additionalProperties": {"type": "array", "items": MOCK_RULE},
                  "description": "Per endpoint name, the rules that answer its calls."},
        "expect": EXPECT,
    },
}


# the keys every kind but http has in match and respond
OPERATION_MATCH: dict[str, Any] = {
    "operation": {"type": "string", "description": "(other kinds than http) The operation called, e.g. query, "
                                                   "publish, write, or a SOAP operation."},
}
OPERATION_ANSWER: dict[str, Any] = {
    "payload": {"description": "(other kinds than http) The operation's result as a JSON value, e.g. a file "
                               "list's entries."},
    "meta": {"type": "object", "description": "(other kinds than http) What else the operation reports (seen "
                                              "in the variable of into)."},
}


def _with_kinds() -> tuple[dict[str, Any], dict[str, Any]]:
    """MOCK_RULE and CALLS with every connector kind's mock keys."""
    from connectors.base import connector_kinds

    rule = copy.deepcopy(MOCK_RULE)
    calls = copy.deepcopy(CALLS)
    match = rule["properties"]["match"]["properties"]
    responses = [rule["properties"]["respond"]["oneOf"][0], rule["properties"]["respond"]["oneOf"][1]["items"]]
    extra_match, extra_answer = dict(OPERATION_MATCH), dict(OPERATION_ANSWER)
    for cls in connector_kinds().values():
        for key, value in getattr(cls, "MOCK_MATCH", {}).items():
            extra_match.setdefault(key, value)
        for key, value in getattr(cls, "MOCK_ANSWER", {}).items():
            extra_answer.setdefault(key, value)
    for key, value in extra_match.items():
        match.setdefault(key, value)
        calls["properties"].setdefault(key, {**value, "description": value.get("description", "") +
                                             " (of the last call)"})
    for response in responses:
        for key, value in extra_answer.items():
            response["properties"].setdefault(key, value)
    return rule, calls


def suite_schema() -> dict[str, Any]:
    rule, calls = _with_kinds()
    case = copy.deepcopy(CASE)
    case["properties"]["mocks"]["additionalProperties"]["items"] = rule
    case["properties"]["expect"]["properties"]["calls"]["additionalProperties"] = calls
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Interlace test suite",
        "type": "object",
        "additionalProperties": False,
        "required": ["cases"],
        "properties": {
            "flows": {"type": "string", "description": "The flow folder under test, relative to the suite "
                                                       "(default: the suite's own folder)."},
            "env": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "Environment variables the flows read with ${env.NAME}."},
            "secrets": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "Secrets the flows read with ${secret.NAME} (test values only)."},
            "mocks": {"type": "object", "additionalProperties": {"type": "array", "items": rule},
                      "description": "Mocks shared by every case (a case's own rules come first)."},
            "cases": {"type": "array", "items": case, "minItems": 1},
        },
    }
