"""The facade's TLS context, rebuilt when its files change: certificate rotation without a restart.

A Kubernetes Secret that is renewed (cert-manager, a new partner CA, a new CRL) appears as new
files under the same paths.  ``LiveTls`` reads the certificate, key, client CA and CRL files,
builds a server ``ssl.SSLContext`` from them and checks the files again every
``reload_interval`` seconds, on SIGHUP and on a management reload.  When their content changed
and the new files make a working context, new connections use it; connections already open
keep the one they shook hands with and finish on it.  Files that do not make a working context
(a certificate written before its key, a CRL that does not parse) are refused with a warning,
and the previous context keeps serving until the next check finds them whole.

How it works with uvicorn: uvicorn's ``ssl_context_factory`` returns the listener's context,
made once.  Its ``sni_callback``, which OpenSSL calls during every handshake (with or without
SNI), hands the connection the newest context (``ssl_object.context = ...``).  OpenSSL then
takes the certificate and key, the trusted CAs and the CRLs from that context.  What it keeps
from the listener's context: the verify mode (``--tls-client-cert``) and the verify flags (CRL
checks on or off), so changing those two needs a restart.  With client certificates, TLS session
resumption is off: a resumed session skips the certificate check, so a client whose CA was
removed or whose certificate was revoked could otherwise come back on an old session.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from engine import metrics
from engine.tls import CLIENT_CERT_MODES, FacadeContext, FacadeTls, TlsConfigError

if TYPE_CHECKING:  # cryptography is imported only by an engine that serves TLS (~100 ms at start)
    from engine.ocsp import OcspChecker

log = logging.getLogger("interlace.tls")


def build_context(tls: FacadeTls, ocsp: OcspChecker | None = None) -> FacadeContext:
    """A server context from the files as they are now (with ``ocsp``, the checker its
    connections' client certificates go to); a file that cannot serve raises TlsConfigError."""
    tls.check()
    context = FacadeContext(ssl.PROTOCOL_TLS_SERVER)
    context.ocsp = ocsp
    context.load_cert_chain(tls.certfile, tls.keyfile)
    context.verify_mode = CLIENT_CERT_MODES[tls.client_cert]
    if tls.client_ca is not None:
        context.load_verify_locations(tls.client_ca)
        from engine.tls_chain import ClientCAs

        # the same file compiled for ${tls.chain}: each connection's chain is one lookup away
        context.client_cas = ClientCAs(Path(tls.client_ca).read_bytes())
        # a resumed session is not verified again: without resumption a rotated CA or CRL applies
        # to every new connection (the cost: a full handshake per connection, which a gateway's
        # kept-alive connections pay once)
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
    if tls.crl is not None:
        context.load_verify_locations(tls.crl)  # PEM CRLs join the trust store
        # every certificate of the chain, not the client's alone: an intermediate CA its root's
        # CRL revokes takes the certificates it issued with it (tls.check_crl has made sure
        # that every client CA has its CRL, which the chain's checks then read)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    return context


def files_digest(tls: FacadeTls) -> str:
    """One digest of every TLS file's content (a missing file counts as empty)."""
    digest = hashlib.sha256()
    for path in (tls.certfile, tls.keyfile, tls.client_ca, tls.crl):
        digest.update(b"\0")
        if path is not None:
            try:
                digest.update(Path(path).read_bytes())
            except OSError:
                digest.update(b"\1missing")
    return digest.hexdigest()


def _checker(tls: FacadeTls) -> OcspChecker | None:
    if tls.ocsp is None:
        return None
    from engine.ocsp import OcspChecker

    return OcspChecker(tls.ocsp)


class LiveTls:
    """The facade's TLS context, kept current with its files (see the module docstring).

    ``listener_context()`` is what uvicorn serves with; ``refresh()`` checks the files once;
    ``watch()`` checks them every ``reload_interval`` seconds (0: only on refresh)."""

    def __init__(self, tls: FacadeTls) -> None:
        self.tls = tls
        # one checker for every context of these settings: its cached answers outlive a rotation
        self.ocsp = _checker(tls)
        self.current = build_context(tls, self.ocsp)
        self.digest = files_digest(tls)
        self._refused: str | None = None  # the digest of files already refused: warned once

    def listener_context(self) -> ssl.SSLContext:
        """The listening socket's context: it hands each handshake the newest context."""
        listener = build_context(self.tls, self.ocsp)

        def newest(ssl_object: ssl.SSLObject, _server_name: str | None, original: ssl.SSLContext) -> None:
            if self.current is not original:
                ssl_object.context = self.current

        listener.sni_callback = newest
        self.current = listener  # until a rotation, the listener's own context serves
        return listener

    def refresh(self) -> bool:
        """Check the files once: True when a new context now serves new connections."""
        digest = files_digest(self.tls)
        if digest == self.digest or digest == self._refused:
            return False
        try:
            context = build_context(self.tls, self.ocsp)
        except (TlsConfigError, ssl.SSLError, OSError, ValueError) as exc:
            self._refused = digest
            metrics.TLS_RELOADS.labels("refused").inc()
            log.warning("TLS files changed but cannot serve, keeping the previous certificates: %s", exc)
            return False
        self.current, self.digest, self._refused = context, digest, None
        metrics.TLS_RELOADS.labels("ok").inc()
        log.info("TLS files changed: new connections use the new certificate, client CA and CRL; "
                 "open connections finish on the previous ones")
        return True

    def reconfigure(self, new: FacadeTls | None) -> None:
        """Serve new connections with ``new`` settings (the flow folder's settings.tls, reloaded),
        when the listener can take them without a restart."""
        if new == self.tls:
            return
        why = self.tls.restart_needed_for(new)
        if why is not None:
            log.warning("settings.tls changed (%s): that takes a restart; new connections still use the "
                        "previous TLS settings", why)
            return
        assert new is not None
        previous, previous_ocsp = self.tls, self.ocsp
        if new.ocsp != previous.ocsp:  # OCSP is the engine's, not OpenSSL's: no restart needed
            self.ocsp = _checker(new)
        self.tls, self.digest = new, ""
        if not self.refresh():
            self.tls, self.ocsp, self.digest = previous, previous_ocsp, files_digest(previous)

    async def watch(self) -> None:
        """Refresh every ``reload_interval`` seconds (read each time: a reload may change it), until cancelled."""
        while True:
            interval = self.tls.reload_interval
            await asyncio.sleep(interval if interval > 0 else 1.0)
            if interval <= 0:
                continue
            try:
                self.refresh()
            except Exception:  # never let a rotation problem stop the watching
                log.exception("checking the TLS files failed; trying again in %gs", interval)

