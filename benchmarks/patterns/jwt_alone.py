"""The authenticate step of the jwt cell alone (no front, no call): what a new token costs beside
the signature primitive it cannot avoid, per algorithm, CPU µs or instructions per token.

    .venv/bin/python benchmarks/patterns/jwt_alone.py                       # CPU µs per token
    .venv/bin/python benchmarks/patterns/jwt_alone.py --algs RS256 --callgrind
    .venv/bin/python benchmarks/patterns/jwt_alone.py --callgrind --before /tmp/main-tree
    .venv/bin/python benchmarks/patterns/jwt_alone.py --cold                # + the primitive made cold

For each algorithm (RS256 on a 2048-bit key, ES256, EdDSA; one JWKS file holding the three keys,
as benchmarks/patterns/flows.yaml's jwt flow reads it) three figures:
- primitive: cryptography's ``public_key.verify`` on the already decoded signature and signing
  input, the floor under any verifier;
- fresh: the step on a token it has never seen (every token signed for this run, distinct);
- resent: the step on one token again and again (the gateway's usual assertion).
``fresh - resent`` is what a new token costs beyond a remembered one, and ``fresh - resent -
primitive`` what the engine adds around the signature check.  ``--at-once N`` sends the tokens N
to a turn of the event loop, as a busy server receives them (the step checks those after the
first of a turn together: engine/steps/_jwt_verify.py); CPU µs then show what callgrind cannot,
the primitive's code and the key kept in the CPU's caches from one check to the next.  The budget the issue
sets (15 % of the direct proxy) is read against ``inprocess.py --cells direct``.  Under callgrind
only the measured loops are counted, so the figure does not move with the machine's load.

``--cold`` adds the primitive's median CPU µs when each check follows 0, 250, 1000 or 4000 µs of
other Python work: a server's turn of the event loop runs a few ms of other requests' code between
two batches of checks, so the first check of each batch pays this, not the back-to-back cost.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ISSUER = "https://gateway.bench"
ALGS = ("RS256", "ES256", "EdDSA")
COLD_GAPS_US = (0, 250, 1000, 4000)  # --cold: other work before each check (a busy server's turn: ~1-4 ms)


def _control(*options: str) -> None:
    subprocess.run(["callgrind_control", *options, str(os.getpid())], check=True, stdout=subprocess.DEVNULL)


def _keys(work: Path) -> dict[str, Any]:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    private = {"RS256": rsa.generate_private_key(65537, 2048), "ES256": ec.generate_private_key(ec.SECP256R1()),
               "EdDSA": ed25519.Ed25519PrivateKey.generate()}
    exported = {"RS256": jwt.algorithms.RSAAlgorithm.to_jwk(private["RS256"].public_key()),
                "ES256": jwt.algorithms.ECAlgorithm.to_jwk(private["ES256"].public_key()),
                "EdDSA": jwt.algorithms.OKPAlgorithm.to_jwk(private["EdDSA"].public_key())}
    (work / "jwks.json").write_text(json.dumps({"keys": [{**json.loads(jwk), "kid": f"k-{alg}", "use": "sig"}
                                                         for alg, jwk in exported.items()]}))
    return private


def _primitive(alg: str, private: Any, tokens: list[str]) -> Any:
    """A loop over ``public_key.verify`` with the inputs decoded beforehand."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

    public = private.public_key()
    inputs = []
    for token in tokens:
        signing_input, _, signature = token.rpartition(".")
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        if alg == "ES256":  # JWS carries r||s; cryptography takes DER
            raw = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        inputs.append((signing_input.encode(), raw))
    if alg == "RS256":
        pad, digest = padding.PKCS1v15(), hashes.SHA256()

        def loop() -> None:
            for message, signature in inputs:
                public.verify(signature, message, pad, digest)
    elif alg == "ES256":
        scheme = ec.ECDSA(hashes.SHA256())

        def loop() -> None:
            for message, signature in inputs:
                public.verify(signature, message, scheme)
    else:
        def loop() -> None:
            for message, signature in inputs:
                public.verify(signature, message)
    return loop


def _cold(alg: str, private: Any, tokens: list[str], gaps_us: tuple[int, ...]) -> list[float]:
    """The primitive's median CPU µs when each check follows about ``gap`` µs of other Python
    work (JSON in and out, as a request's code between two checks): what a check costs made
    inside a server's request, where the primitive's code and the key are out of the CPU's
    caches, against the same check made right after another (gap 0)."""
    import json as json_module

    one = _primitive(alg, private, tokens[:1])  # a loop over one token: one check
    filler = [{f"k{n}": [n, str(n), {"x": n}] for n in range(40)} for _ in range(8)]

    def other_work(rounds: int) -> None:
        for n in range(rounds):
            json_module.loads(json_module.dumps(filler[n % 8]))

    started = time.thread_time()
    other_work(200)
    round_us = (time.thread_time() - started) / 200 * 1e6
    medians = []
    for gap in gaps_us:
        rounds = round(gap / round_us)
        took = []
        for _ in range(min(len(tokens), 300)):
            other_work(rounds)
            started_ns = time.thread_time_ns()
            one()
            took.append((time.thread_time_ns() - started_ns) / 1000)
        medians.append(sorted(took)[len(took) // 2])
    return medians


async def _measure(args: argparse.Namespace, counted: bool) -> None:
    import jwt

    from engine.message import Message
    from engine.runtime import Runtime

    work = Path(tempfile.mkdtemp(prefix="interlace-jwt-"))
    private = _keys(work)
    os.environ["BENCH_JWKS"] = str(work / "jwks.json")
    os.environ.setdefault("BACKEND_URL", "http://127.0.0.1:9")  # the flow's call is never run here
    runtime = Runtime(HERE)
    flow = next(f for f in runtime.load().flows if f.name == "jwt")
    gc.set_threshold(10_000, 10, 10)  # as the server does (engine/server.py)
    step = flow.steps.items[0].run
    exp = int(time.time()) + 3600
    rounds = 1 if counted else 3
    results: list[tuple[str, float, float, float]] = []
    cold: list[tuple[str, list[float]]] = []
    for alg in args.algs.split(","):
        tokens = [jwt.encode({"iss": ISSUER, "sub": f"user-{n}", "exp": exp}, private[alg], algorithm=alg,
                             headers={"kid": f"k-{alg}"}) for n in range(args.tokens * rounds + 50)]
        primitive = _primitive(alg, private[alg], tokens[:args.tokens])

        async def one(token: str) -> Message:
            msg = Message(headers={"x-jwt-assertion": token})
            await step(msg)
            return msg

        async def steps(batch: list[str]) -> None:
            # a turn of the event loop after each token, or each group of --at-once (as requests
            # reach a server), so that the step checks them as it would there
            for start in range(0, len(batch), args.at_once):
                if args.at_once == 1:
                    msg = await one(batch[start])
                    await asyncio.sleep(0)
                else:
                    msg = (await asyncio.gather(*(one(token) for token in batch[start:start + args.at_once])))[-1]
            assert msg.attributes["auth"]["iss"] == ISSUER

        await steps(tokens[-50:])  # warm: the header learnt, the key prepared
        resent = [tokens[-1]] * args.tokens
        if counted:
            for what, batch in (("primitive", None), ("fresh", tokens[:args.tokens]), ("resent", resent)):
                _control("--zero")
                _control("--instr=on")
                if batch is None:
                    primitive()
                else:
                    await steps(batch)
                _control("--instr=off")
                _control(f"--dump={alg}-{what}")
            continue
        best = [float("inf")] * 3
        for round_ in range(rounds):
            batch = tokens[round_ * args.tokens:(round_ + 1) * args.tokens]
            started = time.process_time()
            primitive()
            best[0] = min(best[0], (time.process_time() - started) / args.tokens * 1e6)
            started = time.process_time()
            await steps(batch)
            best[1] = min(best[1], (time.process_time() - started) / args.tokens * 1e6)
            started = time.process_time()
            await steps(resent)
            best[2] = min(best[2], (time.process_time() - started) / args.tokens * 1e6)
        results.append((alg, best[0], best[1], best[2]))
        if args.cold:
            cold.append((alg, _cold(alg, private[alg], tokens, COLD_GAPS_US)))
    if not counted:
        print(f"{args.tokens} tokens x {rounds}, CPU µs per token, best of the rounds")
        _table(results, "µs")
    if cold:
        print("\nthe primitive after other work (--cold): median CPU µs of one check, by the µs of other "
              "Python work made before it")
        print("| alg | " + " | ".join(f"after {gap} µs" for gap in COLD_GAPS_US) + " |")
        print("|---|" + "---:|" * len(COLD_GAPS_US))
        for alg, medians in cold:
            print(f"| {alg} | " + " | ".join(f"{median:,.1f}" for median in medians) + " |")


def _table(rows: list[tuple[str, float, float, float]], unit: str) -> None:
    print(f"| alg | primitive {unit} | fresh token {unit} | resent token {unit} | fresh - resent | "
          "fresh - resent - primitive |")
    print("|---|---:|---:|---:|---:|---:|")
    for alg, primitive, fresh, resent in rows:
        print(f"| {alg} | {primitive:,.1f} | {fresh:,.1f} | {resent:,.1f} | {fresh - resent:,.1f} | "
              f"{fresh - resent - primitive:,.1f} |")


def _instructions(tree: Path, args: argparse.Namespace) -> list[tuple[str, float, float, float]]:
    out = Path(tempfile.mkdtemp(prefix="interlace-jwt-")) / "callgrind.out"
    subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                    sys.executable, __file__, "--algs", args.algs, "--tokens", str(args.tokens),
                    "--at-once", str(args.at_once), "--counted"],
                   cwd=tree, env={**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}, check=True,
                   stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    from benchmarks.hotpath_common import callgrind_totals  # this tree's (main put it on the path)

    totals = callgrind_totals(out, args.tokens)
    return [(alg, totals.get(f"{alg}-primitive", 0.0), totals.get(f"{alg}-fresh", 0.0),
             totals.get(f"{alg}-resent", 0.0)) for alg in args.algs.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algs", default=",".join(ALGS), help=f"of {', '.join(ALGS)}")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per measurement (default 2000)")
    parser.add_argument("--at-once", type=int, default=1,
                        help="tokens reaching the step in one turn of the event loop (default 1)")
    parser.add_argument("--callgrind", action="store_true", help="instructions per token under valgrind's callgrind")
    parser.add_argument("--cold", action="store_true",
                        help="also the primitive's CPU µs after 0, 250, 1000 and 4000 µs of other work "
                             "(not with --callgrind)")
    parser.add_argument("--before", type=Path, help="with --callgrind: also count this tree (a checkout), first")
    parser.add_argument("--counted", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for alg in args.algs.split(","):
        if alg not in ALGS:
            raise SystemExit(f"unknown algorithm {alg!r}; of {', '.join(ALGS)}")
    if args.counted:
        sys.path.insert(0, os.getcwd())
        asyncio.run(_measure(args, True))
    elif args.callgrind:
        sys.path.insert(0, str(HERE.parent.parent))
        trees = ([("before", args.before.resolve())] if args.before else []) + [("this tree", HERE.parent.parent)]
        for name, tree in trees:
            print(f"{name} ({tree}): instructions per token, {args.tokens} tokens")
            _table(_instructions(tree, args), "instr")
    else:
        sys.path.insert(0, str(HERE.parent.parent))
        asyncio.run(_measure(args, False))


if __name__ == "__main__":
    main()
