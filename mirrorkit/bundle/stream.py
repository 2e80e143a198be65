"""Streams that hash as they go, so no byte of a bundle reaches a registry unchecked.

Memory stays flat: blobs move in 1 MiB chunks and only manifests (at most
4 MiB each) are held whole.
"""
from __future__ import annotations

import hashlib
import io
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from mirrorkit.bundle.guard import reading
from mirrorkit.bundle.volumes import CHUNK, Progress
from mirrorkit.errors import InputError


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
        with reading(self._where):
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



class HashingReader:
    """Hashes a volume's raw bytes as they are read, for the ``.sha256`` check at the end of a pass.

    The hashing runs in a thread of its own (hashlib releases the GIL), so the
    volume hash and the per-blob hashes use two cores instead of one.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._hash = hashlib.sha256()
        # 4 chunks in flight: a hashing thread starved of CPU must not let memory grow
        # (64 gave 123 MB peak RSS for push-bundle beside busy processes, 65 MB alone)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
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
def finishing(reader: HashingReader) -> Iterator[HashingReader]:
    try:
        yield reader
    finally:
        reader.finish()


def read_exact(stream: BlobStream, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        parts.append(chunk)
        got += len(chunk)
    stream.read(1)  # completes the hash check for an empty blob
    return b"".join(parts)


# -- verify's offset reads of a plain volume ---------------------------------------------------

VERIFY_READ = 4 * CHUNK     # verify's reads of a plain tar volume: few calls, one reused buffer


def hash_range(data: io.RawIOBase, offset: int, size: int, digest: str, where: str, buffer: memoryview,
                keep: list[bytes] | None, progress: Progress | None) -> None:
    """Hash ``size`` bytes of ``data`` from ``offset`` against ``digest`` (the same messages as BlobStream's);
    ``keep`` collects the bytes (a manifest's, at most SMALL_LIMIT)."""
    hasher = hashlib.sha256()
    data.seek(offset)
    got = 0
    while got < size:
        n = data.readinto(buffer[: min(len(buffer), size - got)])
        if not n:
            raise InputError(f"{where}: blob {digest} is truncated: {got} of {size} bytes")
        hasher.update(buffer[:n])
        if keep is not None:
            keep.append(bytes(buffer[:n]))
        got += n
        if progress:
            progress(n)
    actual = "sha256:" + hasher.hexdigest()
    if actual != digest:
        raise InputError(f"{where}: blob {digest} is corrupt: its bytes hash to {actual}")


class VolumeHash:
    """A volume's SHA-256 computed front to back by a thread of its own, beside the blob hashing.

    ``wanted=False`` (a volume without a ``.sha256``) does nothing. A read error in the
    thread is raised by ``result()``, where the caller's ``reading`` turns it into one line.
    """

    def __init__(self, path: Path, where: str, wanted: bool) -> None:
        self.path, self.where, self.wanted = path, where, wanted
        self.hash = hashlib.sha256()
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        buffer = memoryview(bytearray(VERIFY_READ))
        try:
            with open(self.path, "rb", buffering=0) as f:
                while not self.stop.is_set() and (n := f.readinto(buffer)):
                    self.hash.update(buffer[:n])
        except OSError as exc:
            self.error = exc

    def __enter__(self) -> VolumeHash:
        if self.wanted:
            self.thread.start()
        return self

    def result(self) -> str | None:
        if not self.wanted:
            return None
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.hash.hexdigest()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()             # an error elsewhere: the thread ends at its next read
        if self.wanted:
            self.thread.join()
