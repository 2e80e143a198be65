"""A suite's signed ``Release`` and the ``Packages`` indices it covers, fetched and checked.

``InRelease`` (clear-signed) is tried first, then ``Release`` + ``Release.gpg``, as apt does. The
signature is checked by gpgv against the keys the sources entry names; only the signed bytes are
parsed. Each ``Packages`` index is then fetched by the path and sha256/size the signed Release lists
(``.xz``, then ``.gz``, then plain), so everything below the signature is checked by hash.

Every file is kept byte for byte as fetched, at its path relative to the repository root: the far
side's apt verifies the very same signature. When Release says ``Acquire-By-Hash: yes`` the far side's
apt asks for ``.../by-hash/SHA256/<hex>``, so each index is carried at that path too (one blob).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from debian.deb822 import Release

from mirrorkit.errors import NotFoundError, OperationError
from mirrorkit.packages.model import CarriedFile, Fetcher
from mirrorkit.packages.openpgp import verify_clearsigned, verify_detached

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*(/[A-Za-z0-9][A-Za-z0-9._+~-]*)*$")
INDEX_SUFFIXES = (".xz", ".gz", "")


def safe_path(path: str, what: str) -> str:
    """A repository-relative path from (signed, yet untrusted) metadata: no ``..``, no absolute path."""
    if not _SAFE.match(path) or ".." in path.split("/"):
        raise OperationError(f"{what}: unsafe path {path!r}")
    return path


@dataclass
class SuiteIndex:
    """What one suite gives: its signed files, the Packages indices (local paths) and their carried files."""

    suite: str
    signed_by: str
    files: list[CarriedFile] = field(default_factory=list)
    indices: list[Path] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


def _keep(data: bytes, rel: str, files_dir: Path, kind: str = "metadata") -> CarriedFile:
    digest = hashlib.sha256(data).hexdigest()
    target = files_dir / digest
    if not target.exists():
        tmp = files_dir / f".{digest}.tmp"
        tmp.write_bytes(data)
        tmp.replace(target)
    return CarriedFile(rel, digest, len(data), kind)  # type: ignore[arg-type]


def fetch_suite(base: str, suite: str, components: list[str], arch: str, keys: list[Path],
                fetcher: Fetcher, files_dir: Path, work: Path, allow_unsigned: bool, where: str) -> SuiteIndex:
    """Fetch and verify ``dists/<suite>/`` Release and the Packages of ``components`` for ``arch``."""
    dists = f"dists/{safe_path(suite, where)}"
    files: list[CarriedFile] = []
    content: bytes
    signed_by = ""
    try:
        inrelease = fetcher.fetch_bytes(f"{base}/{dists}/InRelease")
    except NotFoundError:
        inrelease = b""
    if inrelease:
        if keys:
            content, signed_by = verify_clearsigned(inrelease, keys, f"{base}/{dists}/InRelease")
        elif allow_unsigned:
            content = _strip_clearsign(inrelease)
        else:
            raise OperationError(f"{where}: no signed-by key to check {base}/{dists}/InRelease "
                                 "(name the keyring, or --allow-unsigned-repo)")
        files.append(_keep(inrelease, f"{dists}/InRelease", files_dir))
    else:
        try:
            content = fetcher.fetch_bytes(f"{base}/{dists}/Release")
        except NotFoundError:
            raise OperationError(f"{base}/{dists}: no InRelease and no Release: is the suite name right?") from None
        try:
            signature = fetcher.fetch_bytes(f"{base}/{dists}/Release.gpg")
        except NotFoundError:
            signature = b""
        if not signature and not allow_unsigned:
            raise OperationError(f"{base}/{dists}: the repository is unsigned (no InRelease, no Release.gpg); "
                                 "--allow-unsigned-repo carries it anyway")
        if signature and keys:
            signed_by = verify_detached(content, signature, keys, f"{base}/{dists}/Release.gpg")
        elif not allow_unsigned:
            raise OperationError(f"{where}: no signed-by key to check {base}/{dists}/Release.gpg")
        files.append(_keep(content, f"{dists}/Release", files_dir))
        if signature:
            files.append(_keep(signature, f"{dists}/Release.gpg", files_dir))
    release = Release(content.decode("utf-8", "replace"))
    listed = {str(e["name"]): (str(e["sha256"]).lower(), int(e["size"])) for e in release.get("SHA256", [])}
    if not listed:
        raise OperationError(f"{base}/{dists}: Release lists no SHA256 sums")
    by_hash = str(release.get("Acquire-By-Hash", "")).strip().lower() == "yes"
    out = SuiteIndex(suite, signed_by, files, [], {k: str(v) for k, v in release.items() if isinstance(v, str)})
    for component in components:
        stem = f"{safe_path(component, where)}/binary-{arch}/Packages"
        choices = [stem + s for s in INDEX_SUFFIXES if stem + s in listed]
        if not choices:
            raise OperationError(f"{base}/{dists}: Release lists no {stem} (is {arch} built for {component}?)")
        for n, choice in enumerate(choices):     # mirrors need not serve every form Release lists
            sha, size = listed[choice]
            rel = f"{dists}/{choice}"
            local = files_dir / sha
            try:
                if not local.exists():
                    fetcher.download(f"{base}/{rel}", local, sha256=sha, size=size)
                break
            except NotFoundError:
                if n == len(choices) - 1:
                    raise
        files.append(CarriedFile(rel, sha, size, "metadata"))
        if by_hash:
            folder = rel.rsplit("/", 1)[0]
            files.append(CarriedFile(f"{folder}/by-hash/SHA256/{sha}", sha, size, "metadata"))
        index = work / f"{sha}-{choice.rsplit('/', 1)[-1]}"     # libsolv reads .xz/.gz by the name's suffix
        if not index.exists():
            index.symlink_to(local.resolve())
        out.indices.append(index)
    return out


def _strip_clearsign(text: bytes) -> bytes:
    """The body of an InRelease whose signature is not checked (--allow-unsigned-repo only)."""
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].startswith(b"-----BEGIN PGP SIGNED MESSAGE"):
        return text
    body_start = next((i + 1 for i, ln in enumerate(lines) if not ln.strip()), len(lines))
    end = next((i for i, ln in enumerate(lines) if ln.startswith(b"-----BEGIN PGP SIGNATURE")), len(lines))
    return b"".join(ln[2:] if ln.startswith(b"- ") else ln for ln in lines[body_start:end])
