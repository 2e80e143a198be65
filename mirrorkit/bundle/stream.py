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
from mirrorkit.bundle.volumes import CHUNK, Part, Progress
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
        if n is None or n < 0:      # all of it, even from a source that gives it in pieces (a split blob)
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        n = min(n, self._remaining)
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


# -- blobs split across volumes ----------------------------------------------------------------

# one item of a volume pass: digest, bytes in this volume, the stream, the part (None: a whole blob), where
Member = tuple[str, int, Any, Part | None, str]


class PartChain:
    """A split blob's bytes as one stream: when one part runs out, the next item of the volume passes
    must be the blob's next part (the writer puts it first in the next volume), and reading goes on there.

    Only the caller's BlobStream, wrapped around this, checks the whole blob's digest.
    """

    def __init__(self, digest: str, first: IO[bytes], part: Part, where: str,
                 members: Iterator[Member]) -> None:
        self.digest, self.size, self.where, self.members = digest, part.size, where, members
        self.current = first
        self.next_index, self.offset = part.index + 1, part.offset + part.length

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        while True:
            data = self.current.read(n)
            if data or self.offset >= self.size:
                return data
            try:
                digest, _, stream, part, where = next(self.members)
            except StopIteration:
                raise InputError(f"{self.where}: blob {self.digest} goes on in part {self.next_index}, in a volume "
                                 "that was not given") from None
            if part is not None and digest == self.digest and part.index > self.next_index:
                raise InputError(f"{self.where}: blob {self.digest} goes on in part {self.next_index}, in a volume "
                                 "that was not given")
            if part is None or digest != self.digest or part.index != self.next_index or part.offset != self.offset:
                raise InputError(f"{where}: expected part {self.next_index} of blob {self.digest} to come first, "
                                 f"found {'a part of ' if part else ''}blob {digest}")
            self.current, self.where = stream, where
            self.next_index, self.offset = part.index + 1, part.offset + part.length


class RangesReader:
    """Byte ranges of several files read as one stream (a split blob's parts in plain tar volumes);
    each file is opened when its range is reached, so only one descriptor is held at a time."""

    def __init__(self, ranges: list[tuple[Path, int, int]]) -> None:
        self._ranges = list(ranges)
        self._file: IO[bytes] | None = None
        self._left = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        while self._left == 0:
            if self._file is not None:
                self._file.close()
                self._file = None
            if not self._ranges:
                return b""
            path, offset, length = self._ranges.pop(0)
            self._file = open(path, "rb")  # noqa: SIM115 - closed when its range ends, or by close()
            self._file.seek(offset)
            self._left = length
        assert self._file is not None
        data = self._file.read(self._left if n is None or n < 0 else min(n, self._left))
        if not data:
            return b""          # a shrunken volume: BlobStream reports the blob as truncated
        self._left -= len(data)
        return data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Reassembly:
    """verify's whole-blob hashes of split blobs, fed part by part in volume order.

    A part whose earlier parts were not given (one volume checked alone) gets no hasher:
    its bytes are still read, for the volume's ``.sha256``, but the blob is not counted.
    """

    def __init__(self) -> None:
        self._open: dict[str, tuple[Any, int]] = {}

    def hasher(self, part: Part) -> Any:
        if part.offset == 0:
            hasher = hashlib.sha256()
        else:
            held = self._open.pop(part.digest, None)
            if held is None or held[1] != part.offset:
                return None
            hasher = held[0]
        self._open[part.digest] = (hasher, part.offset + part.length)
        return hasher

    def finish(self, part: Part, where: str) -> int:
        """After a part's bytes: 1 when that completed (and checked) its blob, else 0."""
        held = self._open.get(part.digest)
        if held is None or held[1] != part.size:
            return 0
        del self._open[part.digest]
        actual = "sha256:" + held[0].hexdigest()
        if actual != part.digest:
            raise InputError(f"{where}: blob {part.digest} (split across volumes) is corrupt: its bytes hash to "
                             f"{actual}")
        return 1


def hash_part(data: io.RawIOBase, offset: int, size: int, hasher: Any, where: str, buffer: memoryview,
              progress: Progress | None) -> None:
    """Read ``size`` bytes of a part from ``offset``, feeding ``hasher`` (None: nothing to check them against)."""
    data.seek(offset)
    got = 0
    while got < size:
        n = data.readinto(buffer[: min(len(buffer), size - got)])
        if not n:
            raise InputError(f"{where}: a part is truncated: {got} of {size} bytes")
        if hasher is not None:
            hasher.update(buffer[:n])
        got += n
        if progress:
            progress(n)
