"""The far side's partial mirror: every carried repository written under ``DIR/<os>/<name>/<path>``.

The bundle is untrusted: the lock's names and paths were checked when it was read (no ``..``, no
absolute path, safe ``os``/``name``), every byte is hashed as it streams out of the bundle (a blob
that does not match its digest stops the write before its last byte is kept), and here each target
is resolved again and must stay inside DIR, with no symbolic link on the way. Each file is written
under a temporary name in its own folder and renamed into place, so a web server never serves half
a file; a file already there with the right sha256 is left alone, so a second push is cheap.

``verify_packages`` checks a packages folder against the lock again: every file present, its size
and sha256 as carried. The distribution's own signatures are checked by the far side's apt or dnf
itself: they are the very bytes the distribution signed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mirrorkit.errors import InputError, OperationError
from mirrorkit.files import write_error
from mirrorkit.lock import Lock
from mirrorkit.lockpackages import LockPackageRepo

CHUNK = 1 << 20


@dataclass
class PackagesReport:
    repos: int = 0
    files_written: int = 0
    files_kept: int = 0
    bytes_written: int = 0
    problems: list[str] = field(default_factory=list)


def _targets(repos: Iterable[LockPackageRepo]) -> dict[str, list[tuple[str, int]]]:
    """sha256 hex -> [(far-side relative path, size)]."""
    out: dict[str, list[tuple[str, int]]] = {}
    for repo in repos:
        for f in repo.files:
            out.setdefault(f.sha256, []).append((f"{repo.os}/{repo.name}/{f.path}", f.size))
    return out


def safe_target(root: Path, rel: str) -> Path:
    """``root/rel``, refused when it would leave ``root`` or pass through a symbolic link."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or rel.startswith("/") or "\\" in rel:
        raise InputError(f"unsafe package path {rel!r}")
    target = root.joinpath(*parts)
    current = root
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise InputError(f"{current}: a symbolic link inside the packages folder; refusing to write through it")
    if target.is_symlink():
        raise InputError(f"{target}: a symbolic link; refusing to replace it")
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(target.parent)]) != real_root:
        raise InputError(f"{rel}: leaves {root}")
    return target


def file_matches(path: Path, sha256: str, size: int) -> bool:
    try:
        if not path.is_file() or path.stat().st_size != size:
            return False
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
        return h.hexdigest() == sha256
    except OSError:
        return False


def write_packages(lock: Lock, blobs: Iterable[tuple[str, int, object]], root: Path) -> PackagesReport:
    """Write every package repository of ``lock`` under ``root`` from ``blobs`` (digest, size, stream).

    ``blobs`` is the bundle reader's ``iter_blobs()``: every blob once, hash-checked as it streams.
    """
    report = PackagesReport(repos=len(lock.package_repos))
    wanted = _targets(lock.package_repos)
    if not wanted:
        return report
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, str(root)) from None
    todo: dict[str, list[Path]] = {}
    for hexdigest, places in wanted.items():
        for rel, size in places:
            target = safe_target(root, rel)
            if file_matches(target, hexdigest, size):
                report.files_kept += 1
            else:
                todo.setdefault(hexdigest, []).append(target)
    done: set[str] = set()
    for digest, size, stream in blobs:
        hexdigest = digest.removeprefix("sha256:")
        targets = todo.get(hexdigest)
        if not targets:
            drain = getattr(stream, "drain", None)
            if drain is not None:
                drain()
            continue
        first = targets[0]
        tmp = first.with_name(f".{first.name}.mirrorkit-tmp")
        try:
            first.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as out:
                while chunk := stream.read(CHUNK):  # type: ignore[attr-defined]
                    out.write(chunk)
            for other in targets[1:]:
                other.parent.mkdir(parents=True, exist_ok=True)
                copy = other.with_name(f".{other.name}.mirrorkit-tmp")
                copy.unlink(missing_ok=True)
                os.link(tmp, copy)
                os.replace(copy, other)
            os.replace(tmp, first)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise write_error(exc, str(first.parent)) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        report.files_written += len(targets)
        report.bytes_written += size * len(targets)
        done.add(hexdigest)
    lost = sorted(set(todo) - done)
    if lost:
        raise OperationError(f"the bundle lacks {len(lost)} package file(s) its lock lists (e.g. sha256:{lost[0]}): "
                             "give every volume of the bundle")
    return report


def verify_packages(lock: Lock, root: Path) -> PackagesReport:
    """Every carried file under ``root``, with its size and sha256; problems listed, nothing written."""
    report = PackagesReport(repos=len(lock.package_repos))
    if not lock.package_repos:
        report.problems.append("the bundle carries no package repositories")
        return report
    for hexdigest, places in _targets(lock.package_repos).items():
        for rel, size in places:
            target = safe_target(root, rel)
            if not target.is_file():
                report.problems.append(f"missing: {rel}")
            elif not file_matches(target, hexdigest, size):
                report.problems.append(f"different: {rel} (not the carried sha256 {hexdigest[:12]}…)")
            else:
                report.files_kept += 1
    return report
