"""The ``interlace`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from engine.units import parse_size


def _run(args: argparse.Namespace) -> int:
    import gc

    # the worker's collector setting (engine/server.py) from the start: with the default, the
    # imports and the flows' loading ran ~120 young collections, 45-55 ms with 200 flows
    gc.set_threshold(10_000, 10, 10)
    from engine.observability import parse_levels, setup_logging
    from engine.server import ServeOptions, serve
    from engine.tls import FacadeTls, TlsConfigError

    try:
        levels = parse_levels(args.log_levels)
    except ValueError as exc:
        print(f"interlace run: --log-levels: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level, args.log_format, levels)
    try:
        tls = FacadeTls.from_options(args.tls_cert, args.tls_key, args.tls_client_ca, args.tls_client_cert,
                                     args.tls_crl, args.tls_reload_interval, ocsp=args.tls_ocsp,
                                     ocsp_responder=args.tls_ocsp_responder, ocsp_timeout=args.tls_ocsp_timeout,
                                     ocsp_scope=args.tls_ocsp_scope)
    except TlsConfigError as exc:
        print(f"interlace run: {exc}", file=sys.stderr)
        return 2
    return serve(ServeOptions(
        flows_dir=Path(args.dir), host=args.host, port=args.port, management_port=args.management_port,
        management_host=args.management_host, workers=args.workers, watch=args.watch,
        drain_timeout=args.drain_timeout, max_body=parse_size(args.max_body), designer=args.designer,
        insecure_management=args.insecure_management,
        max_header_bytes=parse_size(args.max_header_size), max_headers=args.max_headers,
        header_timeout=args.header_timeout, first_byte_timeout=args.first_byte_timeout,
        max_connections=args.max_connections, tls=tls,
    ))


def _validate(args: argparse.Namespace) -> int:
    from engine.loader import LoadErrors, load_project

    try:
        project = load_project(Path(args.dir))
    except LoadErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        count = len(exc.errors)
        print(f"{count} error{'s' if count != 1 else ''} in {args.dir}", file=sys.stderr)
        return 1
    for note in project.compiled.notes if project.compiled else ():
        print(f"note: {note}", file=sys.stderr)
    routes = sum(len(f.source.methods) for f in project.flows if f.source)
    print(f"ok: {len(project.flows)} flows, {routes} routes, {len(project.endpoints)} endpoints, "
          f"{len(project.sequences)} sequences in {len(project.files)} files")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from engine.schema import project_schema
    from engine.testing.schema import suite_schema

    # one document for flow files, with the suite format under $defs for tools that want both;
    # --suite prints the suite format as its own root, for editors mapping *.test.yaml to it
    schema = suite_schema() if args.suite else {**project_schema(), "$defs": {
        **project_schema()["$defs"], "test_suite": suite_schema()}}
    text = json.dumps(schema, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _docs(args: argparse.Namespace) -> int:
    from engine.docs import write_reference

    path = write_reference(Path(args.output))
    print(f"wrote {path}")
    return 0


BUILT_IN = frozenset({"run", "validate", "schema", "docs"})
PLUGIN_MODULES = ("engine.testing.cli", "deploy.cli", "designer.cli")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command`` one of this module's own commands, the other
    modules' commands are left out (importing them cost ``interlace run`` 0.1-0.3 s of start-up:
    the test runner, its mocks and the image builder are not needed to serve)."""
    parser = argparse.ArgumentParser(prog="interlace", description="Interlace: YAML mediation flows served over HTTP.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="serve the flows of a folder over HTTP",
                         description="Serve the flows of DIR: the facade on --port, management on --management-port.")
    run.add_argument("dir", nargs="?", default="flows", metavar="DIR", help="flow folder (default: flows)")
    run.add_argument("--host", default=os.environ.get("INTERLACE_HOST", "127.0.0.1"), help="facade address")
    run.add_argument("--port", type=int, default=int(os.environ.get("INTERLACE_PORT", "8290")), help="facade port")
    run.add_argument("--management-port", type=int, default=int(os.environ.get("INTERLACE_MANAGEMENT_PORT", "9201")),
                     help="port of health, flows, endpoints, metrics and reload")
    run.add_argument("--management-host", default=os.environ.get("INTERLACE_MANAGEMENT_HOST") or "127.0.0.1",
                     help="management address (default 127.0.0.1; any other needs INTERLACE_MANAGEMENT_TOKEN)")
    run.add_argument("--insecure-management", action="store_true",
                     default=os.environ.get("INTERLACE_INSECURE_MANAGEMENT", "").lower() in ("1", "true", "yes"),
                     help="serve management on a non-loopback --management-host without a token (not for "
                          "production: anyone reaching the port can reload and read the flows)")
    run.add_argument("--workers", type=int, default=int(os.environ.get("INTERLACE_WORKERS", "1")),
                     help="worker processes sharing the ports (one per core)")
    run.add_argument("--watch", action="store_true", help="reload when a file of DIR changes")
    run.add_argument("--drain-timeout", type=float, default=float(os.environ.get("INTERLACE_DRAIN_TIMEOUT", "20")),
                     help="seconds to finish requests in flight on SIGTERM (default 20)")
    run.add_argument("--max-body", default=os.environ.get("INTERLACE_MAX_BODY", "10MiB"),
                     help="largest request body accepted (default 10MiB; 413 beyond)")
    run.add_argument("--designer", action="store_true",
                     help="serve the designer on the management port under /designer/ (needs "
                          "INTERLACE_MANAGEMENT_TOKEN; open /designer/#token=...)")
    run.add_argument("--max-header-size", default=os.environ.get("INTERLACE_MAX_HEADER_SIZE", "32KiB"),
                     help="largest request line and headers together (default 32KiB; 431 beyond)")
    run.add_argument("--max-headers", type=int, default=int(os.environ.get("INTERLACE_MAX_HEADERS", "100")),
                     help="most header fields in a request (default 100; 431 beyond)")
    run.add_argument("--header-timeout", type=float, default=float(os.environ.get("INTERLACE_HEADER_TIMEOUT", "10")),
                     help="seconds from a request's first byte to the end of its headers (default 10; 408 beyond)")
    run.add_argument("--first-byte-timeout", type=float,
                     default=float(os.environ.get("INTERLACE_FIRST_BYTE_TIMEOUT", "10")),
                     help="seconds a new connection may stay silent before it is closed (default 10)")
    run.add_argument("--max-connections", type=int,
                     default=int(os.environ.get("INTERLACE_MAX_CONNECTIONS", "4096")),
                     help="open facade connections per worker (default 4096; a new one beyond gets 503)")
    run.add_argument("--tls-cert", default=os.environ.get("INTERLACE_TLS_CERT") or None,
                     help="serve the facade over TLS with this PEM certificate (chain) file")
    run.add_argument("--tls-key", default=os.environ.get("INTERLACE_TLS_KEY") or None,
                     help="the PEM private key of --tls-cert (when not in the same file)")
    run.add_argument("--tls-client-ca", default=os.environ.get("INTERLACE_TLS_CLIENT_CA") or None,
                     help="mutual TLS: the PEM CA certificate(s) that sign the clients' certificates")
    run.add_argument("--tls-client-cert", choices=["none", "optional", "required"],
                     default=os.environ.get("INTERLACE_TLS_CLIENT_CERT") or None,
                     help="required (the default with --tls-client-ca): no handshake without a client "
                          "certificate; optional: flows decide (authenticate: {client_cert: ...})")
    run.add_argument("--tls-crl", default=os.environ.get("INTERLACE_TLS_CRL") or None,
                     help="mutual TLS: PEM CRL(s) of the client CAs; a revoked client certificate, or one "
                          "below a revoked intermediate CA, fails the handshake (every client CA needs its CRL)")
    run.add_argument("--tls-ocsp", choices=["hard-fail", "soft-fail"],
                     default=os.environ.get("INTERLACE_TLS_OCSP") or None,
                     help="mutual TLS: ask each client certificate's OCSP responder whether it is revoked (a revoked "
                          "one's requests get 403); hard-fail: a responder that cannot answer refuses the client "
                          "(503), soft-fail: serves it and logs")
    run.add_argument("--tls-ocsp-responder", default=os.environ.get("INTERLACE_TLS_OCSP_RESPONDER") or None,
                     help="the OCSP responder URL asked instead of each certificate's own (its Authority Information "
                          "Access)")
    run.add_argument("--tls-ocsp-scope", choices=["chain", "leaf"],
                     default=os.environ.get("INTERLACE_TLS_OCSP_SCOPE") or None,
                     help="chain (the default, as nginx's ssl_ocsp on): ask about the client's certificate and each "
                          "intermediate CA of its chain, each from its issuer's responder; leaf: the client's alone")
    run.add_argument("--tls-ocsp-timeout", type=float,
                     default=float(os.environ["INTERLACE_TLS_OCSP_TIMEOUT"])
                     if os.environ.get("INTERLACE_TLS_OCSP_TIMEOUT") else None,
                     help="seconds an OCSP lookup may take (default 5); its connection waits for it, once per "
                          "certificate until the answer's nextUpdate")
    run.add_argument("--tls-reload-interval", type=float,
                     default=float(os.environ.get("INTERLACE_TLS_RELOAD_INTERVAL", "10")),
                     help="seconds between checks of the TLS files; changed files serve new connections "
                          "without a restart (default 10; 0: only on a reload)")
    run.add_argument("--log-level", default=os.environ.get("INTERLACE_LOG_LEVEL", "info"))
    run.add_argument("--log-format", choices=["text", "json"], default=os.environ.get("INTERLACE_LOG_FORMAT", "text"),
                     help="json: one object per line, for Fluent Bit or Fluentd; text: for a terminal")
    run.add_argument("--log-levels", default=os.environ.get("INTERLACE_LOG_LEVELS", ""),
                     help="levels per logger, e.g. interlace.request=warning,interlace.http=debug "
                          "(interlace.request writes one line per request)")
    run.set_defaults(func=_run)

    validate = sub.add_parser("validate", help="check a flow folder and report every error",
                              description="Load and compile DIR without serving; every error as file:line:column.")
    validate.add_argument("dir", metavar="DIR")
    validate.set_defaults(func=_validate)

    schema = sub.add_parser("schema", help="print the JSON Schema of flow files",
                            description="Print the JSON Schema of flow files (for editors' YAML language servers).")
    schema.add_argument("-o", "--output", help="write to this file instead of standard output")
    schema.add_argument("--suite", action="store_true", help="the schema of test suites (*.test.yaml) instead")
    schema.set_defaults(func=_schema)

    docs = sub.add_parser("docs", help="write the step reference generated from the registry",
                          description="Write the reference of every step kind and connector, from the registry.")
    docs.add_argument("-o", "--output", default="docs/reference.md")
    docs.set_defaults(func=_docs)

    for module in () if command in BUILT_IN else PLUGIN_MODULES:
        try:
            importlib.import_module(module).add_commands(sub)
        except ModuleNotFoundError as exc:
            if exc.name not in (module, module.rsplit(".", 1)[0]):
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
