"""Instructions of a cached OCSP verdict, in process: what a mutual-TLS connection whose client
certificate's answer is cached pays for OCSP (engine/ocsp.py OcspChecker.verdict), beside what
a mutual-TLS connection pays to read its certificate (engine/tls.py Peer.of: the parse, the
chain over the client CA file, and the ``${tls.*}`` view) or to find it read (FacadeContext.peer).

    .venv/bin/python benchmarks/ocsp_cached_callgrind.py            # runs itself under callgrind

Each part runs ``--calls`` times and ``0`` times under callgrind; the difference over the count
is its cost per connection.  A connection's certificate arrives as new bytes, so each call
takes a fresh copy of the DER (its hash is computed again, as in a server).  Measured on
2026-12-02: reading a certificate without the chain 393,686, with it (``${tls.chain}`` over a
root and an intermediate) 434,143, finding it read already (the context keeps it) 7,937, the
cached verdict 11,453 instructions a connection (with the Peer object the loop makes for it);
a full mutual-TLS handshake and request is ~9.2 million (benchmarks/server_callgrind.py --tls
--reconnect).  Since the chain scope (later on 2026-12-02) the verdict is measured on the Peer
the context keeps, as a server has it: 3,541 with ``--tls-ocsp-scope leaf``, 12,655 with
``chain`` (the default; the leaf's and its intermediate CA's answers, both cached).
``--parts verdict verdict-leaf`` measures those two alone.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.hotpath_common import callgrind_run_total  # noqa: E402


def _run(part: str, calls: int) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from engine.ocsp import OcspChecker, OcspSettings
    from engine.tls import FacadeContext, Peer
    from engine.tls_chain import ClientCAs
    from tests.support.pki import Authority

    folder = Path(tempfile.mkdtemp(prefix="ocsp-cached-"))
    root = Authority(folder, "Root", path_length=1, key_ids=True)
    issuing = root.intermediate("Issuing")
    leaf = issuing.issue("partner", ocsp_url="http://127.0.0.1:9/")
    cas = ClientCAs(issuing.ca.cert.read_bytes() + root.ca.cert.read_bytes())
    der = leaf.certificate.public_bytes(Encoding.DER)
    checker = OcspChecker(OcspSettings(scope="leaf" if part == "verdict-leaf" else "chain"))
    peer = Peer.of(der, cas)
    checker._cache[der] = (None, time.time() + 3600)  # a good answer, as a lookup leaves it
    checker._cache[issuing.ca.certificate.public_bytes(Encoding.DER)] = (None, time.time() + 3600)  # its CA's

    context = FacadeContext(ssl.PROTOCOL_TLS_SERVER)
    context.client_cas = cas
    context.peer(der)

    async def loop() -> None:
        if part == "kept":
            for _ in range(calls):
                _, view, pems = context.peer(bytes(bytearray(der)))
                dict(view), list(pems)
        elif part in ("verdict", "verdict-leaf"):
            for _ in range(calls):  # the Peer the context keeps (FacadeContext.peer), as a server has it
                assert checker.verdict(peer) is None
        else:
            for _ in range(calls):
                Peer.of(bytes(bytearray(der)), cas if part == "peer" else None).view()

    asyncio.run(loop())


def _instructions(part: str, calls: int, out: Path) -> float:
    return callgrind_run_total(__file__, ["--inner", part, "--calls", str(calls)], out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--inner", choices=["verdict", "verdict-leaf", "peer", "peer-alone", "kept"])
    parser.add_argument("--parts", nargs="*", help="measure these parts only (default: all)")
    args = parser.parse_args()
    if args.inner:
        _run(args.inner, args.calls)
        return
    work = Path(tempfile.mkdtemp(prefix="ocsp-cached-callgrind-"))
    for part, what in (("peer-alone", "reading the client certificate without the chain (Peer.of + view)"),
                       ("peer", "reading the client certificate (Peer.of + view), every mutual-TLS connection"),
                       ("kept", "finding it read already (FacadeContext.peer, a certificate seen before)"),
                       ("verdict-leaf", "the cached OCSP verdict (OcspChecker.verdict), --tls-ocsp-scope leaf"),
                       ("verdict", "the cached OCSP verdict of the leaf and its intermediate CA (scope chain)")):
        if args.parts and part not in args.parts:
            continue
        many = _instructions(part, args.calls, work / f"{part}.many")
        none = _instructions(part, 0, work / f"{part}.none")
        print(f"{what}: {(many - none) / args.calls:,.0f} instructions a connection")


if __name__ == "__main__":
    main()
