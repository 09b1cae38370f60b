"""The authenticate step's quick JWT path accepts only what jwt.decode accepts, with the same
claims, for tokens of every shape the gateway (or an attacker) may send."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from engine.steps._jwt_verify import BadSignature, QuickVerifier

ISSUER = "https://gateway.test"
ALGORITHMS = ["RS256", "ES256", "EdDSA"]
LEEWAY = 30.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {"rsa": rsa.generate_private_key(65537, 2048), "ec": ec.generate_private_key(ec.SECP256R1()),
            "ed": ed25519.Ed25519PrivateKey.generate(), "other": rsa.generate_private_key(65537, 2048)}


def _tokens(keys: dict[str, Any]) -> dict[str, str]:
    now = int(time.time())  # when the test runs, not when its module was collected
    good = {"iss": ISSUER, "sub": "alice", "aud": "facade", "exp": now + 300}

    def sign(claims: dict[str, Any], key: str = "rsa", alg: str = "RS256", **headers: Any) -> str:
        return jwt.encode(claims, keys[key], algorithm=alg, headers={"kid": key, **headers})

    def raw(header: bytes, claims: bytes) -> str:  # what PyJWT refuses to make
        signing_input = f"{_b64(header)}.{_b64(claims)}".encode()
        rs256 = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256)
        return signing_input.decode() + "." + _b64(rs256.sign(signing_input, keys["rsa"]))

    valid = sign(good)
    head, payload, signature = valid.split(".")
    other_payload = _b64(json.dumps({**good, "sub": "mallory"}).encode())
    return {
        "valid": valid,
        "valid ES256": sign(good, "ec", "ES256"),
        "valid EdDSA": sign(good, "ed", "EdDSA"),
        "aud list": sign({**good, "aud": ["other", "facade"]}),
        "aud wrong": sign({**good, "aud": "other"}),
        "aud missing": sign({k: v for k, v in good.items() if k != "aud"}),
        "aud empty": sign({**good, "aud": []}),
        "aud not text": sign({**good, "aud": [1]}),
        "iss wrong": sign({**good, "iss": "https://elsewhere"}),
        "iss missing": sign({k: v for k, v in good.items() if k != "iss"}),
        "sub missing": sign({k: v for k, v in good.items() if k != "sub"}),
        "sub number": sign({**good, "sub": 7}),
        "jti number": sign({**good, "jti": 7}),
        "expired": sign({**good, "exp": now - 100}),
        "expired within leeway": sign({**good, "exp": now - 10}),
        "exp float": sign({**good, "exp": now + 300.5}),
        "exp text": sign({**good, "exp": "soon"}),
        "exp missing": sign({k: v for k, v in good.items() if k != "exp"}),
        "exp null": sign({**good, "exp": None}),
        "nbf future": sign({**good, "nbf": now + 300}),
        "nbf within leeway": sign({**good, "nbf": now + 10}),
        "iat future": sign({**good, "iat": now + 300}),
        "iat text": sign({**good, "iat": "x"}),
        "kid unknown": jwt.encode(good, keys["rsa"], algorithm="RS256", headers={"kid": "nobody"}),
        "kid number": raw(b'{"alg":"RS256","kid":5}', json.dumps(good).encode()),
        "b64 false": raw(b'{"alg":"RS256","kid":"rsa","b64":false,"crit":["b64"]}', json.dumps(good).encode()),
        "no kid": jwt.encode(good, keys["rsa"], algorithm="RS256"),
        "signed by another key": jwt.encode(good, keys["other"], algorithm="RS256", headers={"kid": "rsa"}),
        "alg not accepted": sign(good, "rsa", "RS512"),
        "alg none": _b64(b'{"alg":"none","kid":"rsa"}') + "." + payload + ".",
        "alg HS256 with the public key": _b64(b'{"alg":"HS256","kid":"rsa"}') + "." + payload + "." + signature,
        "ES256 header on the RSA key": _b64(b'{"alg":"ES256","kid":"rsa"}') + "." + payload + "." + signature,
        "crit header": sign(good, crit=["exp"]),
        "payload swapped": f"{head}.{other_payload}.{signature}",
        "signature cut": f"{head}.{payload}.{signature[:-4]}",
        "signature bad base64": f"{head}.{payload}.{signature[:-1]}*",
        "payload not json": f"{head}.{_b64(b'not json')}.{signature}",
        "payload a list": raw(b'{"alg":"RS256","kid":"rsa"}', b"[1, 2]"),
        "payload NaN": raw(b'{"alg":"RS256","kid":"rsa"}', json.dumps({**good, "n": float("nan")}).encode()),
        "two segments": f"{head}.{payload}",
        "four segments": f"{head}.{payload}.{signature}.x",
        "header not json": f"{_b64(b'{nope')}.{payload}.{signature}",
        "empty": "",
    }


def _pyjwt(token: str, key_set: dict[str | None, Any], audience: Any) -> dict[str, Any] | None:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = key_set.get(kid)
        if key is None:
            return None
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=ALGORITHMS, issuer=ISSUER, audience=audience,
                                            leeway=LEEWAY, options={"require": ["exp", "sub"],
                                                                    "verify_aud": audience is not None})
        return claims
    except (jwt.InvalidTokenError, jwt.PyJWKError, TypeError, ValueError):  # an RSA key for ES256: TypeError
        return None


@pytest.mark.parametrize("audience", ["facade", ["elsewhere", "facade"], None])
def test_the_quick_path_accepts_only_what_pyjwt_accepts(keys: dict[str, Any], audience: Any) -> None:
    key_set = {name: key.public_key() for name, key in keys.items() if name != "other"}
    generation = 1

    async def key_for(kid: str | None) -> Any:
        return key_set.get(kid)

    quick = QuickVerifier(algorithms=ALGORITHMS, issuer=ISSUER, audience=audience, leeway=LEEWAY,
                          required=["exp", "sub"], key_for=key_for, generation=lambda: generation)
    accepted = 0
    for name, token in _tokens(keys).items():
        expected = _pyjwt(token, key_set, audience)
        for _ in range(2):  # the second time from what the first learnt about the header
            try:
                got = asyncio.run(quick.verify(token))
            except BadSignature:
                assert expected is None, f"{name}: refused as a bad signature, PyJWT accepts it"
                continue
            if got is not None:
                assert got == expected, f"{name}: quick path gave {got}, PyJWT {expected}"
                accepted += 1
    assert accepted >= 6  # the valid tokens did take the quick path
    # a key set loaded again (rotation): what was learnt from the old key is not used
    key_set["rsa"] = keys["other"].public_key()
    generation = 2
    valid = _tokens(keys)["valid"]
    with pytest.raises(BadSignature):
        asyncio.run(quick.verify(valid))


def test_tokens_reaching_the_check_in_one_turn_each_get_their_own_answer(keys: dict[str, Any]) -> None:
    """A busy server's tokens are checked together (those of one turn at the start of the next):
    each request still gets the answer it gets alone, a cancelled one none."""
    key_set = {name: key.public_key() for name, key in keys.items() if name != "other"}

    async def key_for(kid: str | None) -> Any:
        return key_set.get(kid)

    quick = QuickVerifier(algorithms=ALGORITHMS, issuer=ISSUER, audience="facade", leeway=LEEWAY,
                          required=["exp", "sub"], key_for=key_for, generation=lambda: 1)
    tokens = _tokens(keys)
    names = ["valid", "signed by another key", "valid ES256", "payload swapped", "valid EdDSA", "aud list",
             "expired", "signature cut", "aud wrong"] * 3

    async def answer(token: str) -> Any:
        try:
            return await quick.verify(token)
        except BadSignature:
            return "bad signature"

    async def one_by_one() -> list[Any]:
        return [await answer(tokens[name]) for name in names]

    async def all_at_once() -> tuple[list[Any], bool]:
        answers = [asyncio.ensure_future(answer(tokens[name])) for name in names]
        cancelled = asyncio.ensure_future(answer(tokens["valid"]))  # one waiting for the batch
        await asyncio.sleep(0)  # every task has reached the check: the later ones wait for the batch
        cancelled.cancel()
        results = await asyncio.gather(*answers)
        return results, cancelled.cancelled()

    alone = asyncio.run(one_by_one())  # each alone in its turn: a batch of one
    together, was_cancelled = asyncio.run(all_at_once())
    assert together == alone
    assert was_cancelled
    assert [a for a in alone if isinstance(a, dict)] and "bad signature" in alone and None in alone
    for name, got in zip(names, alone, strict=True):
        if got != "bad signature":
            assert got == _pyjwt(tokens[name], key_set, "facade"), name
