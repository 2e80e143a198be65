"""serve: a read-only registry (and package tree) straight from a bundle, for a site with none yet."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mirrorkit.cli.common import bundle_key_option, check_bundle_keys
from mirrorkit.errors import InputError

if TYPE_CHECKING:
    from mirrorkit.bundle.reader import BundleReader


@click.command("serve", epilog="""
\b
Examples:
  mirrorkit serve bundles/gpu.tar --addr 0.0.0.0:5000
  mirrorkit serve bundles/gpu.000.tar --addr 0.0.0.0:5443 --tls-cert reg.crt --tls-key reg.key --htpasswd htpasswd
  mirrorkit serve bundles/gpu.tar --prefix mirror --log-format json --trust-checksums
  mirrorkit serve bundles/gpu.tar --addr 0.0.0.0:5000 --print-systemd-unit > /etc/systemd/system/mirrorkit-serve.service
""")
@click.argument("bundle", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--addr", default="127.0.0.1:5000", show_default=True, metavar="HOST:PORT",
              help="Where to listen (0.0.0.0:5000 for every interface; port 0 picks a free one).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True), help="Serve HTTPS with this certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), help="The certificate's private key (PEM).")
@click.option("--htpasswd", type=click.Path(dir_okay=False, exists=True), help="Require basic auth: users and bcrypt hashes (htpasswd -B).")
@click.option("--prefix", metavar="PATH", help="Serve the images under PATH (default: the plan's --registry prefix; '/' for none).")
@click.option("--log-format", type=click.Choice(("text", "json")), default="text", show_default=True,
              help="Access log lines on standard output.")
@click.option("--trust-checksums", is_flag=True,
              help="Check each volume against its .sha256 file only, instead of hashing every blob.")
@click.option("--print-systemd-unit", is_flag=True, help="Print a systemd unit running this command, and exit.")
@bundle_key_option
def serve_command(bundle: tuple[str, ...], addr: str, tls_cert: str | None, tls_key: str | None,
                  htpasswd: str | None, prefix: str | None, log_format: str, trust_checksums: bool,
                  print_systemd_unit: bool, bundle_keys: tuple[str, ...]) -> None:
    """Serve a bundle read-only as an OCI registry, verified first, from its volumes in place."""
    from mirrorkit.serve.run import ServeOptions, parse_addr, serve

    if (tls_cert is None) != (tls_key is None):
        raise InputError("--tls-cert and --tls-key go together")
    host, port = parse_addr(addr)
    opts = ServeOptions([Path(b) for b in bundle], host, port, Path(tls_cert) if tls_cert else None,
                        Path(tls_key) if tls_key else None, Path(htpasswd) if htpasswd else None, prefix,
                        log_format, trust_checksums,
                        check_signature=_signature_check([Path(b) for b in bundle], bundle_keys))
    if print_systemd_unit:
        from mirrorkit.serve.unit import systemd_unit

        click.echo(systemd_unit(opts), nl=False)
        return
    serve(opts, lambda line: click.echo(line, err=True))


def _signature_check(paths: list[Path], keys: tuple[str, ...]) -> Callable[[BundleReader], None] | None:
    """--bundle-key: the lock's signature checked before any blob is hashed, and the served lock is that very lock."""
    if not keys:
        return None

    def check(reader: BundleReader) -> None:
        signed = check_bundle_keys(paths, keys)
        if hashlib.sha256(reader.lock_bytes).hexdigest() != signed.lock_sha256:
            raise InputError("the lock changed after its signature was checked")
    return check
