"""Reads a bundle that nobody vouches for: tar or tar.zst volumes, or one unpacked folder.

Every tar header goes through mirrorkit.bundle.guard before its data is
touched, every blob is hashed while it streams (mirrorkit.bundle.stream), and
nothing is ever written to disk while reading.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from mirrorkit.bundle.guard import (
    GuardedTarInfo,
    check_blob,
    check_end,
    detect,
    member_kind,
    open_regular,
    open_tar,
    read_member,
    reading,
    walk_dir,
)
from mirrorkit.bundle.lockcheck import check_manifests
from mirrorkit.bundle.stream import (
    VERIFY_READ,
    BlobStream,
    HashingReader,
    VolumeHash,
    finishing,
    hash_range,
    read_exact,
)
from mirrorkit.bundle.volumes import (
    CHUNK,
    META_CAPS,
    META_ORDER,
    SMALL_LIMIT,
    Progress,
    parse_volume_yaml,
    read_checksum,
)
from mirrorkit.errors import InputError, OperationError
from mirrorkit.lock import Lock, loads_lock


@dataclass
class VerifyReport:
    bundle_id: str
    volumes: int          # volumes given
    volume_count: int     # volumes the bundle was written as
    blobs: int
    bytes: int
    complete: bool        # every volume and every lock blob present


@dataclass(frozen=True)
class BlobPiece:
    """Where (part of) a blob's bytes lie on disk: ``size`` bytes of ``path`` from ``offset``.

    A blob is a list of pieces read in order; today every blob is one piece (a tar member or a
    file of an unpacked bundle), a blob split across volumes would be several.
    """

    path: Path
    offset: int
    size: int


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



class BundleReader:
    """Reads a bundle (tar / tar.zst volumes, or one unpacked directory) that nobody vouches for.

    Opening checks the lock, every volume's description and, for plain tar
    volumes and directories, every header; ``verify`` then hashes every byte.
    ``random_access`` is True for plain tar volumes and directories, where
    ``open_blob`` can read blobs in parallel; zstd volumes can only be read in
    order with ``iter_blobs``.
    """

    def __init__(self, paths: Sequence[Path | str]) -> None:
        given = [Path(p) for p in paths]
        if not given:
            raise InputError("no bundle given")
        if any(p.is_dir() for p in given):
            if len(given) != 1:
                raise InputError("give either one unpacked bundle directory or bundle volume files, not both")
            volumes = [self._open_dir(given[0])]
        else:
            seen: dict[Path, Path] = {}
            for p in given:
                key = p.resolve()
                if key in seen:
                    raise InputError(f"volume {p} given twice")
                seen[key] = p
            volumes = [self._open_volume(p) for p in given]
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
        kind = detect(path)
        meta: dict[str, bytes] = {}
        with open(path, "rb") as f, reading(where):
            tar = open_tar(f, kind)
            seen: set[str] = set()
            for position, member in enumerate(tar):
                member_kind(where, member, position, seen)
                meta[member.name] = read_member(tar, member, where)
                if len(meta) == len(META_ORDER):
                    break
        if len(meta) < len(META_ORDER):
            raise InputError(f"{where}: not a mirrorkit bundle volume: {META_ORDER[len(meta)]} is missing")
        lock, lock_hash = self._head(where, meta)
        index, count, listed = parse_volume_yaml(meta["volume.yaml"], where, lock)
        vol = _Volume(path, kind, lock, lock_hash, meta, index, count, listed, lock.blob_sizes(),
                      checksum=read_checksum(path))
        if kind == "tar":
            self._scan_offsets(vol)
        return vol

    def _scan_offsets(self, vol: _Volume) -> None:
        """One header pass over a plain tar: every header checked, every blob's data offset noted."""
        where = str(vol.path)
        with open(vol.path, "rb") as f, reading(where), tarfile.open(fileobj=f, mode="r:",
                                                                     tarinfo=GuardedTarInfo) as tar:
            seen: set[str] = set()
            for position, member in enumerate(tar):
                if member_kind(where, member, position, seen) == "blob":
                    digest = "sha256:" + member.name.removeprefix("blobs/sha256/")
                    check_blob(where, digest, member.size, vol.sizes, vol.blobs)
                    vol.offsets[digest] = member.offset_data
                tar.members.clear()  # type: ignore[attr-defined]  # keep memory flat; iteration goes on with next()
            check_end(tar, where)
        for digest in vol.blobs:
            if digest not in vol.offsets:
                raise InputError(f"{where}: truncated or incomplete: blob {digest} listed in volume.yaml is missing")

    def _open_dir(self, root: Path) -> _Volume:
        where = str(root)
        files: dict[str, os.stat_result] = {}
        blobs_seen: dict[str, int] = {}
        for rel in walk_dir(root, ""):
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
            f, _ = open_regular(root / name, where)
            with f:
                meta[name] = f.read(META_CAPS[name] + 1)
            if len(meta[name]) > META_CAPS[name]:
                raise InputError(f"{where}: {name} grew beyond the {META_CAPS[name]} allowed while being read")
        lock, lock_hash = self._head(where, meta)
        if "volume.yaml" in meta:
            # an unpacked bundle may merge several volumes; only the id must agree
            parse_volume_yaml(meta["volume.yaml"], where, lock)
        sizes = lock.blob_sizes()
        for digest, size in blobs_seen.items():
            check_blob(where, digest, size, sizes, None)
        return _Volume(root, "dir", lock, lock_hash, meta, blobs=blobs_seen, sizes=sizes)

    def _check_together(self, volumes: list[_Volume]) -> None:
        first = volumes[0]
        with_sum = [v for v in volumes if v.checksum is not None]
        if with_sum and len(with_sum) < len(volumes):
            bare = next(v for v in volumes if v.checksum is None)
            raise InputError(f"{bare.path}: incomplete set: its .sha256 is missing while {with_sum[0].path.name} "
                             "has one (a write or copy was interrupted); write or copy the bundle again")
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

    def _pass(self, vol: _Volume,
              on_bytes: Progress | None = None) -> Generator[tuple[str, int, BlobStream], None, None]:
        """Read one volume front to back, yielding its blobs; the whole volume is checked by the end."""
        where = str(vol.path)
        if vol.kind == "dir":
            for digest, size in vol.blobs.items():
                f, _ = open_regular(vol.path / "blobs" / "sha256" / digest.removeprefix("sha256:"), where)
                with BlobStream(f, digest, size, where, owned=True, on_bytes=on_bytes) as stream:
                    yield digest, size, stream
                    stream.drain()
            return
        with open(vol.path, "rb") as f, finishing(HashingReader(f)) as raw:
            with reading(where):
                tar = open_tar(raw, vol.kind)
                seen: set[str] = set()
                found: set[str] = set()
                for position, member in enumerate(tar):
                    blob = _guarded_member(tar, member, position, seen, vol, where)
                    if blob is not None:
                        digest = blob
                        src = cast(IO[bytes], tar.extractfile(member))  # a regular member, checked above
                        with BlobStream(src, digest, member.size, where, owned=True, on_bytes=on_bytes) as stream:
                            yield digest, member.size, stream
                            stream.drain()
                        found.add(digest)
                    tar.members.clear()  # type: ignore[attr-defined]  # keep memory flat; iteration goes on with next()
                _check_volume_end(tar, lambda: cast(IO[bytes], tar.fileobj), found, vol, where)
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
        for vol in self._volumes:
            if vol.kind == "tar":
                blobs, size = self._verify_tar(vol, wanted, manifests, progress)
                count += blobs
                total += size
                continue
            for digest, size, stream in self._pass(vol, progress):
                if digest in wanted:
                    _check_manifest_size(digest, size)
                    manifests[digest] = read_exact(stream, size)
                else:
                    stream.drain()
                count += 1
                total += size
        check_manifests(self.lock, manifests)
        return VerifyReport(self.lock.id, len(self._volumes), self.volume_count, count, total, missing is None)

    def _verify_tar(self, vol: _Volume, wanted: set[str], manifests: dict[str, bytes],
                    progress: Progress | None) -> tuple[int, int]:
        """``verify`` for a plain tar volume: the same checks as ``_pass``, the data read in big pieces.

        Every header goes through exactly the guard ``_pass`` applies (names, types, sizes,
        order, the end-of-archive blocks, nothing after them, the metadata unchanged), but
        tarfile only walks the headers here (it seeks over the data). Each blob's data is
        read at its header's offset with ``readinto`` into one reused 4 MiB buffer and
        hashed, and the volume's ``.sha256`` is computed by a thread reading the file front
        to back on its own: hashlib releases the GIL, so the two SHA-256 passes run on two
        cores, and no ``bytes`` object is made per read. Through tarfile's stream (1 MiB
        reads, a copy per read, a queue to the hashing thread) this took 1.2-1.45 s for the
        525 MB bench bundle. Returns the number of blobs and their bytes.
        """
        where = str(vol.path)
        count = total = 0
        found: set[str] = set()
        buffer = memoryview(bytearray(VERIFY_READ))
        with VolumeHash(vol.path, where, wanted=vol.checksum is not None) as volume_hash, \
                open(vol.path, "rb") as f, open(vol.path, "rb", buffering=0) as data, reading(where):
            tar = tarfile.open(fileobj=f, mode="r:", tarinfo=GuardedTarInfo)  # noqa: SIM115 - holds only f, closed above
            seen: set[str] = set()
            for position, member in enumerate(tar):
                digest = _guarded_member(tar, member, position, seen, vol, where)
                if digest is not None:
                    keep: list[bytes] | None = None
                    if digest in wanted:
                        _check_manifest_size(digest, member.size)
                        keep = []
                    hash_range(data, member.offset_data, member.size, digest, where, buffer, keep, progress)
                    if keep is not None:
                        manifests[digest] = b"".join(keep)
                    found.add(digest)
                    count += 1
                    total += member.size
                tar.members.clear()  # type: ignore[attr-defined]  # keep memory flat; iteration goes on with next()

            def rest() -> IO[bytes]:
                f.seek(tar.offset + tarfile.BLOCKSIZE)     # just past the first end-of-archive block
                return f
            _check_volume_end(tar, rest, found, vol, where)
            actual = volume_hash.result()
        if vol.checksum is not None and actual != vol.checksum:
            raise InputError(f"{where}: content does not match {vol.path.name}.sha256 (corrupt or tampered volume)")
        return count, total

    def open_blob(self, digest: str) -> BlobStream:
        """An independent stream of one blob (its own file handle, so threads can read in parallel)."""
        if not self.random_access:
            raise OperationError("this bundle has compressed volumes: read it in order with iter_blobs()")
        vol = self._home.get(digest)
        if vol is None:
            raise InputError(f"blob {digest} is not in this bundle")
        size = vol.blobs[digest]
        if vol.kind == "dir":
            f, _ = open_regular(vol.path / "blobs" / "sha256" / digest.removeprefix("sha256:"), str(vol.path))
        else:
            f = open(vol.path, "rb")  # noqa: SIM115 - owned by the returned stream
            f.seek(vol.offsets[digest])
        return BlobStream(f, digest, size, str(vol.path), owned=True)

    def locate(self, digest: str) -> list[BlobPiece]:
        """Where a blob's bytes are, for a server that hands byte ranges to the kernel (``sendfile``).

        Only plain tar volumes and unpacked folders have blobs at fixed offsets. The pieces were
        found by the header scan when the reader opened; call ``verify`` before trusting their bytes.
        """
        if not self.random_access:
            raise OperationError("this bundle has compressed volumes: its blobs have no fixed offsets")
        vol = self._home.get(digest)
        if vol is None:
            raise InputError(f"blob {digest} is not in this bundle")
        size = vol.blobs[digest]
        if vol.kind == "dir":
            return [BlobPiece(vol.path / "blobs" / "sha256" / digest.removeprefix("sha256:"), 0, size)]
        return [BlobPiece(vol.path, vol.offsets[digest], size)]

    def verify_checksums(self, require_complete: bool = True) -> VerifyReport:
        """The quick check: every volume hashed against its ``.sha256`` file, nothing else.

        The headers were checked when the reader opened; the blobs are not hashed one by one,
        so this trusts whoever wrote the ``.sha256`` files (``serve --trust-checksums``).
        An unpacked folder has no ``.sha256``: it is refused here.
        """
        missing = self._missing()
        if missing and require_complete:
            raise InputError(missing)
        for vol in self._volumes:
            if vol.checksum is None:
                raise InputError(f"{vol.path}: has no .sha256 file to check it against")

        def check(vol: _Volume) -> None:
            with VolumeHash(vol.path, str(vol.path), wanted=True) as volume_hash, reading(str(vol.path)):
                actual = volume_hash.result()
            if actual != vol.checksum:
                raise InputError(f"{vol.path}: content does not match {vol.path.name}.sha256 "
                                 "(corrupt or tampered volume)")
        # hashlib releases the GIL: volumes are hashed side by side, one per core
        with ThreadPoolExecutor(max_workers=max(1, min(len(self._volumes), os.cpu_count() or 1))) as pool:
            for done in [pool.submit(check, vol) for vol in self._volumes]:
                done.result()
        return VerifyReport(self.lock.id, len(self._volumes), self.volume_count, len(self.blobs),
                            sum(self.blobs.values()), missing is None)

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
                return read_exact(stream, size)
        with closing(self._pass(vol)) as blobs:
            for found, _, stream in blobs:
                if found == digest:
                    return read_exact(stream, size)
        raise InputError(f"{vol.path}: blob {digest} listed in volume.yaml is missing")

    def close(self) -> None:
        """Nothing stays open between calls; kept so callers can use the reader as a context manager."""

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _guarded_member(tar: tarfile.TarFile, member: tarfile.TarInfo, position: int, seen: set[str],
                    vol: _Volume, where: str) -> str | None:
    """Every member passes the guard; a metadata file must be what the first pass read; a blob must be one
    the lock and volume.yaml name, at their size. Returns the blob's digest, or None for other members."""
    kind = member_kind(where, member, position, seen)
    if kind == "meta":
        if read_member(tar, member, where) != vol.meta[member.name]:
            raise InputError(f"{where}: {member.name} changed while the bundle was being read")
        return None
    if kind != "blob":
        return None
    digest = "sha256:" + member.name.removeprefix("blobs/sha256/")
    check_blob(where, digest, member.size, vol.sizes, vol.blobs)
    return digest


def _check_volume_end(tar: tarfile.TarFile, rest: Callable[[], IO[bytes]], found: set[str], vol: _Volume,
                      where: str) -> None:
    """After the last member: a proper end of archive, every blob volume.yaml lists seen, and nothing but
    zero padding after the first end block (``rest()`` is the stream positioned just past it)."""
    check_end(tar, where)
    for digest in vol.blobs:
        if digest not in found:
            raise InputError(f"{where}: truncated or incomplete: blob {digest} listed in volume.yaml is missing")
    stream = rest()
    padding = 0
    while chunk := stream.read(CHUNK):
        if chunk.count(0) != len(chunk):
            raise InputError(f"{where}: data after the end of the archive")
        padding += len(chunk)
    if padding < tarfile.BLOCKSIZE:
        raise InputError(f"{where}: truncated volume: the second end-of-archive block is missing")


def _check_manifest_size(digest: str, size: int) -> None:
    if size > SMALL_LIMIT:
        raise InputError(f"manifest {digest} is {size} bytes, more than the {SMALL_LIMIT} allowed")
