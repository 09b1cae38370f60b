"""The soap_fault step: answer a served SOAP operation with a Fault of the flow's choosing."""

from __future__ import annotations

from typing import Any

from connectors.soap.replies import RaisedSoapFault
from engine.compiler import CompileContext, StepConfigError
from engine.expressions import to_text
from engine.message import Message
from engine.registry import StepFn, step_kind
from engine.steps.basic import XmlTemplate
from engine.xmlsafe import serialize_xml

CODES = ["Client", "Server", "Sender", "Receiver"]


@step_kind(
    "soap_fault",
    summary="Fail with a SOAP Fault: a flow serving SOAP answers it (code, subcode, string, actor, detail); "
            "elsewhere it is a problem+json (400 for a client fault, 500 for a server one).",
    category="route",
    schema={
        "type": "object", "additionalProperties": False, "required": ["string"],
        "properties": {
            "code": {"enum": CODES,
                     "description": "Whose fault: Client or Server in SOAP 1.1, the same as Sender or Receiver in "
                                    "1.2 (either name works in either version; default Client)."},
            "subcode": {"type": "string",
                        "description": "A finer code as prefix:name, the prefix declared under namespaces: a 1.2 "
                                       "Subcode, in 1.1 appended to faultcode (soap:Client.UnknownSymbol)."},
            "string": {"type": "string", "description": "What went wrong (template): faultstring, or the 1.2 Reason."},
            "actor": {"type": "string", "description": "Who found the fault, a URI (1.1 faultactor, 1.2 Role)."},
            "detail": {"type": "string",
                       "description": "XML template of the detail's content (1.1 detail, 1.2 Detail), e.g. "
                                      "`<q:unknownSymbol xmlns:q='...'><q:symbol>${vars.symbol}</q:symbol>"
                                      "</q:unknownSymbol>`."},
        },
    },
    examples=[{"code": "Client", "string": "unknown symbol ${vars.symbol}"},
              {"code": "Server", "subcode": "Unavailable", "string": "the quote feed is down",
               "detail": "<q:retryAfter xmlns:q='http://example.com/stockquote'>30</q:retryAfter>"}],
)
def compile_soap_fault(config: Any, ctx: CompileContext) -> StepFn:
    code = str(config.get("code", "Client"))
    string = ctx.template(config["string"], "string")
    actor = ctx.template(config["actor"], "actor") if "actor" in config else None
    detail = XmlTemplate(str(config["detail"]), ctx, "detail") if "detail" in config else None
    subcode: tuple[str | None, str] | None = None
    if "subcode" in config:
        prefix, colon, local = str(config["subcode"]).rpartition(":")
        if colon and prefix not in ctx.namespaces:
            raise StepConfigError(f"subcode {config['subcode']!r}: the prefix {prefix!r} is not declared under "
                                  f"namespaces", "subcode")
        subcode = (ctx.namespaces[prefix] if colon else None, local)

    async def run(msg: Message) -> None:
        raise RaisedSoapFault(code, to_text(string.render(msg)), subcode=subcode,
                              actor=to_text(actor.render(msg)) if actor is not None else None,
                              detail=serialize_xml(detail.render(msg)) if detail is not None else None)

    return run
