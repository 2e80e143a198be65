"""Where the engine writes images to: a registry repository, or a blob store folder.

A registry sink skips a blob the repository has (HEAD), mounts it from another
repository of the same registry known to hold it, and otherwise uploads it
(resumably, see RegistryClient.upload_blob) the way the source's ``access``
allows: from the source's own verifying stream (REOPEN), in one pass piped from
the source (TEE), or from a resumable download spooled in the work folder. A
store sink is the bundle's blob store: blobs enter it verified.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mirrorkit.errors import AuthError, OperationError, RegistryError
from mirrorkit.files import write_error
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.layout import BlobStore
from mirrorkit.refs import Ref
from mirrorkit.transfer.sources import BlobAccess, Source, Stream

Progress = Callable[[int], None]


class BlobResult(enum.Enum):
    """What became of one blob at one sink: the engine counts each in its CopyReport."""

    COPIED = "copied"       # its bytes moved (uploaded, or written into the store)
    MOUNTED = "mounted"     # the registry linked it from another repository: no bytes moved
    SKIPPED = "skipped"     # the sink held it already


class Sink(Protocol):
    key: str            # blobs are copied once per key (a registry repository, a store folder)
    group: str          # sinks that share storage (one registry): a blob is uploaded once per group, then mounted

    def has_blob(self, digest: str) -> bool: ...

    def put_blob(self, source: Source, digest: str, size: int, progress: Progress | None = None) -> BlobResult:
        """Copy the blob; returns COPIED or MOUNTED."""
        ...

    def put_manifest(self, reference: str, data: bytes, media_type: str) -> None:
        """Store the exact bytes at ``reference``, in one attempt (the engine retries the whole image)."""
        ...


class Holders:
    """Which repositories of a registry are known to hold a blob: the sources of cross-repository mounts."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], set[str]] = {}
        self._whole: dict[str, set[str]] = {}      # repositories holding every blob asked about (a mirror's source)
        self._lock = threading.Lock()

    def add_repository(self, registry: str, repository: str) -> None:
        with self._lock:
            self._whole.setdefault(registry, set()).add(repository)

    def add(self, registry: str, digest: str, repository: str) -> None:
        with self._lock:
            self._known.setdefault((registry, digest), set()).add(repository)

    def get(self, registry: str, digest: str, but: str) -> list[str]:
        with self._lock:
            known = self._known.get((registry, digest), set()) | self._whole.get(registry, set())
            return sorted(r for r in known if r != but)


class StoreSink:
    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.key = self.group = f"store:{store.root}"

    def has_blob(self, digest: str) -> bool:
        return self.store.has(digest)

    def put_blob(self, source: Source, digest: str, size: int,
                 progress: Progress | None = None) -> BlobResult:
        source.save_blob(digest, size, self.store, progress)
        return BlobResult.COPIED

    def put_manifest(self, reference: str, data: bytes, media_type: str) -> None:
        try:
            self.store.add_bytes(data)
        except OSError as exc:
            raise write_error(exc, str(self.store.root)) from None


class RegistrySink:
    def __init__(self, client: RegistryClient, ref: Ref, holders: Holders, spool: Path,
                 distrust: set[str] | None = None) -> None:
        self.client = client
        self.ref = ref
        self.holders = holders
        self._spool_root = spool
        self._spool: BlobStore | None = None
        self.distrust = distrust or set()     # blobs the registry is known to serve badly here: upload again
        self.key = f"registry:{ref.registry}/{ref.repository}"
        self.group = f"registry:{ref.registry}"

    def has_blob(self, digest: str) -> bool:
        """HEAD the blob. A registry that keeps failing on it has a broken link there (distribution
        killed while linking it answers 500 for that blob in that repository, forever), and
        uploading the blob again is what repairs it."""
        if digest in self.distrust:
            return False
        try:
            there = self.client.blob_exists(self.ref, digest)
        except RegistryError as exc:
            if exc.status == 500:
                return False            # the registry answers, and fails on this blob: upload it again
            raise                       # refused, or the registry away: uploading would fail the same way
        if there:
            self.holders.add(self.ref.registry, digest, self.ref.repository)
        return there

    @property
    def spool(self) -> BlobStore:
        """This repository's own spool folder: another sink may be uploading the same blob meanwhile."""
        if self._spool is None:
            name = hashlib.sha256(self.key.encode()).hexdigest()[:16]
            self._spool = BlobStore(self._spool_root / name)
        return self._spool

    def put_blob(self, source: Source, digest: str, size: int,
                 progress: Progress | None = None) -> BlobResult:
        """Mount from a repository known to hold the blob, else copy it. Never waits for another
        worker: the engine gives every repository of one registry that needs a blob to one task."""
        registry, repo = self.ref.registry, self.ref.repository
        for holder in self.holders.get(registry, digest, but=repo):
            if self.client.mount_blob(registry, repo, digest, holder):
                self.holders.add(registry, digest, repo)
                return BlobResult.MOUNTED
        if source.access is BlobAccess.REOPEN:
            self.client.upload_blob(registry, repo, digest, size, lambda: _opened(source, digest, size), progress)
        else:
            if source.access is BlobAccess.TEE and self._streamed(source, digest, size, progress):
                self.holders.add(registry, digest, repo)
                return BlobResult.COPIED
            # cut midway (or refused), or no one-pass stream: the blob goes into the spool first (a download
            # resumes from what was kept), and the upload from the file
            source.save_blob(digest, size, self.spool, progress)
            try:
                self.client.upload_blob(registry, repo, digest, size, lambda: self.spool.path(digest).open("rb"))
            finally:
                self.spool.path(digest).unlink(missing_ok=True)
        self.holders.add(registry, digest, repo)
        return BlobResult.COPIED

    def _streamed(self, source: Source, digest: str, size: int, progress: Progress | None) -> bool:
        """Source to registry in one pass (a TEE source: a registry's download piped into the upload, its
        bytes kept in this sink's spool); False if that attempt failed."""
        spent: list[bool] = []
        with contextlib.ExitStack() as opened:
            def once() -> Stream:
                if spent:
                    raise _Spent(f"{digest}: the streamed copy was cut; resuming from the kept bytes")
                spent.append(True)
                stream = source.tee_blob(digest, size, self.spool)
                if stream is None:
                    raise _Spent(f"{source.name}: blob {digest} has no one-pass stream")
                return opened.enter_context(stream)     # closed when this attempt ends, however it ends

            try:
                self.client.upload_blob(self.ref.registry, self.ref.repository, digest, size, once, progress,
                                        attempts=1)
                self.spool.partial_path(digest).unlink(missing_ok=True)
                return True
            except AuthError:
                raise
            except (OperationError, OSError):     # cut, refused, or hashed wrong: the careful path decides
                return False

    def put_manifest(self, reference: str, data: bytes, media_type: str) -> None:
        # one attempt: the engine runs each image's manifests as one operation under the retry policy
        self.client.put_manifest(self.ref.registry, self.ref.repository, reference, data, media_type, retry=False)


def _opened(source: Source, digest: str, size: int) -> object:
    stream = source.open_blob(digest, size)
    if stream is None:
        raise OperationError(f"{source.name}: blob {digest} cannot be read again")
    return stream


class _Spent(OperationError):
    """A one-pass stream asked for a second time: the caller falls back to the resumable path."""

