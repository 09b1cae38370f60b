"""The authenticate step: verify what the gateway (or a caller) presents before a flow runs.

- ``jwt``: a signed JWT in a header (the gateway's assertion, e.g. WSO2's ``X-JWT-Assertion``,
  or ``Authorization: Bearer``): signature (RS256/384/512, PS256, ES256/384, EdDSA) against a
  JWKS file or URL, issuer, audience, expiry and not-before with leeway, required claims and
  claim values.  The claims become ``${auth.*}``.
- ``api_key``: a key in a header, compared in constant time with keys from secrets; the key's
  name becomes ``${auth.key}``.
- ``client_cert``: the client certificate of a mutual-TLS connection (``interlace run
  --tls-client-ca``, engine/tls.py), already verified against the client CA by the handshake,
  matched against the subject, issuer, SANs or fingerprints the flow allows; its subject,
  issuer, serial, SANs and fingerprint become ``${auth.*}``.

A missing or bad credential answers 401 problem+json with ``WWW-Authenticate``; a verified one
without a required claim value answers 403.  Never a 500, and never the token in an error.
Verified tokens are remembered (by their exact text, until they expire, bounded), so a gateway
that sends the same assertion for a user's calls pays for its signature once; a new token costs
little more than its signature check (engine/steps/_jwt_verify.py).
"""

from __future__ import annotations

import hmac
import logging
import time
from pathlib import Path
from typing import Any

import jwt

from engine.compiler import CompileContext, StepConfigError
from engine.errors import Forbidden, Unauthorized
from engine.expressions import to_text
from engine.message import Message
from engine.registry import StepFn, step_kind
from engine.steps._client_cert import CLIENT_CERT_SCHEMA, client_cert_step
from engine.steps._fork import duration_field
from engine.steps._jwks import JwksError, KeySet
from engine.steps._jwt_verify import BadSignature, QuickVerifier
from engine.units import parse_duration

log = logging.getLogger("interlace.auth")

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_REMEMBERED = 10_000
_NUMBERS = (int, float)

_JWT_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["jwks"],
    "description": "A signed JWT in a header.",
    "properties": {
        "header": {"type": "string", "description": "The header holding it (default Authorization, as Bearer)."},
        "scheme": {"type": "string", "description": "Its scheme word, e.g. Bearer (default Bearer for "
                                                    "Authorization, none for other headers)."},
        "jwks": {"type": "string", "description": "The signing keys: a JWKS file in the flow folder, or an "
                                                  "https:// (or http:// on loopback) URL refreshed in the "
                                                  "background."},
        "refresh": duration_field("How often a JWKS URL is read again (default 10m)."),
        "optional": {"type": "boolean",
                     "description": "When jwks is empty (e.g. ${env.GATEWAY_JWKS || ''} with the variable unset), "
                                    "let every request through and say so in a warning when the flows load. "
                                    "Default false: an empty jwks is a load error."},
        "issuer": {"type": "string", "description": "The iss every token must carry."},
        "audience": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                     "description": "The aud a token must carry (one of them)."},
        "algorithms": {"type": "array", "items": {"enum": list(ALGORITHMS)},
                       "description": "Signature algorithms accepted (default RS256, ES256, EdDSA)."},
        "leeway": duration_field("Clock skew allowed on exp and nbf (default 30s)."),
        "required_claims": {"type": "array", "items": {"type": "string"},
                            "description": "Claims every token must have (exp always)."},
        "claims": {"type": "object",
                   "description": "Claim values required (403 otherwise): name: value, or name: [values] "
                                  "where any one is enough; a space-separated scope claim counts word by word."},
    },
}

_API_KEY_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["keys"],
    "description": "An API key in a header.",
    "properties": {
        "header": {"type": "string", "description": "The header holding it (default X-Api-Key)."},
        "keys": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"},
                 "description": "Known keys by name, each from a secret: partner-a: "
                                "${secret.\"partner-a-key\"}."},
    },
}


@step_kind(
    "authenticate",
    summary="Verify the caller's JWT (against a JWKS), API key or TLS client certificate; 401/403 problem+json "
            "otherwise; who it is in ${auth}.",
    category="policy",
    schema={"type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
            "properties": {"jwt": _JWT_SCHEMA, "api_key": _API_KEY_SCHEMA, "client_cert": CLIENT_CERT_SCHEMA}},
    examples=[{"jwt": {"header": "X-JWT-Assertion", "jwks": "gateway-jwks.json",
                       "issuer": "https://gateway.example.com", "required_claims": ["sub"]}},
              {"api_key": {"header": "X-Api-Key", "keys": {"partner-a": "${secret.\"partner-a-key\"}"}}},
              {"client_cert": {"subject": {"O": "Example Partners", "CN": ["partner-a", "partner-b"]}}}],
)
def compile_authenticate(config: Any, ctx: CompileContext) -> StepFn:
    if "jwt" in config:
        return _jwt_step(config["jwt"], ctx)
    if "client_cert" in config:
        return client_cert_step(config["client_cert"], ctx)
    return _api_key_step(config["api_key"], ctx)


def _seconds(value: Any, key: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise StepConfigError(str(exc), key) from exc


def _jwt_step(config: dict[str, Any], ctx: CompileContext) -> StepFn:
    header = str(config.get("header", "Authorization")).lower()
    scheme = config.get("scheme", "Bearer" if header == "authorization" else None)
    prefix = f"{scheme.lower()} " if scheme else None
    source_template = ctx.template(config["jwks"], ("jwt", "jwks"))
    rendered = source_template.render(Message())
    source = to_text(rendered) if rendered is not None else ""
    if not source:
        if not config.get("optional"):
            raise StepConfigError("jwks is empty: name a JWKS file or URL (or set optional: true to run open "
                                  "when it is not configured)", ("jwt", "jwks"))
        log.warning("authenticate in %s: no JWKS is configured (jwks %s is empty), so it runs OPEN and "
                    "verifies no token", ctx.owner, config["jwks"])

        async def run_open(msg: Message) -> None:
            msg.attributes["auth"] = None

        return run_open
    refresh = _seconds(config.get("refresh", "10m"), ("jwt", "refresh"))
    try:
        if source.startswith(("https://", "http://")):
            keys = KeySet(url=source, refresh=refresh)
        elif Path(source).is_absolute() and source_template.expressions:
            # a path the deployment chose (${env.GATEWAY_JWKS}: a mounted file), not the flow's author
            keys = KeySet(file=_existing(Path(source), ("jwt", "jwks")))
        else:
            keys = KeySet(file=ctx.file_path(source, ("jwt", "jwks")))
    except JwksError as exc:
        raise StepConfigError(str(exc), ("jwt", "jwks")) from exc
    ctx.on_close(keys.close)
    issuer = _optional_text(config.get("issuer"), ctx, ("jwt", "issuer"))
    audience = config.get("audience")
    algorithms = list(config.get("algorithms", ["RS256", "ES256", "EdDSA"]))
    leeway = _seconds(config.get("leeway", "30s"), ("jwt", "leeway"))
    required = sorted({"exp", *config.get("required_claims", [])})
    wanted = {str(k): v if isinstance(v, list) else [v] for k, v in (config.get("claims") or {}).items()}
    remembered = _Remembered(_REMEMBERED)
    realm = f'Bearer realm="{ctx.owner}"'
    quick = QuickVerifier(algorithms=algorithms, issuer=issuer, audience=audience, leeway=leeway, required=required,
                          key_for=keys.key_for, generation=lambda: keys.generation)
    quick_verify = quick.verify

    def refuse(reason: str) -> Unauthorized:
        return Unauthorized(f"the request's token was refused: {reason}",
                            headers={"WWW-Authenticate": f'{realm}, error="invalid_token"'})

    async def verify(token: str) -> dict[str, Any]:
        """A token the quick path leaves to PyJWT, which accepts it or gives the precise refusal."""
        try:
            head = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise refuse("it is not a JWT") from None
        if head.get("alg") not in algorithms:
            raise refuse(f"algorithm {str(head.get('alg'))[:20]!r} is not accepted")
        key = await keys.key_for(head.get("kid"))
        if key is None:
            raise refuse("it is signed with a key the gateway's key set does not have")
        try:
            claims: dict[str, Any] = jwt.decode(token, key, algorithms=algorithms, issuer=issuer,
                                                audience=audience, leeway=leeway,
                                                options={"require": required, "verify_aud": audience is not None})
        except jwt.ExpiredSignatureError:
            raise refuse("it has expired") from None
        except jwt.ImmatureSignatureError:
            raise refuse("it is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise refuse("its issuer is not the one expected") from None
        except jwt.InvalidAudienceError:
            raise refuse("its audience is not this service") from None
        except jwt.MissingRequiredClaimError as exc:
            raise refuse(f"it has no {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise refuse("its signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise refuse(f"it is malformed ({type(exc).__name__})") from None
        except (TypeError, ValueError):  # PyJWT's answer to an alg that does not fit the key (ES256 on RSA)
            raise refuse("its algorithm does not fit the key it names") from None
        return claims

    async def run(msg: Message) -> None:
        raw = msg.headers.get(header)
        if not raw:
            raise Unauthorized(f"this route needs a token in the {header} header", headers={"WWW-Authenticate": realm})
        token = raw.strip()
        if prefix is not None:
            if token[:len(prefix)].lower() != prefix:
                raise refuse(f"the {header} header does not start with {scheme}")
            token = token[len(prefix):].strip()
        claims = remembered.get(token)
        if claims is None or claims["exp"] + leeway <= time.time():
            try:
                quick_claims = await quick_verify(token)
            except BadSignature:
                raise refuse("its signature does not verify") from None
            claims = quick_claims if quick_claims is not None else await verify(token)
            if type(claims["exp"]) in _NUMBERS:  # kept, its exp read as a number (PyJWT also takes "123")
                remembered.put(token, claims)
        for name, values in wanted.items():
            if not _claim_matches(claims.get(name), values):
                raise Forbidden(f"the token's {name} claim does not allow this request")
        msg.attributes["auth"] = {**claims, "method": "jwt"}

    return run


class _Remembered:
    """Verified tokens' claims by the token's exact text, at most ``bound``: two plain dicts, the
    newer taking every new token and a hit from the older, the older dropped whole when the newer
    is half the bound.  A recently used token stays, as with a least-recently-used list, for a
    dict lookup and a dict store: no per-token list upkeep nor eviction (a stream of new tokens,
    each seen once, costs one store each and a bulk drop every ``bound / 2``).  The claims dict is
    kept as it is (no tuple beside it): orjson's dict of texts and numbers is not tracked by the
    cycle collector, so a stream of new tokens adds nothing for it to count or walk."""

    __slots__ = ("_half", "_newer", "_older")

    def __init__(self, bound: int) -> None:
        self._half = max(bound // 2, 1)
        self._newer: dict[str, dict[str, Any]] = {}
        self._older: dict[str, dict[str, Any]] = {}

    def get(self, token: str) -> dict[str, Any] | None:
        known = self._newer.get(token)
        if known is None:
            known = self._older.pop(token, None)
            if known is not None:
                self.put(token, known)
        return known

    def put(self, token: str, claims: dict[str, Any]) -> None:
        newer = self._newer
        if len(newer) >= self._half:
            self._older = newer
            newer = self._newer = {}
        newer[token] = claims

    def __len__(self) -> int:
        return len(self._newer) + len(self._older)


def _existing(path: Path, key: Any) -> Path:
    if not path.is_file():
        raise StepConfigError(f"file not found: {path}", key)
    return path


def _claim_matches(actual: Any, allowed: list[Any]) -> bool:
    if actual is None:
        return False
    if isinstance(actual, str) and " " in actual:  # OAuth scope: space-separated words
        actual = actual.split()
    if isinstance(actual, list):
        return any(item in allowed for item in actual)
    return actual in allowed


def _optional_text(value: Any, ctx: CompileContext, key: Any) -> str | None:
    if value is None:
        return None
    rendered = ctx.template(value, key).render(Message())
    return to_text(rendered) if rendered is not None else None


def _api_key_step(config: dict[str, Any], ctx: CompileContext) -> StepFn:
    header = str(config.get("header", "X-Api-Key")).lower()
    templates = {str(name): ctx.template(value, ("api_key", "keys", name)) for name, value in config["keys"].items()}
    resolved: list[tuple[str, bytes]] = []

    def known_keys() -> list[tuple[str, bytes]]:
        # secrets are read when the first request needs them: validate and build run without them
        if not resolved:
            for name, template in templates.items():
                value = template.render(Message())
                if value:
                    resolved.append((name, to_text(value).encode()))
        return resolved

    async def run(msg: Message) -> None:
        given = msg.headers.get(header)
        if not given:
            raise Unauthorized(f"this route needs an API key in the {header} header",
                               headers={"WWW-Authenticate": f'ApiKey header="{header}"'})
        offered = given.strip().encode()
        match = None
        for name, key in known_keys():  # every key compared, in constant time: no timing oracle
            if hmac.compare_digest(offered, key) and match is None:
                match = name
        if match is None:
            raise Unauthorized("the API key is not known", headers={"WWW-Authenticate": f'ApiKey header="{header}"'})
        msg.attributes["auth"] = {"method": "api_key", "key": match}

    return run
