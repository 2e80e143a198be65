"""rpm-md's index, ``repodata/repomd.xml``: the files it lists, with their checksums.

``repomd.xml`` is the one file the repository signs (``repomd.xml.asc``); every other metadata file
is trusted through the checksum repomd gives for it, and every package through the checksum in
``primary``. Locations come from a file that may be unsigned (``--allow-unsigned-repo``), so each
must be a plain relative path that stays inside the repository.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import zstandard

from mirrorkit.errors import InputError, OperationError

_NS = "{http://linux.duke.edu/metadata/repo}"
_HASHES = {"sha": "sha1", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256", "sha384": "sha384",
           "sha512": "sha512", "md5": "md5"}
_MAX_OPEN = 4 << 30


@dataclass(frozen=True)
class RepoDataFile:
    """One ``<data>`` entry: its type (``primary``, ``filelists``, ``modules``…) and where it is."""

    type: str
    href: str
    checksum_type: str
    checksum: str
    size: int | None


def safe_relative(href: str, where: str) -> str:
    """A repository-relative path that cannot leave the repository (the metadata may be hostile)."""
    parts = href.split("/")
    if (not href or href.startswith("/") or "\\" in href or ":" in parts[0] or len(href) > 1024
            or any(p in ("", ".", "..") for p in parts) or any(ord(c) < 32 for c in href)):
        raise OperationError(f"{where}: unsafe location {href!r}")
    return href


def parse_repomd(data: bytes, where: str) -> list[RepoDataFile]:
    """The files ``repomd.xml`` lists, or a one-line error."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise OperationError(f"{where}: not valid XML ({exc})") from None
    if root.tag != f"{_NS}repomd":
        raise OperationError(f"{where}: not an rpm-md repomd.xml (root element {root.tag!r})")
    files = []
    for entry in root.findall(f"{_NS}data"):
        kind = entry.get("type") or ""
        loc = entry.find(f"{_NS}location")
        chk = entry.find(f"{_NS}checksum")
        if loc is None or chk is None or not kind:
            raise OperationError(f"{where}: a <data> entry lacks its type, location or checksum")
        if loc.get("{http://www.w3.org/XML/1998/namespace}base"):
            raise OperationError(f"{where}: {kind} lives at another base URL (xml:base), which is not carried")
        ctype = (chk.get("type") or "").lower()
        if ctype not in _HASHES or ctype == "md5":
            raise OperationError(f"{where}: {kind} has an unusable checksum type {ctype!r}")
        size_el = entry.find(f"{_NS}size")
        size_text = (size_el.text or "").strip() if size_el is not None else ""
        size = int(size_text) if size_text.isdigit() else None
        files.append(RepoDataFile(kind, safe_relative(loc.get("href") or "", where), ctype,
                                  (chk.text or "").strip().lower(), size))
    if not any(f.type == "primary" for f in files):
        raise OperationError(f"{where}: lists no primary metadata")
    if len({f.href for f in files}) != len(files):
        raise OperationError(f"{where}: lists one file twice")
    return files


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of a file by rpm-md's checksum type name (``sha256``, ``sha``…)."""
    h = hashlib.new(_HASHES[algorithm])
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _open(path: Path, name: str) -> IO[bytes]:
    """A reader of the uncompressed bytes; the caller closes it (the compression is told by ``name``)."""
    if name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))  # noqa: SIM115
    if name.endswith(".xz"):
        return lzma.open(path, "rb")  # noqa: SIM115
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")  # noqa: SIM115
    if name.endswith(".zst"):
        return zstandard.open(path, "rb")  # noqa: SIM115
    return path.open("rb")


def decompress(path: Path, dest: Path, name: str) -> Path:
    """A metadata file uncompressed to ``dest`` (gz, xz, bz2, zst or plain, told by its repository ``name``)."""
    try:
        total = 0
        with _open(path, name) as src, dest.open("wb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                total += len(chunk)
                if total > _MAX_OPEN:
                    raise OperationError(f"{name}: uncompresses to more than {_MAX_OPEN >> 30} GiB")
                out.write(chunk)
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise OperationError(f"{name}: cannot uncompress it ({exc})") from None
    except ValueError as exc:
        raise InputError(f"{name}: cannot uncompress it ({exc})") from None
    return dest
