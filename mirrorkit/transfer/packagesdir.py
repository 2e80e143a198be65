"""push-bundle --packages-dir: a bundle's package repositories written out as partial mirrors.

The bundle is untrusted: every file is read through the bundle reader (hashed against the lock) and
written by mirrorkit.packages.mirror (path-safe, atomic). Compressed volumes are read in one pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mirrorkit.bundle.reader import BundleReader
from mirrorkit.errors import InputError
from mirrorkit.packages.mirror import PackagesReport, write_packages


def write_packages_dir(paths: list[Path], root: Path) -> tuple[PackagesReport, str | None]:
    """Write every carried package repository under ``root``; returns the report and the plan's registry."""
    with BundleReader(paths) as reader:
        lock = reader.lock
        if not lock.package_repos:
            raise InputError("--packages-dir: the bundle carries no package repositories "
                             "(pull-bundle --package-source carries them)")
        wanted = {f"sha256:{f.sha256}" for r in lock.package_repos for f in r.files}

        def blobs() -> Iterator[Any]:
            if not reader.random_access:        # compressed volumes: one pass, every blob hashed
                yield from reader.iter_blobs()
                return
            for digest in sorted(wanted):
                with reader.open_blob(digest) as stream:
                    yield digest, stream.size, stream

        return write_packages(lock, blobs(), root), lock.plan.registry
