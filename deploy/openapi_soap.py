"""The SOAP routes in the OpenAPI export: one path per served SOAP service.

OpenAPI cannot model SOAP's operations (they share one URL and one method, told apart by the
SOAPAction header or the Body's first element), so each service path is described as what an
HTTP client sees: ``POST PATH`` taking an envelope in the service's SOAP version's media type
(``text/xml`` with a ``SOAPAction`` header in 1.1, ``application/soap+xml`` with the action
as its parameter in 1.2), its operations and actions listed with an example envelope each,
answering an envelope (200) or a Fault (500; 400 for a 1.2 Sender fault); and ``GET
PATH?wsdl``, the WSDL, which describes the operations' messages and is linked as the POST's
``externalDocs``.  A gateway can then route, secure and meter the path like any other.
"""

from __future__ import annotations

from typing import Any

from engine.model import Project

XML_TEXT: dict[str, Any] = {"type": "string", "description": "An XML document."}
# a request envelope: described by the WSDL, not by a JSON Schema (the export's XML-body mark)
ENVELOPE_SCHEMA: dict[str, Any] = {"description": "A SOAP envelope; its Body's element is the WSDL's to describe.",
                                   "x-interlace-body": "xml-document"}


def _envelope(namespace: str, body: str) -> str:
    return (f'<soap:Envelope xmlns:soap="{namespace}"><soap:Body>{body}</soap:Body></soap:Envelope>')


def _example_body(operation: Any) -> str:
    """The operation's request element with its members, empty (what the WSDL asks for)."""
    model = operation.operation
    element = model.input if model is not None else None
    if element is None:
        tag = operation.element or operation.name
        local = tag.rsplit("}", 1)[-1]
        namespace = tag[1:].split("}", 1)[0] if tag.startswith("{") else None
        attribute = f' xmlns="{namespace}"' if namespace else ""
        return f"<{local}{attribute}/>"
    members = "".join(f"<{name}>...</{name}>" for name in element.shape)
    attribute = f' xmlns="{element.namespace}"' if element.namespace else ""
    return f"<{element.name}{attribute}>{members}</{element.name}>"


def soap_paths(project: Project) -> dict[str, dict[str, Any]]:
    """``paths`` entries of every SOAP service the flows serve (none when nothing compiled)."""
    compiled = project.compiled
    paths: dict[str, dict[str, Any]] = {}
    for service in compiled.soap_services if compiled is not None else []:
        version = service.version
        media = version.media_type
        names = [op.name for op in service.operations]
        flows = {op.name: op.flow.flow for op in service.operations}
        listed = "; ".join(
            f"{op.name} (action {op.action})" if op.action else op.name for op in service.operations)
        examples = {op.name: {"summary": flows[op.name].description or op.name,
                              "value": _envelope(version.namespace, _example_body(op))}
                    for op in service.operations}
        post: dict[str, Any] = {
            "operationId": "soap-" + "-".join(names),
            "summary": f"SOAP {version.name} service: {', '.join(names)}",
            "description": (f"A SOAP {version.name} endpoint: POST an envelope ({media}). Operations: {listed}. "
                            + ("The operation is chosen by the SOAPAction header, else by the Body's first "
                               "element." if version.name == "1.1" else
                               "The operation is chosen by the action parameter of the Content-Type, else by the "
                               "Body's first element.")
                            + f" The WSDL (GET {service.path}?wsdl) describes each operation's messages."),
            "tags": sorted({flow.file.stem for flow in flows.values()}),
            "requestBody": {"required": True, "content": {media: {"schema": ENVELOPE_SCHEMA, "examples": examples}}},
            # SOAP 1.1's HTTP binding answers every fault, a malformed request's too, with 500
            "x-interlace-soap": version.name,
            "responses": {
                "200": {"description": "The operation's answer, as a SOAP envelope.",
                        "content": {media: {"schema": XML_TEXT}}},
                "500": {"description": "A SOAP Fault (Client/Server; 1.2: Receiver).",
                        "content": {media: {"schema": XML_TEXT}}},
            },
        }
        if version.name == "1.2":
            post["responses"]["400"] = {"description": "A SOAP 1.2 Sender fault.",
                                        "content": {media: {"schema": XML_TEXT}}}
        else:
            actions = [op.action for op in service.operations if op.action]
            header: dict[str, Any] = {
                "name": "SOAPAction", "in": "header", "required": False,
                "description": "The operation's action, quoted, e.g. \"" + (actions[0] if actions else "") + "\"",
                "schema": {"type": "string", **({"enum": [f'"{a}"' for a in actions]} if actions else {})},
            }
            post["parameters"] = [header]
        if service.wsdl is not None:
            post["externalDocs"] = {"description": "The service's WSDL", "url": f"{service.path}?wsdl"}
        entry: dict[str, Any] = {"post": post}
        if service.wsdl is not None:
            entry["get"] = {
                "operationId": "soap-" + "-".join(names) + "-wsdl",
                "summary": "The service's WSDL",
                "description": "The WSDL, its soap:address set to the address it was asked on.",
                "tags": post["tags"],
                "parameters": [{"name": "wsdl", "in": "query", "required": True, "allowEmptyValue": True,
                                "description": "Present (empty) to ask for the WSDL.", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The WSDL document.",
                                      "content": {"text/xml": {"schema": XML_TEXT}}},
                              "404": {"$ref": "#/components/responses/Problem"}},
            }
        paths[service.path] = entry
    return paths
