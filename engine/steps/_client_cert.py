"""``authenticate: {client_cert: ...}``: the caller is the client certificate of its mutual-TLS
connection.

The handshake has verified the certificate against the facade's client CA already
(``interlace run --tls-client-ca``), or a trusted proxy did and forwarded it in a header
(``settings.http.proxy_headers.client_cert``, engine/forwarded_cert.py).  This step decides
whether that certificate may use the flow: its subject and issuer attributes, one of its SANs,
or its SHA-256 fingerprint.  No
certificate (plain HTTP, or ``--tls-client-cert optional`` and none sent) answers 401; one that
does not match answers 403.  Both problem+json, and neither echoes the certificate.
"""

from __future__ import annotations

from typing import Any

from engine.compiler import CompileContext
from engine.errors import Forbidden, Unauthorized
from engine.expressions import to_text
from engine.message import Message
from engine.registry import StepFn

_VALUES = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
_NAME = {"type": "object", "minProperties": 1, "additionalProperties": _VALUES}

CLIENT_CERT_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "The client certificate of a mutual-TLS connection (interlace run --tls-client-ca), verified "
                   "by the handshake against the client CA; {} accepts any certificate that CA signed.",
    "properties": {
        "subject": {**_NAME, "description": "Subject attributes required, by short name (CN, O, OU, C...): "
                                            "a value, or a list of which any one is enough."},
        "issuer": {**_NAME, "description": "Issuer attributes required, as for subject (for a CA bundle "
                                           "holding several CAs)."},
        "sans": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                 "description": "Subject alternative names (DNS, URI such as spiffe://..., e-mail, IP) of which "
                                "the certificate must carry one."},
        "fingerprints": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                         "description": "SHA-256 fingerprints (hex, colons and case ignored) of the certificates "
                                        "accepted: pinning, on top of the CA."},
    },
}

_VIEW_FIELDS = ("subject", "common_name", "issuer", "serial", "sans", "fingerprint", "subject_fields",
                "issuer_fields", "not_before", "not_after", "chain", "chain_fields", "source", "forwarded_by")


def _constant(value: Any, ctx: CompileContext, key: Any) -> str:
    """A configured value, ``${env.*}`` resolved at load."""
    rendered = ctx.template(value, key).render(Message())
    return to_text(rendered) if rendered is not None else ""


def _name_rule(config: dict[str, Any] | None, ctx: CompileContext, key: str) -> dict[str, set[str]]:
    rule: dict[str, set[str]] = {}
    for attribute, values in (config or {}).items():
        listed = values if isinstance(values, list) else [values]
        rule[str(attribute)] = {_constant(v, ctx, (key, attribute)) for v in listed}
    return rule


def _fingerprint(text: str) -> str:
    return text.replace(":", "").strip().lower()


def client_cert_step(config: dict[str, Any], ctx: CompileContext) -> StepFn:
    subject = _name_rule(config.get("subject"), ctx, "subject")
    issuer = _name_rule(config.get("issuer"), ctx, "issuer")
    sans = {_constant(v, ctx, ("sans", i)) for i, v in enumerate(config.get("sans") or ())}
    pins = {_fingerprint(_constant(v, ctx, ("fingerprints", i)))
            for i, v in enumerate(config.get("fingerprints") or ())}

    def refuse(what: str) -> Forbidden:
        return Forbidden(f"the client certificate's {what} is not allowed on this route")

    async def run(msg: Message) -> None:
        tls = msg.attributes.get("tls")
        if tls is None:
            raise Unauthorized("this route needs a client certificate: connect over TLS with a certificate "
                               "signed by the facade's client CA")
        forwarded = tls.get("forwarded")
        if forwarded == "untrusted":  # a client writing the gateway's header itself
            raise Forbidden("a client certificate header from an address that is not a trusted proxy "
                            "(settings.http.proxy_headers.trusted)")
        if forwarded == "invalid":
            raise Unauthorized(f"this route needs a client certificate, and the proxy's header does not hold one: "
                               f"{tls.get('forwarded_error')}")
        if tls.get("subject") is None and tls.get("fingerprint") is None and not tls.get("sans"):
            raise Unauthorized("this route needs a client certificate, and the connection presented none"
                               if tls.get("source") != "forwarded" else
                               "this route needs a client certificate, and the proxy forwarded none")
        for attribute, allowed in subject.items():
            if (tls["subject_fields"] or {}).get(attribute) not in allowed:
                raise refuse(f"subject ({attribute})")
        for attribute, allowed in issuer.items():
            if (tls["issuer_fields"] or {}).get(attribute) not in allowed:
                raise refuse(f"issuer ({attribute})")
        if sans and sans.isdisjoint(tls["sans"] or ()):
            raise refuse("subject alternative name")
        if pins and tls["fingerprint"] not in pins:
            raise refuse("fingerprint")
        msg.attributes["auth"] = {"method": "client_cert", **{name: tls.get(name) for name in _VIEW_FIELDS}}

    return run
