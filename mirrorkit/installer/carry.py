"""The offline installer inside a bundle (``pull-bundle --with-installer``): one tar, stored as one blob.

A bundle's volumes hold only the layout and its blobs (the reader refuses anything else),
so the installer travels as one more blob: a plain tar of the installer folder under
``mirrorkit-installer/``, written deterministically (sorted names, no owners, mtime 0) so
the same installer always has the same digest. The lock lists it (``installer``: digest,
size, version, platforms, Pythons) and, like every blob, the reader hashes it before it is
trusted. Its name is its hash, so on a host with no mirrorkit yet ``tar`` and ``sha256sum``
take it out and check it (:func:`extract_commands`), before ``install.sh`` checks every
file again.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import tarfile
from pathlib import Path

from mirrorkit.installer.build import SCRIPT, Installer, read_installer
from mirrorkit.lock import LockInstaller
from mirrorkit.oci.layout import BlobStore

TOP = "mirrorkit-installer"


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() or info.name.endswith(f"/{SCRIPT}") else 0o644
    return info


def pack(installer: Installer, store: BlobStore) -> LockInstaller:
    """The installer folder as one tar blob in ``store``; returns its lock entry."""
    partial = store.tmp / f"installer.{os.getpid()}.tar"
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(installer.root, arcname=TOP, recursive=False, filter=_reset)
        for rel in sorted({*installer.files, "wheels"}):
            tar.add(installer.root / rel, arcname=f"{TOP}/{rel}", recursive=False, filter=_reset)
    h = hashlib.sha256()
    with partial.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    size = partial.stat().st_size
    store.adopt(partial, digest, hashed=digest)
    return LockInstaller(digest=digest, size=size, version=installer.version, platforms=list(installer.platforms),
                         pythons=list(installer.pythons), file=f"mirrorkit-installer-{installer.version}.tar")


def load(root: Path) -> Installer:
    """A prebuilt installer folder (``--installer DIR``), checked against its SHA256SUMS."""
    return read_installer(root)


def extract_commands(entry: LockInstaller, volumes: list[str]) -> list[str]:
    """Shell lines that take the installer out of the bundle and install mirrorkit, with tar alone.

    In a split bundle the blob is in one of the volumes: each is asked, the others say nothing.
    """
    member = f"blobs/sha256/{entry.digest.removeprefix('sha256:')}"
    out = shlex.quote(entry.file)
    take = (f"tar -xOf {shlex.quote(volumes[0])} {member} > {out}" if len(volumes) == 1 else
            f"for v in {' '.join(map(shlex.quote, volumes))}; do tar -xOf \"$v\" {member} 2>/dev/null; done > {out}")
    return [take,
            f"echo '{entry.digest.removeprefix('sha256:')}  {entry.file}' | sha256sum -c",
            f"tar -xf {out}",
            f"sh {TOP}/{SCRIPT} --prefix /opt/mirrorkit  # then: /opt/mirrorkit/bin/mirrorkit --help"]
