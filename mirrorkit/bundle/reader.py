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
    check_part,
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
    Member,
    PartChain,
    RangesReader,
    Reassembly,
    VolumeHash,
    finishing,
    hash_part,
    hash_range,
    read_exact,
)
from mirrorkit.bundle.volumes import (
    CHUNK,
    META_CAPS,
    META_ORDER,
    SIGNATURE_MEMBER,
    SMALL_LIMIT,
    Part,
    Progress,
    parse_volume_yaml,
    read_checksum,
    read_volume_yaml,
    sibling_volumes,
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

    A blob is a list of pieces read in order: one (a tar member or a file of an unpacked bundle), or
    one per part when ``--split`` cut it across volumes.
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
    parts: dict[str, Part] = field(default_factory=dict)          # of blobs split across volumes
    joined: dict[str, list[tuple[Path, int, int]]] = field(default_factory=dict)  # an unpacked folder's parts
    part_offsets: dict[str, int] = field(default_factory=dict)



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
        # the lock exactly as carried (what a bundle signature covers) and its signature, if signed
        self.lock_bytes: bytes = first.meta["bundle.yaml"]
        self.lock_signature: bytes | None = first.meta.get(SIGNATURE_MEMBER)
        self.random_access: bool = all(v.kind in ("tar", "dir") for v in volumes)
        self.blobs: dict[str, int] = {d: s for v in self._volumes for d, s in v.blobs.items()}
        self._home = {d: v for v in self._volumes for d in v.blobs}
        # blobs split across volumes: each one's parts in order, counted as held when every part is given
        self._split: dict[str, list[tuple[_Volume, Part]]] = {}
        for vol in self._volumes:
            for digest, part in vol.parts.items():
                self._split.setdefault(digest, []).append((vol, part))
        for digest, parts in self._split.items():
            if _contiguous(parts):
                self.blobs[digest] = parts[0][1].size

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
        kind, meta = volume_meta(path)
        lock, lock_hash = self._head(where, meta)
        index, count, listed, parts = read_volume_yaml(meta["volume.yaml"], where, lock)
        vol = _Volume(path, kind, lock, lock_hash, meta, index, count, listed, lock.blob_sizes(),
                      checksum=read_checksum(path), parts=parts)
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
                kind = member_kind(where, member, position, seen)
                if kind == "blob":
                    digest = "sha256:" + member.name.removeprefix("blobs/sha256/")
                    check_blob(where, digest, member.size, vol.sizes, vol.blobs)
                    vol.offsets[digest] = member.offset_data
                elif kind == "part":
                    vol.part_offsets[check_part(where, member, vol.parts).digest] = member.offset_data
                tar.members.clear()  # type: ignore[attr-defined]  # keep memory flat; iteration goes on with next()
            check_end(tar, where)
        for digest in [*vol.blobs, *vol.parts]:
            if digest not in vol.offsets and digest not in vol.part_offsets:
                raise InputError(f"{where}: truncated or incomplete: blob {digest} listed in volume.yaml is missing")

    def _open_dir(self, root: Path) -> _Volume:
        where = str(root)
        files: dict[str, os.stat_result] = {}
        blobs_seen: dict[str, int] = {}
        cut: dict[str, list[tuple[int, Path, int]]] = {}     # the unpacked parts of split blobs
        for rel in walk_dir(root, ""):
            st = (root / rel).lstat()
            if rel.startswith("blobs/sha256/"):
                blobs_seen["sha256:" + rel.removeprefix("blobs/sha256/")] = st.st_size
            elif rel.startswith("parts/sha256/"):
                hexdigest, number = rel.removeprefix("parts/sha256/").split(".")
                cut.setdefault("sha256:" + hexdigest, []).append((int(number), root / rel, st.st_size))
            else:
                files[rel] = st
                if st.st_size > META_CAPS[rel]:
                    raise InputError(f"{where}: {rel} is {st.st_size} bytes, larger than the {META_CAPS[rel]} allowed")
        for name in ("bundle.yaml", "oci-layout", "index.json"):
            if name not in files:
                raise InputError(f"{where}: not an unpacked bundle: {name} is missing")
        meta = {name: _read_capped(root, name) for name in files}
        lock, lock_hash = self._head(where, meta)
        if "volume.yaml" in meta:
            # an unpacked bundle may merge several volumes; only the id must agree
            parse_volume_yaml(meta["volume.yaml"], where, lock)
        sizes = lock.blob_sizes()
        for digest, size in blobs_seen.items():
            check_blob(where, digest, size, sizes, None)
        joined: dict[str, list[tuple[Path, int, int]]] = {}
        for digest, parts in cut.items():
            parts.sort()
            if [n for n, _, _ in parts] != list(range(len(parts))) or digest in blobs_seen:
                raise InputError(f"{where}: the parts of blob {digest} are not numbered 000 up, once each")
            check_blob(where, digest, sum(size for _, _, size in parts), sizes, None)
            joined[digest] = [(path, 0, size) for _, path, size in parts]
            blobs_seen[digest] = sizes[digest]
        return _Volume(root, "dir", lock, lock_hash, meta, blobs=blobs_seen, sizes=sizes, joined=joined)

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
            for name in ("oci-layout", "index.json", SIGNATURE_MEMBER):
                if vol.meta.get(name) != first.meta.get(name):
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
        for vol in volumes:
            for digest in vol.parts:
                if digest in home:
                    raise InputError(f"blob {digest} is whole in {home[digest].path} and in parts in {vol.path}")

    # ---- reading

    def missing(self) -> str | None:
        """What keeps the given volumes from being the whole bundle (every missing volume named), or None."""
        have = {v.index for v in self._volumes}
        lacking = [i for i in range(self.volume_count) if i not in have]
        if lacking:
            names = sibling_volumes(self._volumes[0].path, self.volume_count)
            which = ", ".join(f"{i + 1}" for i in lacking)
            files = f" ({', '.join(names[i].name for i in lacking)})" if names else ""
            plural = "s" if len(lacking) > 1 else ""
            return f"bundle {self.lock.id}: volume{plural} {which} of {self.volume_count} missing{files}"
        for blob in self.lock.blobs:
            if blob.digest not in self.blobs:
                return f"bundle {self.lock.id}: blob {blob.digest} named in the lock is not in the bundle"
        return None

    def _pass(self, vol: _Volume, on_bytes: Progress | None = None) -> Generator[Member, None, None]:
        """Read one volume front to back, yielding its blobs and parts; the whole volume is checked by the end.

        A whole blob comes as a BlobStream that checks its digest; a part of a split blob as
        the plain stream of its bytes (only all parts together can be checked against the digest).
        """
        where = str(vol.path)
        if vol.kind == "dir":
            for digest, size in vol.blobs.items():
                f = _dir_blob(vol, digest)
                with BlobStream(f, digest, size, where, owned=True, on_bytes=on_bytes) as stream:
                    yield digest, size, stream, None, where
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
                        digest, part = blob
                        src = cast(IO[bytes], tar.extractfile(member))  # a regular member, checked above
                        if part is not None:
                            yield digest, part.length, src, part, where
                            while src.read(CHUNK):
                                pass
                        else:
                            with BlobStream(src, digest, member.size, where, owned=True,
                                            on_bytes=on_bytes) as stream:
                                yield digest, member.size, stream, None, where
                                stream.drain()
                        found.add(digest)
                    tar.members.clear()  # type: ignore[attr-defined]  # keep memory flat; iteration goes on with next()
                _check_volume_end(tar, lambda: cast(IO[bytes], tar.fileobj), found, vol, where)
            raw.drain()
        if vol.checksum is not None and raw.hash.hexdigest() != vol.checksum:
            raise InputError(f"{where}: content does not match {vol.path.name}.sha256 (corrupt or tampered volume)")

    def _members(self, progress: Progress | None) -> Generator[Member, None, None]:
        for vol in self._volumes:
            yield from self._pass(vol, progress)

    def require_checksums(self) -> None:
        """Refuse volumes without their ``.sha256`` (an unpacked folder has none to give): a volume is only
        known to be the one written when its checksum travelled with it."""
        bare = [v.path for v in self._volumes if v.kind != "dir" and v.checksum is None]
        if bare:
            raise InputError(f"{bare[0]}: no {bare[0].name}.sha256 beside it"
                             + (f" (nor beside {len(bare) - 1} other volume(s))" if len(bare) > 1 else "")
                             + "; copy each volume together with its .sha256 file")

    def iter_blobs(self, progress: Progress | None = None) -> Iterator[tuple[str, int, BlobStream]]:
        """Every blob of the given volumes once, in volume order; each stream is valid until the next item.

        Bytes are hashed as they stream: a blob that does not match its digest
        raises before its last chunk is handed out, and each volume's
        structure and ``.sha256`` are checked when its pass ends. A blob split
        across volumes comes as one stream that reads on into the next volume.
        """
        members = self._members(progress)
        with closing(members):
            for digest, size, stream, part, where in members:
                if part is None:
                    yield digest, size, cast(BlobStream, stream)
                    continue
                if part.index != 0:
                    raise InputError(f"{where}: blob {digest} goes on from part {part.index - 1}, in a volume "
                                     "that was not given")
                chain = PartChain(digest, stream, part, where, members)
                with BlobStream(cast(IO[bytes], chain), digest, part.size, where, on_bytes=progress) as whole:
                    yield digest, part.size, whole
                    whole.drain()

    def verify(self, require_complete: bool = True, progress: Progress | None = None) -> VerifyReport:
        """Read and hash every blob once and check the lock's claims, writing nothing anywhere.

        With ``require_complete`` every volume and every blob the lock carries
        must be present; without it the given volumes are checked on their own
        (one volume of a split bundle, say).
        """
        missing = self.missing()
        if missing and require_complete:
            raise InputError(missing)
        wanted = self.lock.manifest_digests()
        manifests: dict[str, bytes] = {}
        joined = Reassembly()       # split blobs: hashed part by part across the volumes, in order
        count = total = 0
        for vol in self._volumes:
            if vol.kind == "tar":
                blobs, size = self._verify_tar(vol, wanted, manifests, progress, joined)
                count += blobs
                total += size
                continue
            for digest, size, stream, part, where in self._pass(vol, progress):
                if part is not None:
                    hasher = joined.hasher(part)
                    while chunk := stream.read(CHUNK):
                        if hasher is not None:
                            hasher.update(chunk)
                        if progress:
                            progress(len(chunk))
                    count += joined.finish(part, where)
                elif digest in wanted:
                    _check_manifest_size(digest, size)
                    manifests[digest] = read_exact(cast(BlobStream, stream), size)
                    count += 1
                else:
                    cast(BlobStream, stream).drain()
                    count += 1
                total += size
        check_manifests(self.lock, manifests)
        return VerifyReport(self.lock.id, len(self._volumes), self.volume_count, count, total, missing is None)

    def _verify_tar(self, vol: _Volume, wanted: set[str], manifests: dict[str, bytes],
                    progress: Progress | None, joined: Reassembly) -> tuple[int, int]:
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
                blob = _guarded_member(tar, member, position, seen, vol, where)
                if blob is not None and blob[1] is not None:
                    part = blob[1]
                    hash_part(data, member.offset_data, part.length, joined.hasher(part), where, buffer, progress)
                    count += joined.finish(part, where)
                    total += part.length
                    found.add(part.digest)
                elif blob is not None:
                    digest = blob[0]
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
        parts = self._split.get(digest)
        if parts and digest in self.blobs:
            ranges = [(v.path, v.part_offsets[digest], part.length) for v, part in parts]
            return BlobStream(cast(IO[bytes], RangesReader(ranges)), digest, self.blobs[digest], str(parts[0][0].path),
                              owned=True)
        vol = self._home.get(digest)
        if vol is None:
            raise InputError(f"blob {digest} is not in this bundle (or not all of its parts were given)")
        size = vol.blobs[digest]
        if vol.kind == "dir":
            f = _dir_blob(vol, digest)
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
        parts = self._split.get(digest)
        if parts and digest in self.blobs:      # a blob cut across volumes (--split below its size): its parts
            return [BlobPiece(v.path, v.part_offsets[digest], part.length) for v, part in parts]
        vol = self._home.get(digest)
        if vol is None:
            raise InputError(f"blob {digest} is not in this bundle (or not all of its parts were given)")
        size = vol.blobs[digest]
        if vol.kind == "dir":
            if digest in vol.joined:
                return [BlobPiece(path, offset, length) for path, offset, length in vol.joined[digest]]
            return [BlobPiece(vol.path / "blobs" / "sha256" / digest.removeprefix("sha256:"), 0, size)]
        return [BlobPiece(vol.path, vol.offsets[digest], size)]

    def verify_checksums(self, require_complete: bool = True) -> VerifyReport:
        """The quick check: every volume hashed against its ``.sha256`` file, nothing else.

        The headers were checked when the reader opened; the blobs are not hashed one by one,
        so this trusts whoever wrote the ``.sha256`` files (``serve --trust-checksums``).
        An unpacked folder has no ``.sha256``: it is refused here.
        """
        missing = self.missing()
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
            for found, _, stream, part, _ in blobs:
                if found == digest and part is None:
                    return read_exact(cast(BlobStream, stream), size)
        raise InputError(f"{vol.path}: blob {digest} listed in volume.yaml is missing")

    def close(self) -> None:
        """Nothing stays open between calls; kept so callers can use the reader as a context manager."""

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _guarded_member(tar: tarfile.TarFile, member: tarfile.TarInfo, position: int, seen: set[str],
                    vol: _Volume, where: str) -> tuple[str, Part | None] | None:
    """Every member passes the guard; a metadata file must be what the first pass read; a blob (or a part)
    must be one the lock and volume.yaml name, at their size. Returns the blob's digest and, for a part,
    which one; None for other members."""
    kind = member_kind(where, member, position, seen)
    if kind == "meta":
        if read_member(tar, member, where) != vol.meta[member.name]:
            raise InputError(f"{where}: {member.name} changed while the bundle was being read")
        return None
    if kind == "part":
        part = check_part(where, member, vol.parts)
        return part.digest, part
    if kind != "blob":
        return None
    digest = "sha256:" + member.name.removeprefix("blobs/sha256/")
    check_blob(where, digest, member.size, vol.sizes, vol.blobs)
    return digest, None


def _dir_blob(vol: _Volume, digest: str) -> IO[bytes]:
    """A blob of an unpacked bundle: its file, or its parts read one after the other."""
    if digest in vol.joined:
        return cast(IO[bytes], RangesReader(vol.joined[digest]))
    f, _ = open_regular(vol.path / "blobs" / "sha256" / digest.removeprefix("sha256:"), str(vol.path))
    return f


def _contiguous(parts: list[tuple[_Volume, Part]]) -> bool:
    """Are these all of a split blob's parts, in order, end to end?"""
    offset = 0
    for number, (_, part) in enumerate(parts):
        if part.index != number or part.offset != offset:
            return False
        offset += part.length
    return bool(parts) and offset == parts[0][1].size


def _check_volume_end(tar: tarfile.TarFile, rest: Callable[[], IO[bytes]], found: set[str], vol: _Volume,
                      where: str) -> None:
    """After the last member: a proper end of archive, every blob volume.yaml lists seen, and nothing but
    zero padding after the first end block (``rest()`` is the stream positioned just past it)."""
    check_end(tar, where)
    for digest in [*vol.blobs, *vol.parts]:
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


@dataclass(frozen=True)
class LockHead:
    """A bundle's lock and lock signature as raw bytes, read before anything in them is believed."""

    where: str
    lock: bytes
    signature: bytes | None


def volume_meta(path: Path) -> tuple[str, dict[str, bytes]]:
    """A tar volume's kind and its leading small files (``META_ORDER``, then the signature if any).

    Only headers and these capped members are read; nothing is parsed, so a caller
    can check the lock's signature before it trusts a single byte of the lock.
    """
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
            if position == len(META_ORDER) and member.name != SIGNATURE_MEMBER:
                break                        # an unsigned bundle: its blobs start here
            member_kind(where, member, position, seen)
            meta[member.name] = read_member(tar, member, where)
            if position == len(META_ORDER):
                break
    for name in META_ORDER:
        if name not in meta:
            raise InputError(f"{where}: not a mirrorkit bundle volume: {name} is missing")
    return kind, meta


def _read_capped(root: Path, name: str) -> bytes:
    where = str(root)
    f, _ = open_regular(root / name, where)
    with f:
        data = f.read(META_CAPS[name] + 1)
    if len(data) > META_CAPS[name]:
        raise InputError(f"{where}: {name} is larger than the {META_CAPS[name]} bytes allowed")
    return data


def lock_heads(paths: Sequence[Path | str]) -> list[LockHead]:
    """The raw lock and signature of each given volume, or of one unpacked bundle folder."""
    out = []
    for p in (Path(p) for p in paths):
        if p.is_dir():
            sig = p / SIGNATURE_MEMBER
            out.append(LockHead(str(p), _read_capped(p, "bundle.yaml"),
                                _read_capped(p, SIGNATURE_MEMBER) if sig.exists() or sig.is_symlink() else None))
        else:
            _, meta = volume_meta(p)
            out.append(LockHead(str(p), meta["bundle.yaml"], meta.get(SIGNATURE_MEMBER)))
    return out
