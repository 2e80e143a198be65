"""Writes the work folder's OCI layout plus the lock as one or more tar volumes.

A plain (uncompressed) volume is written by the kernel: each blob's bytes go from
the store file to the volume with ``copy_file_range`` (``sendfile``, or plain reads
and writes, where that is refused), while a second thread hashes the same bytes
for the volume's ``.sha256`` (and, for a blob the caller does not vouch for, its
digest). Python touches each byte once, for the hash, and both cores work.

A set of volumes is only ever presented whole: every volume and every
``.sha256`` is written under a hidden ``.NAME.partial`` name first; only then are
the volumes renamed into place and, last, their checksums. A kill at any
moment therefore leaves either the older files, volumes without checksums
(which the reader refuses as an incomplete set), or the whole new set.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Collection
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from mirrorkit import interrupt
from mirrorkit.bundle.plain import check_stored_digest, member_info, write_plain
from mirrorkit.bundle.volumes import (
    CHUNK,
    META_CAPS,
    SIGNATURE_MEMBER,
    Piece,
    Progress,
    checksum_path,
    older_volumes,
    volume_paths,
    volume_yaml,
)
from mirrorkit.errors import InputError, OperationError
from mirrorkit.files import disk_full, is_disk_full
from mirrorkit.lock import Lock
from mirrorkit.progress import human


def write_bundle(layout_dir: Path, lock: Lock, output: Path, split: int | None = None,
                 compress: str | None = None, progress: Progress | None = None,
                 on_commit: Callable[[str], None] | None = None, trusted: Collection[str] = (),
                 consume: bool = False, lock_signature: str | None = None) -> list[Path]:
    """Write the lock and the layout's lock blobs as one or more tar volumes; return the volume paths.

    Only blobs in ``lock.blobs`` are written (a differential bundle leaves the
    others out). With ``split`` blobs are packed greedily, manifests first, so
    each volume's tar stays at most ``split`` bytes (before compression); a blob
    that no volume can hold whole is cut into parts over consecutive volumes.
    ``progress`` receives the number of blob bytes copied, chunk by chunk, so a
    progress bar can use the sum of the lock's blob sizes as its total.

    All volumes are written as ``.NAME.partial`` and renamed only once every
    one is complete, so a failure (a missing blob, a full disk) leaves no
    partial or half-set bundle behind and does not touch an older bundle of
    the same name. ``on_commit`` is called before each rename or removal of
    the commit phase (tests kill the process there).

    Every blob is hashed again as it is written and refused if it does not match its
    name, except those in ``trusted``: blobs the caller put in the store during this
    same run, hashed as they arrived (a pull's fresh downloads). Blobs left by an
    earlier run, or by anything else, are always checked.

    ``consume`` removes each work-folder blob as soon as its last byte is in a volume
    (pull-bundle without --keep-work): the blob's space is handed to the bundle as it is
    written, so the filesystem holding both needs about one bundle, not two. The volume
    hash may run behind the copy by at most the largest blob (a removed file's space
    comes back once it is hashed), so the bundle needs twice that on top at most. A
    write that fails then leaves fewer blobs for the rerun to reuse.

    ``lock_signature`` (mirrorkit.trust.bundlesig's base64 text over exactly the lock bytes
    written here) travels in every volume as ``bundle.yaml.sig``, right after ``index.json``.
    """
    if compress not in (None, "zstd"):
        raise InputError(f"unknown compression {compress!r}: use 'zstd' or none")
    if split is not None and (not isinstance(split, int) or isinstance(split, bool) or split <= 0):
        raise InputError(f"invalid split size {split!r}: expected a positive number of bytes")
    layout_dir, output = Path(layout_dir), Path(output)
    lock_bytes = lock.dumps().encode()
    layout = _read_layout_file(layout_dir, "oci-layout")
    index = _read_layout_file(layout_dir, "index.json")
    blobs = _layout_blobs(layout_dir, lock)
    signature = [(SIGNATURE_MEMBER, lock_signature.encode())] if lock_signature is not None else []
    base = (_member_bytes(len(lock_bytes)) + _member_bytes(len(layout)) + _member_bytes(len(index))
            + sum(_member_bytes(len(data)) for _, data in signature)
            + _member_bytes(len(volume_yaml(lock.id, 1 << 20, 1 << 20, [], split=split)) + 64)
            + 512 + 1024 + tarfile.RECORDSIZE)
    groups = _assign(blobs, split, base, lock.manifest_digests()) if split else [blobs]
    paths = volume_paths(output, len(groups), compress, split is not None)
    total = sum(base + sum(_piece_cost(p) for p in group) for group in groups)
    cut = {p.digest for group in groups for p in group if p.part is not None}
    for piece in blobs:
        if piece.digest in cut and piece.digest not in trusted:
            _check_whole(piece)   # its parts go to several volumes: no single pass sees the whole blob
    trusted = frozenset(trusted) | cut
    mtime = _mtime(lock.created)
    written = [0]
    volumes: list[tuple[Path, Path]] = []
    checksums: list[tuple[Path, Path]] = []
    renamed: list[Path] = []
    current = paths[0]
    step = on_commit or (lambda what: None)
    try:
        for number, (group, path) in enumerate(zip(groups, paths, strict=True)):
            current = path.with_name(f".{path.name}.partial")
            sha_path = checksum_path(path)
            volumes.append((current, path))
            checksums.append((sha_path.with_name(f".{sha_path.name}.partial"), sha_path))
            whole = [(p.digest, p.size) for p in group if p.part is None]
            parts = [p for p in group if p.part is not None]
            head = [("bundle.yaml", lock_bytes),
                    ("volume.yaml", volume_yaml(lock.id, number, len(groups), whole, parts, split)),
                    ("oci-layout", layout), ("index.json", index), *signature]
            hexdigest = _write_volume(current, head, group, compress, mtime, progress, written,
                                      trusted, _consumer(layout_dir) if consume else None,
                                      max((p.size for p in blobs), default=0) if consume else None)
            current = checksums[-1][0]
            _write_synced(current, f"{hexdigest}  {path.name}\n".encode())
        interrupt.check()              # Ctrl-C while writing: not one volume is presented as complete
        current = paths[0]
        _commit(volumes, checksums, older_volumes(output, compress, split is not None, paths), renamed, step)
    except BaseException as exc:
        # an incomplete set of volumes is as misleading as a partial one: none of it stays
        for temp, _ in volumes + checksums:
            temp.unlink(missing_ok=True)
        for final in renamed:
            final.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(layout_dir, f"writing the bundle {output} (about {human(max(total - written[0], 0))} "
                            "more were needed)", removed=current) from None
        if isinstance(exc, OSError):
            raise OperationError(f"cannot write {current}: {exc.strerror or exc}") from None
        raise
    return paths


def _commit(volumes: list[tuple[Path, Path]], checksums: list[tuple[Path, Path]], older: list[Path],
            renamed: list[Path], step: Callable[[str], None]) -> None:
    """Put a fully written set in place so that a kill at any step never leaves a set that checks out
    but is not whole.

    Old checksums go first (an older volume left behind can then no longer pass
    ``sha256sum -c``), then the new volumes, then the older set's extra volumes,
    and the new checksums last: until every volume is in place no new checksum
    exists, and the reader refuses a set where some volumes have a checksum and
    others have none.
    """
    for final in [f for _, f in volumes] + older:
        old_sum = checksum_path(final)
        if old_sum.exists():
            step(f"unlink {old_sum.name}")
            old_sum.unlink(missing_ok=True)
    for temp, final in volumes:
        step(f"rename {final.name}")
        os.replace(temp, final)
        renamed.append(final)
    for stale in older:
        step(f"unlink {stale.name}")
        stale.unlink(missing_ok=True)
    _fsync_dir(volumes[0][1].parent)
    for temp, final in checksums:
        step(f"rename {final.name}")
        os.replace(temp, final)
        renamed.append(final)
    _fsync_dir(volumes[0][1].parent)


def _read_layout_file(layout_dir: Path, name: str) -> bytes:
    path = layout_dir / name
    try:
        size = path.stat().st_size
        if size > META_CAPS[name]:
            raise OperationError(f"{path} is {size} bytes, more than a bundle may carry ({META_CAPS[name]})")
        return path.read_bytes()
    except OSError as exc:
        raise OperationError(f"work directory {layout_dir} is not an OCI layout: cannot read {name}: "
                             f"{exc.strerror or exc}") from None


def _layout_blobs(layout_dir: Path, lock: Lock) -> list[Piece]:
    """The lock's blobs as they sit in the layout, manifests first so they land in volume 0."""
    manifests = lock.manifest_digests()
    ordered = sorted(lock.blobs, key=lambda b: b.digest not in manifests)
    out = []
    for blob in ordered:
        path = layout_dir / "blobs" / "sha256" / blob.digest.removeprefix("sha256:")
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise OperationError(f"blob {blob.digest} is missing from the work directory {layout_dir}: "
                                 f"{exc.strerror or exc}") from None
        if size != blob.size:
            raise OperationError(f"blob {blob.digest} in {path} has {size} bytes but the lock says {blob.size}")
        out.append(Piece(blob.digest, blob.size, path))
    return out


def _member_bytes(size: int) -> int:
    return 512 + (size + 511) // 512 * 512


def _blob_cost(size: int) -> int:
    # header + padded data + its volume.yaml line; sizes beyond ustar's 8 GiB need a pax header
    pax = 1024 if size >= 1 << 33 else 0
    return _member_bytes(size) + pax + 92 + len(str(size))


PART_LINE = 256     # a part's volume.yaml entry (digest, size, part, offset, length) fits in this
MIN_ROOM = 4096     # data bytes a volume must have room for beside its repeated head


def _part_cost(length: int) -> int:
    return _member_bytes(length) + (1024 if length >= 1 << 33 else 0) + PART_LINE


def _piece_cost(piece: Piece) -> int:
    return _blob_cost(piece.size) if piece.part is None else _part_cost(piece.nbytes)


def _assign(blobs: list[Piece], split: int, base: int, manifests: set[str]) -> list[list[Piece]]:
    """Pack blobs into volumes of at most ``split`` bytes each (a hard limit), in order.

    A blob that fits in a volume of its own is never cut: it starts a new volume when the
    current one is too full. A larger one fills the current volume's room and goes on in
    the next ones as parts. Manifests are never cut (readers hold them whole); every
    volume repeats the head (``base`` bytes: the lock, the layout files), so a ``split``
    that leaves no room beside it is refused.
    """
    if split - base - PART_LINE - 512 < MIN_ROOM:
        raise InputError(f"split size {split} bytes is too small: every volume repeats the lock and the layout "
                         f"files ({base} bytes), so a volume needs at least {base + PART_LINE + 512 + MIN_ROOM} bytes")
    groups: list[list[Piece]] = [[]]
    used = base
    for blob in blobs:
        cost = _blob_cost(blob.size)
        if used + cost <= split:
            groups[-1].append(blob)
            used += cost
            continue
        if base + cost <= split or blob.digest in manifests:
            if base + cost > split:
                raise InputError(f"split size {split} bytes is too small for manifest {blob.digest} "
                                 f"({blob.size} bytes; manifests are never cut)")
            if groups[-1]:
                groups.append([])
            groups[-1].append(blob)
            used = base + cost
            continue
        offset = number = 0
        while offset < blob.size:
            room = (split - used - _part_cost(0) - (1024 if split - used >= 1 << 33 else 0)) // 512 * 512
            if room < 512:
                groups.append([])
                used = base
                continue
            length = min(room, blob.size - offset)
            groups[-1].append(Piece(blob.digest, blob.size, blob.path, offset, length, number))
            used += _part_cost(length)
            offset += length
            number += 1
            if offset < blob.size:
                groups.append([])
                used = base
    return groups


def _check_whole(piece: Piece) -> None:
    """Hash a work-folder blob that will be cut into parts, before any of it is written."""
    hasher = hashlib.sha256()
    try:
        with open(piece.path, "rb") as f:
            while chunk := f.read(4 * CHUNK):
                hasher.update(chunk)
    except OSError as exc:
        raise OperationError(f"blob {piece.digest}: cannot read {piece.path}: {exc.strerror or exc}") from None
    check_stored_digest(piece.digest, "sha256:" + hasher.hexdigest())


def _mtime(created: str) -> int:
    """The lock's creation time, so rebuilding a bundle from the same lock gives the same bytes."""
    try:
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0, int(when.timestamp()))
    except (TypeError, ValueError, OverflowError):
        return 0


class _HashingWriter:
    """Hashes and counts what reaches the volume file, so the .sha256 needs no second read."""

    def __init__(self, raw: IO[bytes], written: list[int]) -> None:
        self._raw, self._written = raw, written
        self.hash = hashlib.sha256()

    def write(self, data: Any) -> int:
        self._raw.write(data)
        self.hash.update(data)
        self._written[0] += len(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()


class _SourceBlob:
    """Reads a blob from the work directory and refuses to finish one that does not hash to its name.

    The work directory is ours, but a corrupt file there would otherwise be
    shipped across the air gap and found only when the push fails.
    """

    def __init__(self, path: Path, digest: str, size: int, progress: Progress | None, verify: bool = True,
                 start: int = 0) -> None:
        self._path, self._digest, self._remaining, self._progress = path, digest, size, progress
        self._hash = hashlib.sha256() if verify else None
        try:
            self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
            self._file.seek(start)
        except OSError as exc:
            raise OperationError(f"blob {digest} cannot be read from the work directory: "
                                 f"{exc.strerror or exc}: {path}") from None
        if size == 0:
            self._check()

    def read(self, n: int = -1) -> bytes:
        n = self._remaining if n < 0 else min(n, self._remaining)
        if n == 0:
            return b""
        try:
            data = self._file.read(n)
        except OSError as exc:
            raise OperationError(f"blob {self._digest}: cannot read {self._path}: {exc.strerror or exc}") from None
        if not data:
            raise OperationError(f"blob {self._digest} shrank while being written: {self._path}")
        if self._hash is not None:
            self._hash.update(data)
        self._remaining -= len(data)
        if self._remaining == 0:
            self._check()
        if self._progress:
            self._progress(len(data))
        return data

    def _check(self) -> None:
        if self._hash is not None:
            check_stored_digest(self._digest, "sha256:" + self._hash.hexdigest())

    def close(self) -> None:
        self._file.close()


def _consumer(layout_dir: Path) -> Callable[[Piece], None]:
    def consume(piece: Piece) -> None:
        last = piece.part is None or piece.offset + piece.nbytes == piece.size    # its last byte is written
        if last and piece.path.parent.parent.parent == layout_dir:               # only ever the work folder's
            piece.path.unlink(missing_ok=True)
    return consume


def _write_volume(partial: Path, head: list[tuple[str, bytes]], blobs: list[Piece],
                  compress: str | None, mtime: int, progress: Progress | None, written: list[int],
                  trusted: frozenset[str] = frozenset(), on_written: Callable[[Piece], None] | None = None,
                  max_lag: int | None = None) -> str:
    if compress is None:
        return write_plain(partial, head, blobs, mtime, progress, written, trusted, on_written, max_lag)
    with open(partial, "wb") as raw:
        out = _HashingWriter(raw, written)
        zstd = zstandard.ZstdCompressor(level=3).stream_writer(cast(IO[bytes], out), closefd=False)
        with tarfile.open(fileobj=cast(IO[bytes], zstd), mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
            tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # stdlib, not in typeshed
            for name, data in head:
                tar.addfile(member_info(name, len(data), mtime), io.BytesIO(data))
            for piece in blobs:
                source = _SourceBlob(piece.path, piece.digest, piece.nbytes, progress,
                                     verify=piece.digest not in trusted, start=piece.offset)
                with closing(source):
                    tar.addfile(member_info(piece.member, piece.nbytes, mtime), source)
                if on_written:
                    on_written(piece)
        zstd.close()
        raw.flush()
        os.fsync(raw.fileno())
    return out.hash.hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

