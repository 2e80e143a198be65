"""A throw-away certificate authority for TLS tests, made with the ``openssl`` CLI.

No Python crypto package is needed: ``openssl`` (always on a build host) makes an
EC P-256 CA and server certificates whose subjectAltName covers ``127.0.0.1`` (an
IP SAN, which Go's TLS in docker-registry and skopeo insists on) and ``localhost``.
Keys are EC because they are generated in milliseconds.

    ca = make_ca(tmp_path / "pki")            # ca.crt, ca.key, server.crt, server.key
    RegistryServer(tls_cert=ca.cert, tls_key=ca.key)
    httpx.get(url, verify=ca.client_context())
    other = make_ca(tmp_path / "other")       # an unknown CA, for refusal tests
"""

from __future__ import annotations

import secrets
import shutil
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

OPENSSL = "openssl"
DEFAULT_HOSTS = ("127.0.0.1", "localhost")


class TLSKitError(RuntimeError):
    """openssl is missing or refused; the message carries its stderr."""


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which(OPENSSL)
    if binary is None:
        raise TLSKitError("openssl not found on PATH")
    proc = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise TLSKitError(f"openssl {args[0]} failed: {proc.stderr.strip()[-800:]}")


def _san(hosts: Sequence[str]) -> str:
    parts = []
    for host in hosts:
        try:
            ip_address(host)
            parts.append(f"IP:{host}")
        except ValueError:
            parts.append(f"DNS:{host}")
    return ",".join(parts)


@dataclass(frozen=True)
class TestCA:
    """A CA and one server certificate signed by it, all PEM files in ``dir``."""

    __test__ = False  # not a pytest test class, despite the name

    dir: Path
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    hosts: tuple[str, ...]

    def client_context(self) -> ssl.SSLContext:
        """An SSL context trusting only this CA, e.g. ``httpx.Client(verify=...)``."""
        return ssl.create_default_context(cafile=str(self.ca_cert))

    def server_context(self) -> ssl.SSLContext:
        """An SSL context serving the server certificate (for standard-library servers)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx

    def issue(self, name: str, hosts: Sequence[str] = DEFAULT_HOSTS, days: int = 2) -> tuple[Path, Path]:
        """Another server certificate (``NAME.crt``, ``NAME.key``) for ``hosts``, signed by this CA."""
        key, csr, crt, ext = (self.dir / f"{name}{s}" for s in (".key", ".csr", ".crt", ".ext"))
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key.name, cwd=self.dir)
        _openssl("req", "-new", "-key", key.name, "-subj", f"/CN={hosts[0]}", "-out", csr.name, cwd=self.dir)
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            f"subjectAltName={_san(hosts)}\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
        _openssl("x509", "-req", "-in", csr.name, "-CA", self.ca_cert.name, "-CAkey", self.ca_key.name,
                 "-set_serial", str(secrets.randbits(63)), "-days", str(days), "-sha256",
                 "-extfile", ext.name, "-out", crt.name, cwd=self.dir)
        csr.unlink(missing_ok=True)
        ext.unlink(missing_ok=True)
        key.chmod(0o600)
        return crt, key


def make_ca(directory: str | Path, hosts: Sequence[str] = DEFAULT_HOSTS, *, days: int = 2,
            name: str = "mirrorkit test CA") -> TestCA:
    """A new CA in ``directory`` (created) and a server certificate for ``hosts``."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=folder)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", str(days), "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash",
             "-out", "ca.crt", cwd=folder)
    (folder / "ca.key").chmod(0o600)
    partial = TestCA(folder, folder / "ca.crt", folder / "ca.key", folder / "server.crt", folder / "server.key",
                     tuple(hosts))
    partial.issue("server", hosts, days)
    return partial
