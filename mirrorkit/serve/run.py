"""Verify a bundle, index it, and serve it until SIGTERM or SIGINT.

The order is the point: nothing is served before the whole bundle has been checked
(every blob hashed against the lock, or with ``trust_checksums`` every volume against its
``.sha256``); a bundle that fails is refused with one line and exit 1. A signed bundle's
signature is checked first, through ``check_signature`` (``--bundle-key``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from mirrorkit.bundle.reader import BundleReader
from mirrorkit.bundle.volumes import bundle_volumes
from mirrorkit.errors import InputError, OperationError
from mirrorkit.serve.accesslog import AccessLogger, access_logger
from mirrorkit.serve.app import ServeSettings, make_app
from mirrorkit.serve.auth import Htpasswd
from mirrorkit.serve.index import ServeIndex, build_index, check_prefix, default_prefix

SHUTDOWN_GRACE = 3.0     # seconds in-flight requests get after SIGTERM (the whole stop stays under 5 s)
Say = Callable[[str], None]
SignatureCheck = Callable[[BundleReader], None]


@dataclass
class ServeOptions:
    bundle: list[Path]
    host: str = "127.0.0.1"
    port: int = 5000
    tls_cert: Path | None = None
    tls_key: Path | None = None
    htpasswd: Path | None = None
    prefix: str | None = None          # None: the plan's --registry prefix
    log_format: str = "text"
    trust_checksums: bool = False
    check_signature: SignatureCheck | None = None   # --bundle-key: raises when the lock's signature fails


def parse_addr(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (every interface); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise InputError(f"--addr {text!r}: expected HOST:PORT, e.g. 0.0.0.0:5000")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    return host, int(port)


def bundle_paths(given: list[Path]) -> list[Path]:
    """One volume of a split bundle names them all (as push-bundle reads them); a folder is itself."""
    if len(given) == 1 and given[0].is_file():
        found = bundle_volumes(given[0])
        if len(found) > 1 and given[0].resolve() in {p.resolve() for p in found}:
            return found
    return given


def open_verified(paths: list[Path], trust_checksums: bool, check_signature: SignatureCheck | None,
                  say: Say) -> BundleReader:
    """The bundle, checked: any failure becomes one OperationError line (exit 1) saying it is not served."""
    where = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} volumes)"
    try:
        reader = BundleReader(paths)
        if not reader.random_access:
            raise InputError("compressed (zstd) volumes have no blobs at fixed offsets; decompress them first "
                             "(zstd -d VOLUME.tar.zst) and serve the .tar")
        if reader.lock.omitted:
            raise InputError(f"a differential bundle (it depends on {', '.join(reader.lock.depends_on) or 'another'})"
                             " lacks blobs that its images need: serve a full bundle")
        if check_signature is not None:
            check_signature(reader)
        start = time.monotonic()
        if trust_checksums:
            reader.verify_checksums(require_complete=True)
            how = "volumes match their .sha256 files"
        else:
            report = reader.verify(require_complete=True)
            how = f"{report.blobs} blobs hashed"
        say(f"verified bundle {reader.lock.id}: {how} ({time.monotonic() - start:.1f} s)")
        return reader
    except InputError as exc:
        raise OperationError(f"{where}: not served: {exc}") from None


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"cannot load TLS certificate {cert} / key {key}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    return context


def display_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def _n(count: int, one: str, many: str = "") -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


def announce(index: ServeIndex, opts: ServeOptions, port: int, say: Say) -> None:
    scheme = "https" if opts.tls_cert else "http"
    host = f"{display_host(opts.host)}:{port}"
    registry = f"{host}/{index.prefix}" if index.prefix else host
    files = len(index.packages)
    say(f"serving bundle {index.bundle_id} at {scheme}://{host}: {_n(index.images, 'image')} in "
        f"{_n(len(index.repositories), 'repository', 'repositories')}, {_n(index.charts, 'chart')}, "
        f"{_n(files, 'package file')} (read-only)")
    say(f"  images under {registry}/...; health at {scheme}://{host}/healthz"
        + (f"; packages at {scheme}://{host}/packages/" if files else ""))
    bundle = " ".join(str(p) for p in opts.bundle[:1])
    tls = "--ca-file /PATH/ON/NODES/ca.crt" if opts.tls_cert else f"--insecure {host}"
    say(f"next: mirrorkit rewrite-config {bundle} --registry {registry} {tls} --format containerd -o certs.d")


async def _serve(index: ServeIndex, opts: ServeOptions, say: Say) -> None:
    settings = ServeSettings(index, Htpasswd.load(opts.htpasswd) if opts.htpasswd else None,
                             tls=opts.tls_cert is not None)
    context = tls_context(opts.tls_cert, opts.tls_key) if opts.tls_cert and opts.tls_key else None
    runner = web.AppRunner(make_app(settings), handle_signals=False, access_log_class=AccessLogger,
                           access_log=access_logger(), access_log_format=opts.log_format,
                           shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    site = web.TCPSite(runner, opts.host, opts.port, ssl_context=context, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OperationError(f"cannot listen on {opts.host}:{opts.port}: {exc.strerror or exc}") from None
    port = int(runner.addresses[0][1]) if runner.addresses else opts.port   # the bound port, when 0 asked
    announce(index, opts, port, say)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        say("stopping: finishing requests in flight")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await runner.cleanup()
    say("stopped")


def serve(opts: ServeOptions, say: Say) -> None:
    """Verify, index, serve; returns after SIGTERM/SIGINT once the server has stopped."""
    prefix = check_prefix(opts.prefix) if opts.prefix is not None else None
    if opts.htpasswd is not None:
        Htpasswd.load(opts.htpasswd)             # a bad file is a usage error before any hashing
    if opts.tls_cert and opts.tls_key:
        tls_context(opts.tls_cert, opts.tls_key)
    reader = open_verified(bundle_paths(opts.bundle), opts.trust_checksums, opts.check_signature, say)
    index = build_index(reader, prefix if prefix is not None else default_prefix(reader.lock))
    asyncio.run(_serve(index, opts, say))
