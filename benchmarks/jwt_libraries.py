"""JWT verification cost per library (PyJWT and joserfc, both on cryptography), per algorithm.

    .venv/bin/pip install joserfc   # not a dependency: only this comparison uses it
    .venv/bin/python benchmarks/jwt_libraries.py [--rounds 2000]

Prints microseconds per decode-and-verify of the same token (claims checked by each library).
"""

from __future__ import annotations

import argparse
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    rounds = parser.parse_args().rounds
    try:
        from joserfc import jwt as jose_jwt
        from joserfc.jwk import ECKey, OKPKey, RSAKey
    except ImportError:
        jose_jwt = None
    claims = {"sub": "alice", "iss": "gw", "aud": "facade", "exp": int(time.time()) + 3600}
    keys = {"RS256": rsa.generate_private_key(65537, 2048), "ES256": ec.generate_private_key(ec.SECP256R1()),
            "EdDSA": ed25519.Ed25519PrivateKey.generate()}
    for alg, private in keys.items():
        token = jwt.encode(claims, private, algorithm=alg)
        public = private.public_key()
        started = time.perf_counter()
        for _ in range(rounds):
            jwt.decode(token, public, algorithms=[alg], audience="facade", issuer="gw")
        pyjwt_us = (time.perf_counter() - started) / rounds * 1e6
        line = f"{alg}: PyJWT {pyjwt_us:.0f} us"
        if jose_jwt is not None:
            pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            key = {"RS256": RSAKey, "ES256": ECKey, "EdDSA": OKPKey}[alg].import_key(pem)
            started = time.perf_counter()
            for _ in range(rounds):
                jose_jwt.decode(token, key, algorithms=[alg])
            line += f", joserfc {(time.perf_counter() - started) / rounds * 1e6:.0f} us"
        print(line)


if __name__ == "__main__":
    main()
