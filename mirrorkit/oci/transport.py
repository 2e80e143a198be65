"""Where and how to reach each registry: endpoint, TLS, plain HTTP.

TLS is verified unless the user names a registry with ``--insecure``; only a
named registry is ever reached over plain HTTP. ``--source-endpoint`` reaches an
upstream (``nvcr.io``) through another address — a pull-through cache, or a
registry on loopback in tests — while plans keep the real upstream names; an
``http://`` endpoint is insecure by that explicit choice.

CAs to trust: ``--ca-cert FILE`` (every registry), ``--ca-cert HOST[:PORT]=FILE`` (that registry only;
both repeatable, every bundle given is trusted) and the containers/docker convention
``certs.d/HOST[:PORT]/*.crt`` (that registry only), looked up in
/etc/containers/certs.d and /etc/docker/certs.d — or, instead of those, in
``--certs-dir DIR`` / ``$MIRRORKIT_CERTS_DIR`` (like skopeo's ``--cert-dir``).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from mirrorkit.errors import InputError
from mirrorkit.refs import check_host

CERTS_DIRS = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))
CERTS_DIR_ENV = "MIRRORKIT_CERTS_DIR"


@dataclass
class Endpoints:
    overrides: dict[str, str] = field(default_factory=dict)
    insecure: set[str] = field(default_factory=set)
    ca_certs: tuple[str, ...] = ()                                   # trusted for every registry
    certs_dirs: tuple[Path, ...] = CERTS_DIRS
    host_cas: dict[str, tuple[str, ...]] = field(default_factory=dict)  # HOST[:PORT] -> its own CA bundles

    @classmethod
    def from_options(cls, source_endpoints: tuple[str, ...] | list[str] = (),
                     insecure: tuple[str, ...] | list[str] = (),
                     ca_cert: str | tuple[str, ...] | list[str] | None = None,
                     certs_dir: str | None = None) -> Endpoints:
        overrides: dict[str, str] = {}
        for item in source_endpoints or ():
            name, sep, url = item.partition("=")
            name, url = name.strip(), url.strip().rstrip("/")
            if not sep or not name or not url.startswith(("http://", "https://")):
                raise InputError(f"--source-endpoint {item!r}: expected NAME=http(s)://HOST[:PORT]")
            if "/" in url.split("://", 1)[1]:
                raise InputError(f"--source-endpoint {item!r}: the URL must not have a path")
            if "@" in url:
                raise InputError(f"--source-endpoint {name}=...: credentials do not belong in the URL "
                                 "(use an auth file or --password-stdin)")
            overrides[name.lower()] = url
        hosts = set()
        for host in insecure or ():
            host = host.strip()
            if not host or "/" in host:
                raise InputError(f"--insecure {host!r}: expected HOST[:PORT]")
            hosts.add(check_host(host, "--insecure host"))
        every, per_host = _ca_options([ca_cert] if isinstance(ca_cert, str) else list(ca_cert or ()))
        # --certs-dir (else $MIRRORKIT_CERTS_DIR) replaces the /etc folders: tests and
        # unprivileged users keep their certs.d elsewhere, and nothing is read from /etc then.
        what = "--certs-dir" if certs_dir else CERTS_DIR_ENV
        certs_dir = certs_dir or os.environ.get(CERTS_DIR_ENV) or None
        if certs_dir and not Path(certs_dir).is_dir():
            raise InputError(f"{what} {certs_dir}: folder not found")
        return cls(overrides, hosts, every, (Path(certs_dir),) if certs_dir else CERTS_DIRS, per_host)

    def base_url(self, registry: str) -> str:
        """``https://host`` unless overridden; the scheme of an insecure host is probed later."""
        if registry in self.overrides:
            return self.overrides[registry]
        if registry == "docker.io":
            return "https://registry-1.docker.io"
        return f"https://{registry}"

    def network_host(self, registry: str) -> str:
        """The host:port actually contacted for a registry name."""
        return self.base_url(registry).split("://", 1)[1]

    def is_insecure(self, registry: str) -> bool:
        if registry in self.insecure:
            return True
        url = self.overrides.get(registry)
        if url and (url.startswith("http://") or self.network_host(registry) in self.insecure):
            return True
        return self.network_host(registry) in self.insecure

    def ca_files(self, registry: str) -> list[Path]:
        """Extra CAs for a TLS-verified registry: --ca-cert, then certs.d/HOST:PORT/*.crt.

        Every ``*.crt`` there is a CA (the containers-certs.d(5) rule; ``ca.crt`` is
        the usual name); ``*.cert``/``*.key`` are client certificates, not CAs.
        """
        if self.is_insecure(registry):
            return []
        host = self.network_host(registry)
        files = [Path(f) for f in (*self.ca_certs, *self.host_cas.get(registry, ()),
                                   *(self.host_cas.get(host, ()) if host != registry else ()))]
        for base in self.certs_dirs:
            folder = base / host
            if folder.is_dir():
                files += sorted(p for p in folder.glob("*.crt") if p.is_file())
        return files

    def verify(self, registry: str) -> ssl.SSLContext | bool:
        if self.is_insecure(registry):
            return False
        files = self.ca_files(registry)
        if not files:
            return True
        ctx = ssl.create_default_context()
        for path in files:
            try:
                ctx.load_verify_locations(cafile=str(path))
            except (OSError, ssl.SSLError):
                # a garbled certs.d/HOST/*.crt: one line, not an ssl.SSLError traceback
                raise InputError(f"{path}: not a readable PEM CA certificate") from None
        return ctx



def _ca_options(values: list[str]) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """``--ca-cert`` values: FILE (every registry) or HOST[:PORT]=FILE (that one), each a readable PEM bundle."""
    every: list[str] = []
    per_host: dict[str, tuple[str, ...]] = {}
    for value in values:
        host, sep, path = value.partition("=")
        if not sep or Path(value).is_file():
            host, path = "", value
        else:
            host = check_host(host.strip(), "--ca-cert host")
        if not Path(path).is_file():
            raise InputError(f"--ca-cert {value}: file not found")
        try:   # a garbled bundle is bad input (exit 2), not an ssl.SSLError traceback mid-run
            ssl.create_default_context().load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError):
            raise InputError(f"--ca-cert {value}: not a readable PEM CA certificate") from None
        if host:
            per_host[host] = (*per_host.get(host, ()), path)
        else:
            every.append(path)
    return tuple(every), per_host
