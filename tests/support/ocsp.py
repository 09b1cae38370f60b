"""An OCSP responder on 127.0.0.1: OpenSSL's (``openssl ocsp -index ... -rsigner ... -CA ...``)
answering for a CA made by the test (tests/support/pki.py) from an index of its certificates,
signed by a delegated responder certificate (OCSP-signing EKU).  A certificate not in the index
is ``unknown``.

OpenSSL 3.0's own ``-port`` listens on every interface (it takes a port number, no address), so
a small HTTP front bound to 127.0.0.1 takes each POSTed request and has ``openssl ocsp`` answer
it (``-reqin``/``-respout``: the same responder code, one process per request).  ``forge``
makes the front answer fixed bytes instead, for answers OpenSSL would never sign.
"""

from __future__ import annotations

import contextlib
import datetime
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.pki import Authority, Issued
from tests.support.services import free_port, require_command


def _index_line(issued: Issued, revoked: bool) -> str:
    cert = issued.certificate
    expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    serial = format(cert.serial_number, "X")
    serial = serial if len(serial) % 2 == 0 else "0" + serial  # whole bytes, as OpenSSL writes them
    subject = "/" + "/".join(f"{a.rfc4514_attribute_name}={a.value}" for a in cert.subject)
    revocation = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)).strftime("%y%m%d%H%M%SZ") \
        if revoked else ""
    return "\t".join(["R" if revoked else "V", expiry, revocation, serial, "unknown", subject]) + "\n"


class OcspResponder:
    """``openssl ocsp`` for ``ca`` behind 127.0.0.1 on a free port (``url`` is known before it
    starts, so the certificates can name it); ``start()`` / ``stop()`` it as the test needs."""

    def __init__(self, ca: Authority, folder: Path, next_update_minutes: int = 60) -> None:
        self.ca = ca
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        # named by its port: two responders of one PKI folder (a root's and an intermediate's) keep their own files
        self.signer = ca.issue(f"ocsp-responder-{self.port}", usage=ExtendedKeyUsageOID.OCSP_SIGNING)
        self.index = folder / "index.txt"
        self.next_update_minutes = next_update_minutes
        self.requests = 0  # answered since it was made
        self.forge: bytes | None = None  # answer these bytes instead of asking OpenSSL
        self.pause_mid_answer = 0.0  # seconds between the answer's two halves (a slow or proxied responder)
        self._openssl = require_command("openssl", "openssl")
        self._server: ThreadingHTTPServer | None = None

    def write_index(self, good: tuple[Issued, ...], revoked: tuple[Issued, ...] = ()) -> None:
        lines = [*(_index_line(i, False) for i in good), *(_index_line(i, True) for i in revoked)]
        self.index.write_text("".join(lines))
        (self.folder / "index.txt.attr").write_text("unique_subject = no\n")

    def answer(self, request: bytes) -> bytes:
        """OpenSSL's answer to one DER request."""
        self.requests += 1
        if self.forge is not None:
            return self.forge
        with tempfile.TemporaryDirectory(dir=self.folder) as work:
            asked, answered = Path(work) / "request.der", Path(work) / "response.der"
            asked.write_bytes(request)
            subprocess.run([self._openssl, "ocsp", "-index", str(self.index), "-rsigner", str(self.signer.cert),
                            "-rkey", str(self.signer.key), "-CA", str(self.ca.ca.cert), "-reqin", str(asked),
                            "-respout", str(answered), "-nmin", str(self.next_update_minutes)],
                           check=True, capture_output=True, timeout=30)
            return answered.read_bytes()

    def start(self) -> None:
        responder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                answer = responder.answer(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if responder.pause_mid_answer:
                    half = len(answer) // 2
                    self.wfile.write(answer[:half])
                    self.wfile.flush()
                    time.sleep(responder.pause_mid_answer)
                    answer = answer[half:]
                self.wfile.write(answer)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop answering: the port refuses connections from now on."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextlib.contextmanager
def running(responder: OcspResponder) -> Iterator[OcspResponder]:
    responder.start()
    try:
        yield responder
    finally:
        responder.stop()
