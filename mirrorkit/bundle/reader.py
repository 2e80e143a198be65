"""Reads a bundle that nobody vouches for: tar or tar.zst volumes, or one unpacked folder.

Every tar header goes through mirrorkit.bundle.guard before its data is
touched, every blob is hashed while it streams (mirrorkit.bundle.stream), and
nothing is ever written to disk while reading.

Opening the volumes (the header scan, the unpacked-folder walk, the checks that they
are of one bundle) is mirrorkit.bundle.volumescan; the passes that read or verify a
whole volume are mirrorkit.bundle.volumepass. BundleReader ties them together.
"""
from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from mirrorkit.bundle.guard import reading
from mirrorkit.bundle.lockcheck import check_manifests
from mirrorkit.bundle.stream import BlobStream, Member, PartChain, RangesReader, Reassembly, VolumeHash, read_exact
from mirrorkit.bundle.volumepass import check_manifest_size, dir_blob, verify_tar, volume_pass
from mirrorkit.bundle.volumes import CHUNK, SIGNATURE_MEMBER, SMALL_LIMIT, Part, Progress, sibling_volumes
from mirrorkit.bundle.volumescan import Volume, check_together, open_dir, open_volume
from mirrorkit.errors import InputError, OperationError
from mirrorkit.lock import Lock


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
            volumes = [open_dir(given[0])]
        else:
            seen: dict[Path, Path] = {}
            for p in given:
                key = p.resolve()
                if key in seen:
                    raise InputError(f"volume {p} given twice")
                seen[key] = p
            volumes = [open_volume(p) for p in given]
        check_together(volumes)
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
        self._split: dict[str, list[tuple[Volume, Part]]] = {}
        for vol in self._volumes:
            for digest, part in vol.parts.items():
                self._split.setdefault(digest, []).append((vol, part))
        for digest, parts in self._split.items():
            if _contiguous(parts):
                self.blobs[digest] = parts[0][1].size

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

    def _members(self, progress: Progress | None) -> Generator[Member, None, None]:
        for vol in self._volumes:
            yield from volume_pass(vol, progress)

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
                blobs, size = verify_tar(vol, wanted, manifests, progress, joined)
                count += blobs
                total += size
                continue
            for digest, size, stream, part, where in volume_pass(vol, progress):
                if part is not None:
                    hasher = joined.hasher(part)
                    while chunk := stream.read(CHUNK):
                        if hasher is not None:
                            hasher.update(chunk)
                        if progress:
                            progress(len(chunk))
                    count += joined.finish(part, where)
                elif digest in wanted:
                    check_manifest_size(digest, size)
                    manifests[digest] = read_exact(cast(BlobStream, stream), size)
                    count += 1
                else:
                    cast(BlobStream, stream).drain()
                    count += 1
                total += size
        check_manifests(self.lock, manifests)
        return VerifyReport(self.lock.id, len(self._volumes), self.volume_count, count, total, missing is None)

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
            f = dir_blob(vol, digest)
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

        def check(vol: Volume) -> None:
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
        with closing(volume_pass(vol)) as blobs:
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


def _contiguous(parts: list[tuple[Volume, Part]]) -> bool:
    """Are these all of a split blob's parts, in order, end to end?"""
    offset = 0
    for number, (_, part) in enumerate(parts):
        if part.index != number or part.offset != offset:
            return False
        offset += part.length
    return bool(parts) and offset == parts[0][1].size
