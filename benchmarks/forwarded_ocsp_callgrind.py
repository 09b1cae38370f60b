"""Instructions a request pays for a forwarded client certificate, in process: the
ForwardedClientCertMiddleware (engine/forwarded_cert.py) in front of an app that answers
nothing, without OCSP and with ``ocsp`` whose answers are cached (the usual request: the
certificate and its intermediate CA asked about once, long ago).

    .venv/bin/python benchmarks/forwarded_ocsp_callgrind.py         # runs itself under callgrind

Each part runs ``--calls`` times and ``0`` times under callgrind; the difference over the count
is its cost per request.  Measured on 2026-12-02 (an nginx-style URL-encoded PEM header, a leaf
below an intermediate): 27,062 instructions without OCSP, 46,893 with it (the cached verdicts
of the leaf and its CA, ~12,600 of it; the header looked up by its bytes, nothing decoded or
parsed); a whole request through the server is ~585,000 (benchmarks/server_callgrind.py).
The first version, which decoded the header again and awaited a coroutine per request, cost 54,902.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.hotpath_common import callgrind_run_total  # noqa: E402


def _run(part: str, calls: int) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from engine.forwarded_cert import ForwardedClientCertMiddleware
    from engine.ocsp import OcspSettings
    from tests.support.pki import Authority

    folder = Path(tempfile.mkdtemp(prefix="forwarded-ocsp-"))
    root = Authority(folder, "Root", path_length=1, key_ids=True)
    issuing = root.intermediate("Issuing", ocsp_url="http://127.0.0.1:9/")
    leaf = issuing.issue("partner", ocsp_url="http://127.0.0.1:9/")
    ca = folder / "partners.pem"
    ca.write_bytes(issuing.ca.cert.read_bytes() + root.ca.cert.read_bytes())
    header = quote(leaf.certificate.public_bytes(Encoding.PEM).decode())

    async def inner(scope: object, receive: object, send: object) -> None:
        return None

    ocsp = OcspSettings() if part == "ocsp" else None
    middleware = ForwardedClientCertMiddleware(inner, ["127.0.0.1"], "X-SSL-Client-Cert", "pem", ocsp=ocsp,
                                               ca=str(ca) if ocsp else None)
    if middleware.ocsp is not None:  # good answers, as lookups leave them
        for certificate in (leaf.certificate, issuing.ca.certificate):
            middleware.ocsp.checker._cache[certificate.public_bytes(Encoding.DER)] = (None, time.time() + 3600)

    async def loop() -> None:
        for _ in range(calls):
            scope = {"type": "http", "headers": [(b"x-ssl-client-cert", header.encode())],
                     "client": ("127.0.0.1", 5000), "extensions": {}}
            await middleware(scope, None, None)  # type: ignore[arg-type]
            assert scope["extensions"]["tls"]["view"]["common_name"] == "partner"  # type: ignore[index]

    asyncio.run(loop())


def _instructions(part: str, calls: int, out: Path) -> float:
    return callgrind_run_total(__file__, ["--inner", part, "--calls", str(calls)], out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--inner", choices=["plain", "ocsp"])
    args = parser.parse_args()
    if args.inner:
        _run(args.inner, args.calls)
        return
    work = Path(tempfile.mkdtemp(prefix="forwarded-ocsp-callgrind-"))
    for part, what in (("plain", "a forwarded certificate, without OCSP"),
                       ("ocsp", "a forwarded certificate with OCSP (scope chain), its answers cached")):
        many = _instructions(part, args.calls, work / f"{part}.many")
        none = _instructions(part, 0, work / f"{part}.none")
        print(f"{what}: {(many - none) / args.calls:,.0f} instructions a request")


if __name__ == "__main__":
    main()
