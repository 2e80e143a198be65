"""Where the engine reads images from: a registry repository, a bundle, a blob store folder.

A source answers two questions: the exact bytes of a manifest (checked against
the digest asked for) and the verified bytes of a blob. How it can hand out a
blob is its ``access`` (a :class:`BlobAccess`), which is all a sink asks of it:
local sources hand out a stream that verifies itself as it is read, any number of
times, so nothing is copied twice; a registry gives one pass that keeps its bytes
as it goes (so a cut copy resumes from them), or a resumable download into a store.
"""

from __future__ import annotations

import enum
import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from mirrorkit.errors import OperationError
from mirrorkit.files import write_error
from mirrorkit.lock import Lock
from mirrorkit.oci import manifests
from mirrorkit.oci.client import Manifest, RegistryClient
from mirrorkit.oci.download import fetch_blob
from mirrorkit.oci.layout import BlobStore
from mirrorkit.oci.manifests import sha256_digest
from mirrorkit.refs import Ref, check_digest

if TYPE_CHECKING:
    from mirrorkit.bundle.reader import BundleReader

Progress = Callable[[int], None]


class Stream(Protocol):
    """What a blob stream must do: read, and close when its ``with`` ends."""

    def read(self, n: int = -1, /) -> bytes: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None, /) -> Any: ...


class BlobAccess(enum.Enum):
    """How a source can hand out a blob: a sink chooses how to copy by asking this, never the source's class."""

    REOPEN = "reopen"   # open_blob: a fresh self-verifying stream on every call (a file, memory, a tar volume)
    TEE = "tee"         # tee_blob: one pass, kept in a store's partial file as it goes; save_blob resumes it
    SAVE = "save"       # save_blob only: the blob is put into a store first (a compressed bundle's volumes)


class Source(Protocol):
    name: str
    access: BlobAccess

    def get_manifest(self, reference: str, media_type: str = "") -> Manifest:
        """The manifest at a tag or digest; ``media_type`` is the parent descriptor's, when known."""
        ...

    def save_blob(self, digest: str, size: int, store: BlobStore, progress: Progress | None = None) -> None:
        """Put the blob's verified bytes into ``store`` (resuming a partial download there)."""
        ...

    def open_blob(self, digest: str, size: int) -> Stream | None:
        """A fresh stream of the blob that checks its digest as it is read, or None if there is none."""
        ...

    def tee_blob(self, digest: str, size: int, store: BlobStore) -> Stream | None:
        """One pass over the blob, every byte also kept in ``store``'s partial file (``save_blob`` then resumes
        from it), refused at the end if it hashes wrong; None unless ``access`` is TEE."""
        ...


class RegistrySource:
    def __init__(self, client: RegistryClient, ref: Ref) -> None:
        self.client = client
        self.ref = ref
        self.name = ref.name
        self.access = BlobAccess.TEE

    def get_manifest(self, reference: str, media_type: str = "") -> Manifest:
        return self.client.get_manifest(self.ref, reference)

    def save_blob(self, digest: str, size: int, store: BlobStore, progress: Progress | None = None) -> None:
        fetch_blob(self.client, self.ref, digest, size, store, progress)

    def open_blob(self, digest: str, size: int) -> Stream | None:
        return None

    def tee_blob(self, digest: str, size: int, store: BlobStore) -> Stream | None:
        """One attempt at the blob as a stream, every byte also kept in ``store``'s partial file and
        hashed: a registry-to-registry copy needs no disk round trip, and if it is cut, the
        download resumes from what was kept (``save_blob``)."""
        return TeeStream(self.client, self.ref, digest, size, store)


class TeeStream:
    """A blob GET read as a file: written through to a partial file, hashed, refused at the end if wrong.

    The last chunk is held back until the hash is checked, so a reader (an upload) never
    receives the whole of a blob that does not match its digest.
    """

    def __init__(self, client: RegistryClient, ref: Ref, digest: str, size: int, store: BlobStore) -> None:
        self.digest, self.size = digest, size
        self.partial = store.partial_path(digest)
        self.hasher = hashlib.sha256()
        self.out = self.partial.open("wb")
        self.resp = client.open_blob(ref, digest)
        self.chunks = self.resp.chunks()
        self.held = b""
        self.seen = 0
        self.done = False

    def read(self, n: int = -1, /) -> bytes:
        while not self.done:
            try:
                chunk = next(self.chunks)
            except StopIteration:
                self.done = True
                if self.seen != self.size or "sha256:" + self.hasher.hexdigest() != self.digest:
                    raise OperationError(f"digest mismatch: {self.digest} streamed as {self.seen} bytes hashing to "
                                         f"sha256:{self.hasher.hexdigest()}") from None
                break
            if not chunk:
                continue
            self.seen += len(chunk)
            if self.seen > self.size:
                raise OperationError(f"{self.digest}: the registry sent more than the {self.size} bytes declared")
            self.hasher.update(chunk)
            try:
                self.out.write(chunk)
            except OSError as exc:
                raise write_error(exc, str(self.partial.parent)) from None
            out, self.held = self.held, chunk
            if out:
                return out
        out, self.held = self.held, b""
        return out

    def close(self) -> None:
        self.resp.close()
        self.out.close()

    def __enter__(self) -> TeeStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None, /) -> None:
        self.close()


def _media_type(data: bytes, hint: str, what: str) -> str:
    return hint or manifests.media_type(manifests.parse(data, what))


class BundleSource:
    """A bundle (tar volumes, compressed volumes or a folder): every byte hashed as it is read."""

    def __init__(self, reader: BundleReader, lock: Lock) -> None:
        self.reader = reader
        self.name = "bundle"
        # tar volumes and folders are read anywhere, any number of times; compressed ones only in order
        self.access = BlobAccess.REOPEN if reader.random_access else BlobAccess.SAVE
        self.media_types = {a.digest: a.media_type for a in lock.artifacts if a.media_type}
        self.media_types.update({i.digest: i.media_type for i in lock.images})

    def get_manifest(self, reference: str, media_type: str = "") -> Manifest:
        check_digest(reference)
        data = self.reader.read_small(reference)
        if sha256_digest(data) != reference:
            raise OperationError(f"bundle: manifest {reference} does not hash to its name")
        return Manifest(data, _media_type(data, media_type or self.media_types.get(reference, ""), reference),
                        reference)

    def open_blob(self, digest: str, size: int) -> Stream | None:
        if not self.reader.random_access:
            return None
        return self.reader.open_blob(digest)

    def save_blob(self, digest: str, size: int, store: BlobStore, progress: Progress | None = None) -> None:
        stream = self.open_blob(digest, size)
        if stream is None:
            raise OperationError("this bundle has compressed volumes: its blobs are read in order")
        _copy_into(stream, digest, store, progress)

    def tee_blob(self, digest: str, size: int, store: BlobStore) -> Stream | None:
        return None


class LayoutSource:
    """A blob store folder (an OCI layout's ``blobs/sha256``): the work folder of a pull, for one."""

    def __init__(self, store: BlobStore, name: str = "") -> None:
        self.store = store
        self.name = name or str(store.root)
        self.access = BlobAccess.REOPEN

    def get_manifest(self, reference: str, media_type: str = "") -> Manifest:
        check_digest(reference)
        data = self.store.read(reference)
        if sha256_digest(data) != reference:
            raise OperationError(f"{self.name}: manifest {reference} does not hash to its name")
        return Manifest(data, _media_type(data, media_type, reference), reference)

    def open_blob(self, digest: str, size: int) -> Stream | None:
        return self.store.path(digest).open("rb")

    def save_blob(self, digest: str, size: int, store: BlobStore, progress: Progress | None = None) -> None:
        if store.root == self.store.root:
            return
        with self.store.path(digest).open("rb") as fh:
            _copy_into(fh, digest, store, progress)

    def tee_blob(self, digest: str, size: int, store: BlobStore) -> Stream | None:
        return None


def _copy_into(stream: Stream, digest: str, store: BlobStore, progress: Progress | None) -> None:
    partial: Path = store.partial_path(digest)
    try:
        with stream, partial.open("wb") as out:
            while chunk := stream.read(1 << 20):
                out.write(chunk)
                if progress:
                    progress(len(chunk))
    except OSError as exc:
        raise write_error(exc, str(partial.parent)) from None
    store.adopt(partial, digest)


class MemorySource:
    """Blobs already read and checked, held in memory (a bundle's Helm charts: small, read once)."""

    access = BlobAccess.REOPEN

    def __init__(self, blobs: dict[str, bytes], name: str = "memory") -> None:
        self.blobs = blobs
        self.name = name

    def get_manifest(self, reference: str, media_type: str = "") -> Manifest:
        data = self.blobs.get(check_digest(reference))
        if data is None or sha256_digest(data) != reference:
            raise OperationError(f"{self.name}: manifest {reference} is not held, or does not hash to its name")
        return Manifest(data, _media_type(data, media_type, reference), reference)

    def open_blob(self, digest: str, size: int) -> Stream | None:
        return io.BytesIO(self.blobs[digest])

    def save_blob(self, digest: str, size: int, store: BlobStore, progress: Progress | None = None) -> None:
        store.add_bytes(self.blobs[digest])

    def tee_blob(self, digest: str, size: int, store: BlobStore) -> Stream | None:
        return None

