"""Bundles: the work directory's OCI layout plus the lock, written as tar volumes.

A volume is a complete tar holding, in this order: ``bundle.yaml`` (the whole
lock), ``volume.yaml`` (bundle id, volume index and count, the blobs in this
volume), ``oci-layout``, ``index.json``, then its share of
``blobs/sha256/<hex>``. Every volume repeats the lock, so each one can be
checked on its own and the volumes can be loaded in any order.

Volume names: without ``split`` the bundle is the single file ``output``. With
``split`` the ``.tar`` / ``.tar.zst`` suffix is taken off ``output`` and the
volumes are ``STEM.000.tar``, ``STEM.001.tar``, ... (``STEM.000.tar.zst``, ...
when compressed), so every volume still ends in a suffix tar tools recognise.
Each volume gets a ``<volume>.sha256`` file beside it in ``sha256sum`` format.

On the air-gapped side a bundle is untrusted input: every tar header is
checked against a short list of allowed names and types before its data is
touched, every blob is hashed, and nothing is ever written to disk while
reading. Memory stays flat: blobs move in 1 MiB chunks and only manifests
(at most 4 MiB each) are held whole.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import queue
import re
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import yaml
import zstandard

from mirrorkit import interrupt
from mirrorkit.errors import InputError, OperationError
from mirrorkit.lock import API_VERSION, Lock, loads_lock
from mirrorkit.refs import is_digest
from mirrorkit.yamlio import SafeLoader

MiB = 1 << 20
CHUNK = MiB
SMALL_LIMIT = 4 * MiB
VOLUME_KIND = "BundleVolume"
META_ORDER = ("bundle.yaml", "volume.yaml", "oci-layout", "index.json")
META_CAPS = {"bundle.yaml": 64 * MiB, "volume.yaml": 16 * MiB, "oci-layout": 64 << 10, "index.json": 16 * MiB}
DIR_ENTRIES = ("blobs", "blobs/sha256")
_BLOB_NAME = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_HEX = re.compile(r"[0-9a-f]{64}")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_WINDOW = 1 << 27  # zstd's own default cap; the writer's level 3 needs far less
_HEADER_CAP = MiB  # pax / GNU long-name payloads, which tarfile would otherwise read whole
_SHA_FILE_CAP = 4096
_TYPE_NAMES = {
    tarfile.SYMTYPE: "a symlink", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a fifo", tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file", tarfile.DIRTYPE: "a directory",
}

Progress = Callable[[int], None]


# --------------------------------------------------------------------------- writing


def volume_paths(output: Path, count: int, compress: str | None = None, split: bool = False) -> list[Path]:
    """Where ``write_bundle`` puts its volumes (see the module docstring for the scheme)."""
    output = Path(output)
    if not split:
        return [output]
    suffix = ".tar.zst" if compress == "zstd" else ".tar"
    stem = output.name.removesuffix(suffix)
    width = max(3, len(str(count - 1)))
    return [output.with_name(f"{stem}.{i:0{width}d}{suffix}") for i in range(count)]


def write_bundle(layout_dir: Path, lock: Lock, output: Path, split: int | None = None,
                 compress: str | None = None, progress: Progress | None = None) -> list[Path]:
    """Write the lock and the layout's lock blobs as one or more tar volumes; return the volume paths.

    Only blobs in ``lock.blobs`` are written (a differential bundle leaves the
    others out). With ``split`` blobs are packed greedily, manifests first, so
    each volume's tar stays at most ``split`` bytes (before compression) where
    possible; a single blob larger than ``split`` gets a volume of its own.
    ``progress`` receives the number of blob bytes copied, chunk by chunk, so a
    progress bar can use the sum of the lock's blob sizes as its total.

    All volumes are written as ``.NAME.partial`` and renamed only once every
    one is complete, so a failure (a missing blob, a full disk) leaves no
    partial or half-set bundle behind and does not touch an older bundle of
    the same name.
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
    base = (_member_bytes(len(lock_bytes)) + _member_bytes(len(layout)) + _member_bytes(len(index))
            + _member_bytes(len(_volume_yaml(lock.id, 1 << 20, 1 << 20, []))) + 512 + 1024 + tarfile.RECORDSIZE)
    groups = _assign(blobs, split, base) if split else [blobs]
    paths = volume_paths(output, len(groups), compress, split is not None)
    total = sum(base + sum(_blob_cost(size) for _, size, _ in group) for group in groups)
    mtime = _mtime(lock.created)
    written = [0]
    temps: list[tuple[Path, Path]] = []
    renamed: list[Path] = []
    current = paths[0]
    try:
        for number, (group, path) in enumerate(zip(groups, paths, strict=True)):
            current = path
            partial = path.with_name(f".{path.name}.partial")
            sha_path = path.with_name(path.name + ".sha256")
            sha_partial = path.with_name(f".{sha_path.name}.partial")
            temps += [(partial, path), (sha_partial, sha_path)]
            head = [("bundle.yaml", lock_bytes),
                    ("volume.yaml", _volume_yaml(lock.id, number, len(groups), [(d, s) for d, s, _ in group])),
                    ("oci-layout", layout), ("index.json", index)]
            hexdigest = _write_volume(partial, head, group, compress, mtime, progress, written)
            current = sha_path
            _write_synced(sha_partial, f"{hexdigest}  {path.name}\n".encode())
        interrupt.check()              # Ctrl-C while writing: not one volume is presented as complete
        for temp, final in temps:
            current = final
            os.replace(temp, final)
            renamed.append(final)
        _fsync_dir(output.parent)
    except BaseException as exc:
        # an incomplete set of volumes is as misleading as a partial one: none of it stays
        for temp, _ in temps:
            temp.unlink(missing_ok=True)
        for final in renamed:
            final.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(exc, current, total - written[0]) from None
        raise
    return paths


def _write_error(exc: OSError, path: Path, needed: int) -> OperationError:
    if exc.errno == errno.ENOSPC:
        return OperationError(f"cannot write {path}: no space left on device; about {max(needed, 0)} more bytes "
                              "are needed (nothing was kept)")
    return OperationError(f"cannot write {path}: {exc.strerror or exc}")


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


def _layout_blobs(layout_dir: Path, lock: Lock) -> list[tuple[str, int, Path]]:
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
        out.append((blob.digest, blob.size, path))
    return out


def _member_bytes(size: int) -> int:
    return 512 + (size + 511) // 512 * 512


def _blob_cost(size: int) -> int:
    # header + padded data + its volume.yaml line; sizes beyond ustar's 8 GiB need a pax header
    pax = 1024 if size >= 1 << 33 else 0
    return _member_bytes(size) + pax + 92 + len(str(size))


def _assign(blobs: list[tuple[str, int, Path]], split: int, base: int) -> list[list[tuple[str, int, Path]]]:
    groups: list[list[tuple[str, int, Path]]] = [[]]
    used = base
    for blob in blobs:
        cost = _blob_cost(blob[1])
        if groups[-1] and used + cost > split:
            groups.append([])
            used = base
        groups[-1].append(blob)
        used += cost
    return groups


def _volume_yaml(bundle_id: str, index: int, count: int, blobs: list[tuple[str, int]]) -> bytes:
    doc = {"apiVersion": API_VERSION, "kind": VOLUME_KIND, "bundle": bundle_id, "index": index, "count": count,
           "blobs": [{"digest": d, "size": s} for d, s in blobs]}
    return yaml.safe_dump(doc, sort_keys=False, width=120).encode()


def _mtime(created: str) -> int:
    """The lock's creation time, so rebuilding a bundle from the same lock gives the same bytes."""
    try:
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0, int(when.timestamp()))
    except (TypeError, ValueError, OverflowError):
        return 0


def _info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


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

    def __init__(self, path: Path, digest: str, size: int, progress: Progress | None) -> None:
        self._path, self._digest, self._remaining, self._progress = path, digest, size, progress
        self._hash = hashlib.sha256()
        try:
            self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
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
        self._hash.update(data)
        self._remaining -= len(data)
        if self._remaining == 0:
            self._check()
        if self._progress:
            self._progress(len(data))
        return data

    def _check(self) -> None:
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._digest:
            raise OperationError(f"blob {self._digest} in the work directory is corrupt: its bytes hash to {actual}")

    def close(self) -> None:
        self._file.close()


def _write_volume(partial: Path, head: list[tuple[str, bytes]], blobs: list[tuple[str, int, Path]],
                  compress: str | None, mtime: int, progress: Progress | None, written: list[int]) -> str:
    with open(partial, "wb") as raw:
        out = _HashingWriter(raw, written)
        zstd = zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False) if compress == "zstd" else None
        sink = out if zstd is None else zstd
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
            tar.copybufsize = CHUNK
            for name, data in head:
                tar.addfile(_info(name, len(data), mtime), io.BytesIO(data))
            for digest, size, path in blobs:
                source = _SourceBlob(path, digest, size, progress)
                with closing(source):
                    tar.addfile(_info(f"blobs/sha256/{digest.removeprefix('sha256:')}", size, mtime), source)
        if zstd is not None:
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


# --------------------------------------------------------------------------- reading


class _HeaderTooBig(Exception):
    pass


class _GuardedTarInfo(tarfile.TarInfo):
    """Refuses oversized pax / GNU long-name headers, which tarfile reads into memory whole, and notes
    why the member list ended: tarfile treats a cut-off or garbled header after the first one as a
    normal end of archive, which would hide a truncated volume.
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            tarfile_.mirrorkit_end = exc  # type: ignore[attr-defined]
            raise

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        meta = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                tarfile.SOLARIS_XHDTYPE)
        if self.type in meta and self.size > _HEADER_CAP:
            raise _HeaderTooBig(f"extended header of {self.size} bytes (limit {_HEADER_CAP})")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


@contextmanager
def _reading(where: str) -> Iterator[None]:
    """Turn what a damaged or hostile archive makes the libraries raise into one-line errors."""
    try:
        yield
    except _HeaderTooBig as exc:
        raise InputError(f"{where}: {exc}") from None
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise InputError(f"{where}: corrupt or truncated volume: {exc}") from None
    except OSError as exc:
        raise OperationError(f"cannot read {where}: {exc.strerror or exc}") from None


class BlobStream(io.RawIOBase):
    """One blob's bytes, limited to its size.

    The read that would hand out a blob's last bytes raises InputError instead
    if the blob does not hash to its digest, so a consumer streaming to a
    registry never completes an upload of tampered content.
    """

    def __init__(self, src: IO[bytes], digest: str, size: int, where: str, *, owned: bool = False,
                 on_bytes: Progress | None = None) -> None:
        super().__init__()
        self.digest, self.size = digest, size
        self._src, self._where, self._owned, self._on_bytes = src, where, owned, on_bytes
        self._remaining = size
        self._hash = hashlib.sha256()
        self._checked = False

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        if self._remaining == 0:
            self._finish()
            return b""
        n = self._remaining if n is None or n < 0 else min(n, self._remaining)
        if n == 0:
            return b""
        with _reading(self._where):
            data = self._src.read(n)
        if not data:
            raise InputError(f"{self._where}: blob {self.digest} is truncated: "
                             f"{self.size - self._remaining} of {self.size} bytes")
        self._hash.update(data)
        self._remaining -= len(data)
        if self._remaining == 0:
            self._finish()
        if self._on_bytes:
            self._on_bytes(len(data))
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def _finish(self) -> None:
        if self._checked:
            return
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self.digest:
            raise InputError(f"{self._where}: blob {self.digest} is corrupt: its bytes hash to {actual}")
        self._checked = True

    def close(self) -> None:
        if not self.closed and self._owned:
            self._src.close()
        super().close()


@dataclass
class VerifyReport:
    bundle_id: str
    volumes: int          # volumes given
    volume_count: int     # volumes the bundle was written as
    blobs: int
    bytes: int
    complete: bool        # every volume and every lock blob present


@dataclass
class _Volume:
    path: Path
    kind: str  # "tar", "zstd" or "dir"
    lock: Lock
    lock_hash: str
    meta: dict[str, bytes]
    index: int = 0
    count: int = 1
    blobs: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # the lock's, looked up once per blob header
    offsets: dict[str, int] = field(default_factory=dict)
    checksum: str | None = None


def _member_kind(where: str, member: tarfile.TarInfo, position: int, seen: set[str]) -> str:
    """Classify one header as meta / dir / blob, refusing anything the writer would never produce."""
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
        elif _BLOB_NAME.fullmatch(name):
            kind = "blob"
        elif name.startswith("blobs/sha256/"):
            raise InputError(f"{bad}: blob name is not 64 lowercase hex digits")
        else:
            raise InputError(f"{bad}: unexpected entry (a bundle holds only {', '.join(META_ORDER)} and "
                             "blobs/sha256/<hex>)")
    else:
        what = _TYPE_NAMES.get(member.type, f"of tar type {member.type!r}")
        raise InputError(f"{bad} is {what}; only regular files are allowed")
    if name in seen:
        raise InputError(f"{bad}: duplicate entry")
    seen.add(name)
    if position < len(META_ORDER) and name != META_ORDER[position]:
        raise InputError(f"{bad}: entry {position + 1} must be {META_ORDER[position]}")
    return kind


def _check_blob(where: str, digest: str, size: int, sizes: dict[str, int], listed: dict[str, int] | None) -> None:
    expected = sizes.get(digest)
    if expected is None:
        raise InputError(f"{where}: blob {digest} is not one the lock carries")
    if size != expected:
        raise InputError(f"{where}: blob {digest} has {size} bytes but the lock says {expected}")
    if listed is not None and digest not in listed:
        raise InputError(f"{where}: blob {digest} is not listed in volume.yaml")


def _parse_volume_yaml(data: bytes, where: str, lock: Lock) -> tuple[int, int, dict[str, int]]:
    try:
        doc = yaml.load(data.decode(), Loader=SafeLoader)  # noqa: S506 - a safe loader
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{where}: malformed volume.yaml: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict) or doc.get("kind") != VOLUME_KIND or doc.get("apiVersion") != API_VERSION:
        raise InputError(f"{where}: volume.yaml is not a mirrorkit volume description")
    if doc.get("bundle") != lock.id:
        raise InputError(f"{where}: volume.yaml names bundle {doc.get('bundle')!r} but bundle.yaml has id {lock.id!r}")
    index, count = doc.get("index"), doc.get("count")
    if not _is_int(count) or count < 1 or not _is_int(index) or not 0 <= index < count:
        raise InputError(f"{where}: volume.yaml has an invalid index {index!r} of count {count!r}")
    if not isinstance(doc.get("blobs"), list):
        raise InputError(f"{where}: volume.yaml 'blobs' must be a list")
    sizes = lock.blob_sizes()
    listed: dict[str, int] = {}
    for entry in doc["blobs"]:
        digest = entry.get("digest") if isinstance(entry, dict) else None
        size = entry.get("size") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not is_digest(digest) or not _is_int(size):
            raise InputError(f"{where}: volume.yaml has a malformed blob entry")
        if digest in listed:
            raise InputError(f"{where}: volume.yaml lists blob {digest} twice")
        if sizes.get(digest) != size:
            raise InputError(f"{where}: volume.yaml lists blob {digest} ({size} bytes), which the lock does not "
                             "carry with that size")
        listed[digest] = size
    return index, count, listed


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _detect(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise InputError(f"cannot read bundle volume {path}: {exc.strerror or exc}") from None
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if len(head) == 512 and head[257:262] == b"ustar":
        return "tar"
    raise InputError(f"{path}: not a bundle volume (neither a tar nor a zstd-compressed tar)")


def _open_tar(src: Any, kind: str) -> tarfile.TarFile:
    if kind == "zstd":
        dctx = zstandard.ZstdDecompressor(max_window_size=_ZSTD_WINDOW)
        src = dctx.stream_reader(src, read_size=CHUNK, read_across_frames=True, closefd=False)
    return tarfile.open(fileobj=src, mode="r|", tarinfo=_GuardedTarInfo, bufsize=CHUNK)


def _check_end(tar: tarfile.TarFile, where: str) -> None:
    """Refuse an archive whose member list ended anywhere but at a proper end-of-archive block."""
    end = getattr(tar, "mirrorkit_end", None)
    if isinstance(end, tarfile.EOFHeaderError):
        return
    if isinstance(end, tarfile.InvalidHeaderError):
        raise InputError(f"{where}: corrupt tar header at byte {tar.offset}")
    raise InputError(f"{where}: truncated volume: the archive stops at byte {tar.offset} without its end marker")


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> bytes:
    f = tar.extractfile(member)
    data = f.read(member.size) if f else b""
    if len(data) != member.size:
        raise InputError(f"{where}: entry {member.name!r} is truncated")
    return data


def _read_checksum(path: Path) -> str | None:
    """The hex digest from ``<volume>.sha256`` beside a volume, if there is one (it is untrusted too)."""
    sha = path.with_name(path.name + ".sha256")
    try:
        st = sha.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read {sha}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > _SHA_FILE_CAP:
        raise InputError(f"{sha}: not a sha256sum file")
    try:
        text = sha.read_bytes().decode()
    except (OSError, UnicodeDecodeError):
        raise InputError(f"{sha}: not a sha256sum file") from None
    match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)\n?", text)
    if not match:
        raise InputError(f"{sha}: not a sha256sum file (expected '<sha256>  {path.name}')")
    if match.group(2) != path.name:
        raise InputError(f"{sha}: names {match.group(2)!r}, not {path.name!r}")
    return match.group(1)


def _open_regular(path: Path, where: str) -> tuple[IO[bytes], os.stat_result]:
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


def _check_manifests(lock: Lock, manifests: dict[str, bytes]) -> None:
    """Check what the carried manifests reference against the lock, before a registry ever sees them."""
    sizes = {b.digest: b.size for b in lock.omitted} | lock.blob_sizes()
    for img in lock.images:
        for digest in [img.digest, *img.manifests]:
            data = manifests.get(digest)
            if data is None:
                continue  # left out of a differential bundle
            where = f"manifest {digest} of {img.source}"
            try:
                doc = json.loads(data)
            except (ValueError, RecursionError):
                raise InputError(f"{where}: not valid JSON") from None
            if not isinstance(doc, dict):
                raise InputError(f"{where}: not a JSON object")
            if "layers" in doc and "manifests" in doc:
                raise InputError(f"{where}: declares both 'layers' and 'manifests'")
            if "manifests" in doc:
                for child, size in _descriptors(doc.get("manifests"), where):
                    if child not in img.manifests:
                        raise InputError(f"{where}: lists child manifest {child}, which the lock does not name")
                    _check_size(where, child, size, sizes)
                continue
            refs = _descriptors(doc.get("layers", []), where)
            if "config" in doc:
                refs += _descriptors([doc["config"]], where)
            for ref, size in refs:
                if ref not in sizes:
                    raise InputError(f"{where}: references blob {ref}, which the lock neither carries nor omits")
                _check_size(where, ref, size, sizes)


def _descriptors(value: Any, where: str) -> list[tuple[str, Any]]:
    if not isinstance(value, list):
        raise InputError(f"{where}: malformed descriptor list")
    out = []
    for desc in value:
        digest = desc.get("digest") if isinstance(desc, dict) else None
        if not isinstance(digest, str) or not is_digest(digest):
            raise InputError(f"{where}: malformed descriptor (digest must be sha256:<64 hex>)")
        out.append((digest, desc.get("size")))
    return out


def _check_size(where: str, digest: str, size: Any, sizes: dict[str, int]) -> None:
    if digest in sizes and size != sizes[digest]:
        raise InputError(f"{where}: descriptor gives {digest} size {size!r} but the lock says {sizes[digest]}")


class BundleReader:
    """Reads a bundle (tar / tar.zst volumes, or one unpacked directory) that nobody vouches for.

    Opening checks the lock, every volume's description and, for plain tar
    volumes and directories, every header; ``verify`` then hashes every byte.
    ``random_access`` is True for plain tar volumes and directories, where
    ``open_blob`` can read blobs in parallel; zstd volumes can only be read in
    order with ``iter_blobs``.
    """

    def __init__(self, paths: Sequence[Path | str]) -> None:
        paths = [Path(p) for p in paths]
        if not paths:
            raise InputError("no bundle given")
        if any(p.is_dir() for p in paths):
            if len(paths) != 1:
                raise InputError("give either one unpacked bundle directory or bundle volume files, not both")
            volumes = [self._open_dir(paths[0])]
        else:
            seen: dict[Path, Path] = {}
            for p in paths:
                key = p.resolve()
                if key in seen:
                    raise InputError(f"volume {p} given twice")
                seen[key] = p
            volumes = [self._open_volume(p) for p in paths]
        self._check_together(volumes)
        self._volumes = sorted(volumes, key=lambda v: v.index)
        first = self._volumes[0]
        self.lock: Lock = first.lock
        self.volume_count: int = first.count
        self.oci_layout: bytes = first.meta["oci-layout"]
        self.index_json: bytes = first.meta["index.json"]
        self.random_access: bool = all(v.kind in ("tar", "dir") for v in volumes)
        self.blobs: dict[str, int] = {d: s for v in self._volumes for d, s in v.blobs.items()}
        self._home = {d: v for v in self._volumes for d in v.blobs}

    # ---- opening

    def _head(self, where: str, meta: dict[str, bytes]) -> tuple[Lock, str]:
        try:
            text = meta["bundle.yaml"].decode()
        except UnicodeDecodeError:
            raise InputError(f"{where}: bundle.yaml is not UTF-8") from None
        lock = loads_lock(text, f"{where}: bundle.yaml")
        for name in ("oci-layout", "index.json"):
            try:
                doc = json.loads(meta[name])
            except (ValueError, RecursionError):
                doc = None
            if not isinstance(doc, dict):
                raise InputError(f"{where}: {name} is not a JSON object")
        return lock, hashlib.sha256(meta["bundle.yaml"]).hexdigest()

    def _open_volume(self, path: Path) -> _Volume:
        where = str(path)
        try:
            if not stat.S_ISREG(path.stat().st_mode):
                raise InputError(f"{path}: not a regular file")
        except OSError as exc:
            raise InputError(f"cannot read bundle volume {path}: {exc.strerror or exc}") from None
        kind = _detect(path)
        meta: dict[str, bytes] = {}
        with open(path, "rb") as f, _reading(where):
            tar = _open_tar(f, kind)
            seen: set[str] = set()
            for position, member in enumerate(tar):
                _member_kind(where, member, position, seen)
                meta[member.name] = _read_member(tar, member, where)
                if len(meta) == len(META_ORDER):
                    break
        if len(meta) < len(META_ORDER):
            raise InputError(f"{where}: not a mirrorkit bundle volume: {META_ORDER[len(meta)]} is missing")
        lock, lock_hash = self._head(where, meta)
        index, count, listed = _parse_volume_yaml(meta["volume.yaml"], where, lock)
        vol = _Volume(path, kind, lock, lock_hash, meta, index, count, listed, lock.blob_sizes(),
                      checksum=_read_checksum(path))
        if kind == "tar":
            self._scan_offsets(vol)
        return vol

    def _scan_offsets(self, vol: _Volume) -> None:
        """One header pass over a plain tar: every header checked, every blob's data offset noted."""
        where = str(vol.path)
        with open(vol.path, "rb") as f, _reading(where), tarfile.open(fileobj=f, mode="r:",
                                                                     tarinfo=_GuardedTarInfo) as tar:
            seen: set[str] = set()
            for position, member in enumerate(tar):
                if _member_kind(where, member, position, seen) == "blob":
                    digest = "sha256:" + member.name.removeprefix("blobs/sha256/")
                    _check_blob(where, digest, member.size, vol.sizes, vol.blobs)
                    vol.offsets[digest] = member.offset_data
                tar.members.clear()  # keep memory flat; iteration goes on with next()
            _check_end(tar, where)
        for digest in vol.blobs:
            if digest not in vol.offsets:
                raise InputError(f"{where}: truncated or incomplete: blob {digest} listed in volume.yaml is missing")

    def _open_dir(self, root: Path) -> _Volume:
        where = str(root)
        files: dict[str, os.stat_result] = {}
        blobs_seen: dict[str, int] = {}
        for rel in self._walk_dir(root, ""):
            st = (root / rel).lstat()
            if rel.startswith("blobs/sha256/"):
                blobs_seen["sha256:" + rel.removeprefix("blobs/sha256/")] = st.st_size
            else:
                files[rel] = st
                if st.st_size > META_CAPS[rel]:
                    raise InputError(f"{where}: {rel} is {st.st_size} bytes, larger than the {META_CAPS[rel]} allowed")
        for name in ("bundle.yaml", "oci-layout", "index.json"):
            if name not in files:
                raise InputError(f"{where}: not an unpacked bundle: {name} is missing")
        meta = {}
        for name in files:
            f, _ = _open_regular(root / name, where)
            with f:
                meta[name] = f.read(META_CAPS[name] + 1)
            if len(meta[name]) > META_CAPS[name]:
                raise InputError(f"{where}: {name} grew beyond the {META_CAPS[name]} allowed while being read")
        lock, lock_hash = self._head(where, meta)
        if "volume.yaml" in meta:
            # an unpacked bundle may merge several volumes; only the id must agree
            _parse_volume_yaml(meta["volume.yaml"], where, lock)
        sizes = lock.blob_sizes()
        for digest, size in blobs_seen.items():
            _check_blob(where, digest, size, sizes, None)
        return _Volume(root, "dir", lock, lock_hash, meta, blobs=blobs_seen, sizes=sizes)

    def _walk_dir(self, root: Path, rel: str) -> Iterator[str]:
        """Yield allowed regular files, refusing symlinks and anything unexpected (never following links)."""
        allowed = {"": ("bundle.yaml", "volume.yaml", "oci-layout", "index.json", "blobs"),
                   "blobs": ("sha256",)}
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
                if not _HEX.fullmatch(entry.name):
                    raise InputError(f"{bad}: blob name is not 64 lowercase hex digits")
            elif entry.name not in allowed[rel]:
                raise InputError(f"{bad}: unexpected entry in a bundle directory")
            if name in DIR_ENTRIES:
                if not entry.is_dir(follow_symlinks=False):
                    raise InputError(f"{bad} must be a directory")
                yield from self._walk_dir(root, name)
            elif not entry.is_file(follow_symlinks=False):
                raise InputError(f"{bad} is not a regular file")
            else:
                yield name

    def _check_together(self, volumes: list[_Volume]) -> None:
        first = volumes[0]
        by_index: dict[int, _Volume] = {}
        home: dict[str, _Volume] = {}
        for vol in volumes:
            if vol.lock.id != first.lock.id:
                raise InputError(f"volumes from two different bundles: {first.path} has id {first.lock.id}, "
                                 f"{vol.path} has id {vol.lock.id}")
            if vol.lock_hash != first.lock_hash:
                raise InputError(f"{first.path} and {vol.path} carry different locks under the same id {vol.lock.id}")
            for name in ("oci-layout", "index.json"):
                if vol.meta[name] != first.meta[name]:
                    raise InputError(f"{first.path} and {vol.path} carry different {name} files")
            if vol.count != first.count:
                raise InputError(f"{first.path} says the bundle has {first.count} volumes, {vol.path} says {vol.count}")
            if vol.index in by_index:
                raise InputError(f"{by_index[vol.index].path} and {vol.path} are both volume {vol.index + 1} "
                                 f"of {vol.count}")
            by_index[vol.index] = vol
            for digest in vol.blobs:
                if digest in home:
                    raise InputError(f"blob {digest} is in both {home[digest].path} and {vol.path}")
                home[digest] = vol

    # ---- reading

    def _missing(self) -> str | None:
        have = {v.index for v in self._volumes}
        for i in range(self.volume_count):
            if i not in have:
                return f"bundle {self.lock.id}: volume {i + 1} of {self.volume_count} missing (volume index {i})"
        for blob in self.lock.blobs:
            if blob.digest not in self.blobs:
                return f"bundle {self.lock.id}: blob {blob.digest} named in the lock is not in the bundle"
        return None

    def _pass(self, vol: _Volume, on_bytes: Progress | None = None) -> Iterator[tuple[str, int, BlobStream]]:
        """Read one volume front to back, yielding its blobs; the whole volume is checked by the end."""
        where = str(vol.path)
        if vol.kind == "dir":
            for digest, size in vol.blobs.items():
                f, _ = _open_regular(vol.path / "blobs" / "sha256" / digest.removeprefix("sha256:"), where)
                with BlobStream(f, digest, size, where, owned=True, on_bytes=on_bytes) as stream:
                    yield digest, size, stream
                    stream.drain()
            return
        with open(vol.path, "rb") as f, _finishing(_HashingReader(f)) as raw:
            with _reading(where):
                tar = _open_tar(raw, vol.kind)
                seen: set[str] = set()
                found: set[str] = set()
                for position, member in enumerate(tar):
                    kind = _member_kind(where, member, position, seen)
                    if kind == "meta":
                        if _read_member(tar, member, where) != vol.meta[member.name]:
                            raise InputError(f"{where}: {member.name} changed while the bundle was being read")
                    elif kind == "blob":
                        digest = "sha256:" + member.name.removeprefix("blobs/sha256/")
                        _check_blob(where, digest, member.size, vol.sizes, vol.blobs)
                        src = cast(IO[bytes], tar.extractfile(member))  # a regular member, checked above
                        with BlobStream(src, digest, member.size, where, owned=True, on_bytes=on_bytes) as stream:
                            yield digest, member.size, stream
                            stream.drain()
                        found.add(digest)
                    tar.members.clear()  # keep memory flat; iteration goes on with next()
                _check_end(tar, where)
                for digest in vol.blobs:
                    if digest not in found:
                        raise InputError(f"{where}: truncated or incomplete: blob {digest} listed in volume.yaml "
                                         "is missing")
                padding = 0
                while chunk := tar.fileobj.read(CHUNK):  # type: ignore[union-attr]
                    if chunk.count(0) != len(chunk):
                        raise InputError(f"{where}: data after the end of the archive")
                    padding += len(chunk)
                if padding < tarfile.BLOCKSIZE:
                    raise InputError(f"{where}: truncated volume: the second end-of-archive block is missing")
            raw.drain()
        if vol.checksum is not None and raw.hash.hexdigest() != vol.checksum:
            raise InputError(f"{where}: content does not match {vol.path.name}.sha256 (corrupt or tampered volume)")

    def iter_blobs(self, progress: Progress | None = None) -> Iterator[tuple[str, int, BlobStream]]:
        """Every blob of the given volumes once, in volume order; each stream is valid until the next item.

        Bytes are hashed as they stream: a blob that does not match its digest
        raises before its last chunk is handed out, and each volume's
        structure and ``.sha256`` are checked when its pass ends.
        """
        for vol in self._volumes:
            yield from self._pass(vol, progress)

    def verify(self, require_complete: bool = True, progress: Progress | None = None) -> VerifyReport:
        """Read and hash every blob once and check the lock's claims, writing nothing anywhere.

        With ``require_complete`` every volume and every blob the lock carries
        must be present; without it the given volumes are checked on their own
        (one volume of a split bundle, say).
        """
        missing = self._missing()
        if missing and require_complete:
            raise InputError(missing)
        wanted = self.lock.manifest_digests()
        manifests: dict[str, bytes] = {}
        count = total = 0
        for digest, size, stream in self.iter_blobs(progress):
            if digest in wanted:
                if size > SMALL_LIMIT:
                    raise InputError(f"manifest {digest} is {size} bytes, more than the {SMALL_LIMIT} allowed")
                manifests[digest] = _read_exact(stream, size)
            else:
                stream.drain()
            count += 1
            total += size
        _check_manifests(self.lock, manifests)
        return VerifyReport(self.lock.id, len(self._volumes), self.volume_count, count, total, missing is None)

    def open_blob(self, digest: str) -> BlobStream:
        """An independent stream of one blob (its own file handle, so threads can read in parallel)."""
        if not self.random_access:
            raise OperationError("this bundle has compressed volumes: read it in order with iter_blobs()")
        vol = self._home.get(digest)
        if vol is None:
            raise InputError(f"blob {digest} is not in this bundle")
        size = vol.blobs[digest]
        if vol.kind == "dir":
            f, _ = _open_regular(vol.path / "blobs" / "sha256" / digest.removeprefix("sha256:"), str(vol.path))
        else:
            f = open(vol.path, "rb")  # noqa: SIM115 - owned by the returned stream
            f.seek(vol.offsets[digest])
        return BlobStream(f, digest, size, str(vol.path), owned=True)

    def read_small(self, digest: str, limit: int = SMALL_LIMIT) -> bytes:
        """A small blob (a manifest) whole, hash checked; on zstd volumes this scans its volume up to it."""
        vol = self._home.get(digest)
        if vol is None:
            raise InputError(f"blob {digest} is not in this bundle")
        size = vol.blobs[digest]
        if size > limit:
            raise InputError(f"blob {digest} is {size} bytes, more than the {limit} allowed here")
        if self.random_access:
            with self.open_blob(digest) as stream:
                return _read_exact(stream, size)
        with closing(self._pass(vol)) as blobs:
            for found, _, stream in blobs:
                if found == digest:
                    return _read_exact(stream, size)
        raise InputError(f"{vol.path}: blob {digest} listed in volume.yaml is missing")

    def close(self) -> None:
        """Nothing stays open between calls; kept so callers can use the reader as a context manager."""

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _HashingReader:
    """Hashes a volume's raw bytes as they are read, for the ``.sha256`` check at the end of a pass.

    The hashing runs in a thread of its own (hashlib releases the GIL), so the
    volume hash and the per-blob hashes use two cores instead of one.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._done = False

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._hash.update(data)

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if data:
            self._queue.put(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def finish(self) -> None:
        if not self._done:
            self._done = True
            self._queue.put(None)
            self._thread.join()

    @property
    def hash(self) -> Any:
        self.finish()
        return self._hash


@contextmanager
def _finishing(reader: _HashingReader) -> Iterator[_HashingReader]:
    try:
        yield reader
    finally:
        reader.finish()


def _read_exact(stream: BlobStream, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        parts.append(chunk)
        got += len(chunk)
    stream.read(1)  # completes the hash check for an empty blob
    return b"".join(parts)
