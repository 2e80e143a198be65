"""The tar header guard: a bundle is untrusted input, so every header is checked before its data.

Only the names and types the writer produces are allowed (``bundle.yaml``,
``volume.yaml``, ``oci-layout``, ``index.json``, ``bundle.yaml.sig``, ``blobs/sha256/<hex>``,
the two folders), each small file has a size cap, and extended headers that tarfile
would read whole into memory are capped too. What a damaged or hostile archive
makes tarfile or zstandard raise becomes a one-line InputError here.
"""
from __future__ import annotations

import errno
import os
import re
import stat
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Self

import zstandard

from mirrorkit.bundle.volumes import CHUNK, DIR_ENTRIES, META_CAPS, META_ORDER, SIGNATURE_MEMBER, MiB, Part
from mirrorkit.errors import InputError, OperationError

BLOB_NAME = re.compile(r"blobs/sha256/([0-9a-f]{64})")
PART_NAME = re.compile(r"parts/sha256/([0-9a-f]{64})\.(\d{3,})")   # a part of a blob split across volumes
HEX = re.compile(r"[0-9a-f]{64}")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_WINDOW = 1 << 27  # zstd's own default cap; the writer's level 3 needs far less
HEADER_CAP = MiB  # pax / GNU long-name payloads, which tarfile would otherwise read whole
TYPE_NAMES = {
    tarfile.SYMTYPE: "a symlink", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a fifo", tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file", tarfile.DIRTYPE: "a directory",
}

Progress = Callable[[int], None]



class HeaderTooBig(Exception):
    pass


class GuardedTarInfo(tarfile.TarInfo):
    """Refuses oversized pax / GNU long-name headers, which tarfile reads into memory whole, and notes
    why the member list ended: tarfile treats a cut-off or garbled header after the first one as a
    normal end of archive, which would hide a truncated volume.
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            tarfile_.mirrorkit_end = exc  # type: ignore[attr-defined]
            raise

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        meta = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                tarfile.SOLARIS_XHDTYPE)
        if self.type in meta and self.size > HEADER_CAP:
            raise HeaderTooBig(f"extended header of {self.size} bytes (limit {HEADER_CAP})")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


@contextmanager
def reading(where: str) -> Iterator[None]:
    """Turn what a damaged or hostile archive makes the libraries raise into one-line errors."""
    try:
        yield
    except HeaderTooBig as exc:
        raise InputError(f"{where}: {exc}") from None
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise InputError(f"{where}: corrupt or truncated volume: {exc}") from None
    except OSError as exc:
        raise OperationError(f"cannot read {where}: {exc.strerror or exc}") from None



def member_kind(where: str, member: tarfile.TarInfo, position: int, seen: set[str]) -> str:
    """Classify one header as meta / dir / blob / part, refusing anything the writer would never produce."""
    name = member.name
    bad = f"{where}: entry {name!r}"
    if "\\" in name:
        raise InputError(f"{bad}: backslash in entry name")
    if name.startswith("/"):
        raise InputError(f"{bad}: absolute path")
    if ".." in name.split("/"):
        raise InputError(f"{bad}: parent directory reference")
    if member.type == tarfile.DIRTYPE and name in DIR_ENTRIES:
        kind = "dir"
    elif member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and member.sparse is None:
        if name in META_CAPS:
            kind = "meta"
            if member.size > META_CAPS[name]:
                raise InputError(f"{bad}: {member.size} bytes, larger than the {META_CAPS[name]} allowed")
        elif BLOB_NAME.fullmatch(name):
            kind = "blob"
        elif PART_NAME.fullmatch(name):
            kind = "part"
        elif name.startswith("blobs/sha256/"):
            raise InputError(f"{bad}: blob name is not 64 lowercase hex digits")
        else:
            raise InputError(f"{bad}: unexpected entry (a bundle holds only {', '.join(META_ORDER)}, "
                             "blobs/sha256/<hex> and parts/sha256/<hex>.NNN)")
    else:
        what = TYPE_NAMES.get(member.type, f"of tar type {member.type!r}")
        raise InputError(f"{bad} is {what}; only regular files are allowed")
    if name in seen:
        raise InputError(f"{bad}: duplicate entry")
    seen.add(name)
    if position < len(META_ORDER) and name != META_ORDER[position]:
        raise InputError(f"{bad}: entry {position + 1} must be {META_ORDER[position]}")
    if name == SIGNATURE_MEMBER and position != len(META_ORDER):
        raise InputError(f"{bad}: the lock signature must be entry {len(META_ORDER) + 1}")
    return kind


def check_part(where: str, member: tarfile.TarInfo, parts: dict[str, Part]) -> Part:
    """A part member must be the one volume.yaml lists for its blob, with the length listed."""
    match = PART_NAME.fullmatch(member.name)
    assert match is not None         # member_kind said "part"
    digest = "sha256:" + match.group(1)
    part = parts.get(digest)
    if part is None or part.index != int(match.group(2)):
        raise InputError(f"{where}: {member.name} is not a part listed in volume.yaml")
    if member.size != part.length:
        raise InputError(f"{where}: {member.name} has {member.size} bytes but volume.yaml says {part.length}")
    return part


def check_blob(where: str, digest: str, size: int, sizes: dict[str, int], listed: dict[str, int] | None) -> None:
    expected = sizes.get(digest)
    if expected is None:
        raise InputError(f"{where}: blob {digest} is not one the lock carries")
    if size != expected:
        raise InputError(f"{where}: blob {digest} has {size} bytes but the lock says {expected}")
    if listed is not None and digest not in listed:
        raise InputError(f"{where}: blob {digest} is not listed in volume.yaml")



def detect(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise InputError(f"cannot read bundle volume {path}: {exc.strerror or exc}") from None
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if len(head) == 512 and head[257:262] == b"ustar":
        return "tar"
    raise InputError(f"{path}: not a bundle volume (neither a tar nor a zstd-compressed tar)")


def open_tar(src: Any, kind: str) -> tarfile.TarFile:
    if kind == "zstd":
        dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_WINDOW)
        src = dctx.stream_reader(src, read_size=CHUNK, read_across_frames=True, closefd=False)
    return tarfile.open(fileobj=src, mode="r|", tarinfo=GuardedTarInfo, bufsize=CHUNK)


def check_end(tar: tarfile.TarFile, where: str) -> None:
    """Refuse an archive whose member list ended anywhere but at a proper end-of-archive block."""
    end = getattr(tar, "mirrorkit_end", None)
    if isinstance(end, tarfile.EOFHeaderError):  # type: ignore[attr-defined]  # stdlib, not in typeshed
        return
    if isinstance(end, tarfile.InvalidHeaderError):  # type: ignore[attr-defined]
        raise InputError(f"{where}: corrupt tar header at byte {tar.offset}")
    raise InputError(f"{where}: truncated volume: the archive stops at byte {tar.offset} without its end marker")


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> bytes:
    f = tar.extractfile(member)
    data = f.read(member.size) if f else b""
    if len(data) != member.size:
        raise InputError(f"{where}: entry {member.name!r} is truncated")
    return data



def open_regular(path: Path, where: str) -> tuple[IO[bytes], os.stat_result]:
    """Open without following a symlink swapped in after the scan."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{where}: {path.name} is a symlink; only regular files are allowed") from None
        raise InputError(f"{where}: cannot open {path.name}: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InputError(f"{where}: {path.name} is not a regular file")
    return os.fdopen(fd, "rb"), st



def walk_dir(root: Path, rel: str) -> Iterator[str]:
    """Yield allowed regular files, refusing symlinks and anything unexpected (never following links)."""
    allowed = {"": ("bundle.yaml", "volume.yaml", "oci-layout", "index.json", SIGNATURE_MEMBER, "blobs", "parts"),
               "blobs": ("sha256",), "parts": ("sha256",)}
    try:
        entries = sorted(os.scandir(root / rel), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"cannot read {root / rel}: {exc.strerror or exc}") from None
    for entry in entries:
        name = f"{rel}/{entry.name}" if rel else entry.name
        bad = f"{root}: {name!r}"
        if entry.is_symlink():
            raise InputError(f"{bad} is a symlink; only regular files are allowed")
        if rel == "blobs/sha256":
            if not HEX.fullmatch(entry.name):
                raise InputError(f"{bad}: blob name is not 64 lowercase hex digits")
        elif rel == "parts/sha256":
            if not PART_NAME.fullmatch(name):
                raise InputError(f"{bad}: part name is not <64 lowercase hex digits>.NNN")
        elif entry.name not in allowed[rel]:
            raise InputError(f"{bad}: unexpected entry in a bundle directory")
        if name in DIR_ENTRIES:
            if not entry.is_dir(follow_symlinks=False):
                raise InputError(f"{bad} must be a directory")
            yield from walk_dir(root, name)
        elif not entry.is_file(follow_symlinks=False):
            raise InputError(f"{bad} is not a regular file")
        else:
            yield name
