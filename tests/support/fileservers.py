"""Real file servers for tests, on free loopback ports: vsftpd (FTP and FTPS) and OpenSSH (SFTP).

    with FtpServer(tmp, tls=True) as ftp:      # a test certificate made here with openssl
        ftp.port, ftp.root / "inbox", ftp.ca_file
    with FtpServer(tls="implicit") as ftp:     # FTPS with TLS from the first byte (implicit_ssl=YES)
    with SftpServer(tmp) as sftp:              # a host key and a client key made here
        sftp.port, sftp.root, sftp.client_key, sftp.known_hosts

vsftpd serves an anonymous user that may write into ``root/inbox`` (the server refuses a
writable root); sshd runs in the foreground with its own config, keys and pid file, root's
logins allowed with the test key only, and OpenSSH's sftp-server as the subsystem.
"""

from __future__ import annotations

import abc
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

from tests.support.services import free_port, require_command


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise AssertionError(f"{what} exited with {process.returncode}:\n{text[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not listening after {timeout}s")


def _free_range(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 right now."""
    import random

    for _ in range(200):
        base = random.randrange(20000, 60000)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free range of ports")


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA)."""
    openssl = require_command("openssl", "openssl")
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class _ServerProcess(abc.ABC):
    """A server run in the foreground in its own session on ``port``, its output in a log in
    ``folder`` (removed with everything in it when the ``with`` block ends)."""

    folder: Path
    port: int
    name = "server"
    process: subprocess.Popen[bytes] | None = None

    @abc.abstractmethod
    def command(self) -> tuple[list[str], str]:
        """The command line that runs the server, and the name of its log file in ``folder``."""

    def start(self) -> Self:
        argv, log_name = self.command()
        log = self.folder / log_name
        self.process = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                        start_new_session=True)
        _wait_port(self.port, self.process, log, self.name)
        return self

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(10)
            self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class FtpServer(_ServerProcess):
    name = "vsftpd"

    def __init__(self, tls: bool | str = False) -> None:
        """``tls``: False (plain FTP), True or "explicit" (AUTH TLS), "implicit" (TLS from the start)."""
        self.binary = require_command("vsftpd", "vsftpd")
        self.folder = Path(tempfile.mkdtemp(prefix="interlace-ftp-"))
        os.chmod(self.folder, 0o755)
        self.root = self.folder / "root"
        self.root.mkdir(mode=0o755)
        (self.root / "inbox").mkdir()
        empty = self.folder / "empty"
        empty.mkdir(mode=0o755)
        if os.geteuid() == 0:
            ftp = pwd.getpwnam("ftp")
            os.chown(self.root / "inbox", ftp.pw_uid, ftp.pw_gid)
        self.port = free_port()
        self.pasv = _free_range(8)  # a passive port per data connection open at once
        self.tls = "none" if not tls else "implicit" if tls == "implicit" else "explicit"
        lines = [
            "listen=YES", "listen_ipv6=NO", "listen_address=127.0.0.1", f"listen_port={self.port}", "background=NO",
            "anonymous_enable=YES", "local_enable=NO", "write_enable=YES", "anon_upload_enable=YES",
            "anon_mkdir_write_enable=YES", "anon_other_write_enable=YES", f"anon_root={self.root}",
            "no_anon_password=YES", "anon_umask=022", "pasv_enable=YES", f"pasv_min_port={self.pasv}",
            f"pasv_max_port={self.pasv + 7}", "pasv_address=127.0.0.1", "seccomp_sandbox=NO", "xferlog_enable=NO",
            f"secure_chroot_dir={empty}", "use_localtime=NO", "max_per_ip=50", "max_clients=50",
            f"vsftpd_log_file={self.folder / 'vsftpd.log'}", "dual_log_enable=YES",
        ]
        if self.tls != "none":
            self.cert, self.key = make_certificate(self.folder)
            lines += ["ssl_enable=YES", f"rsa_cert_file={self.cert}", f"rsa_private_key_file={self.key}",
                      "allow_anon_ssl=YES", "force_anon_logins_ssl=YES", "force_anon_data_ssl=YES",
                      "require_ssl_reuse=NO", "ssl_ciphers=HIGH"]
            if self.tls == "implicit":
                lines.append("implicit_ssl=YES")
        (self.folder / "vsftpd.conf").write_text("\n".join(lines) + "\n")

    @property
    def ca_file(self) -> Path:
        return self.cert

    def command(self) -> tuple[list[str], str]:
        return [self.binary, str(self.folder / "vsftpd.conf")], "server.out"


class SftpServer(_ServerProcess):
    name = "sshd"

    def __init__(self) -> None:
        self.sshd = require_command("sshd", "openssh-server")
        keygen = require_command("ssh-keygen", "openssh-client")
        self.folder = Path(tempfile.mkdtemp(prefix="interlace-sftp-"))
        os.chmod(self.folder, 0o755)
        self.root = self.folder / "files"
        self.root.mkdir()
        self.port = free_port()
        host_key = self.folder / "host_key"
        self.client_key = self.folder / "client_key"
        for key in (host_key, self.client_key):
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        authorized = self.folder / "authorized_keys"
        shutil.copy(self.client_key.with_suffix(".pub"), authorized)
        os.chmod(authorized, 0o600)
        self.known_hosts = self.folder / "known_hosts"
        public = host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n")
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        sftp_server = "/usr/lib/openssh/sftp-server"
        (self.folder / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
            f"PidFile {self.folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no",
            f"Subsystem sftp {sftp_server}", "LogLevel ERROR", "MaxStartups 50",
        ]) + "\n")
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation folder sshd insists on

    def command(self) -> tuple[list[str], str]:
        return [self.sshd, "-D", "-e", "-f", str(self.folder / "sshd_config")], "sshd.log"
