"""Plain (uncompressed) volumes: the kernel copies blob data, a second thread hashes it.

``tarfile`` would pass every byte of a multi-gigabyte driver layer through
Python. Here headers and padding are written by Python, exactly as
``tarfile.open(mode="w|", format=PAX_FORMAT)`` writes them, while each blob's bytes
go from the store file to the volume with ``copy_file_range`` (``sendfile``, or
plain reads and writes where that is refused), and a thread of its own hashes the
same bytes for the volume's ``.sha256`` (and, for a blob the caller does not
vouch for, its digest). Python touches each byte once, for the hash.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

from mirrorkit import interrupt
from mirrorkit.bundle.volumes import CHUNK, Piece, Progress
from mirrorkit.errors import OperationError


def member_info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    """A member as every volume writes it: mode 0644, owned by 0:0, dated by the lock (same bytes each time)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def check_stored_digest(digest: str, actual: str) -> None:
    """A work-folder blob is refused when its bytes no longer hash to its name (disk damage, a stray write)."""
    if actual != digest:
        raise OperationError(f"blob {digest} in the work directory is corrupt: its bytes hash to {actual}")


COPY_CHUNK = 16 << 20     # bytes per copy_file_range call (progress is reported this often)
HASH_CHUNK = 4 << 20      # bytes per read of the hashing thread (hashlib releases the GIL for these)


def _header(name: str, size: int, mtime: int) -> bytes:
    """The member's header exactly as ``tarfile`` writes it (PAX, a pax record only where ustar cannot hold it)."""
    return member_info(name, size, mtime).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


class _VolumeHasher:
    """Hashes a volume in a thread of its own, in volume order: header bytes as given, blob data read
    from the store file (still in the page cache) while the kernel copies the same range.

    Each queued blob comes with its own duplicate of the file descriptor, read with ``pread``
    and closed here, so the writer does not wait for each hash before moving on. The queue is
    bounded (``QUEUED`` items): with thousands of tiny blobs the writer ran ahead of the hash
    and held one descriptor per blob (651 at once for 6,000 blobs, and on a reflinking
    filesystem it would approach the 1,024 limit); now it waits once that far ahead.
    """

    QUEUED = 64

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.error: BaseException | None = None
        self._queue: queue.Queue[bytes | tuple[int, str, int, bool, Path, int] | None] = queue.Queue(self.QUEUED)
        self._cancelled = False
        self._pending = 0                       # blob bytes queued but not hashed yet
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="volume-hash", daemon=True)
        self._thread.start()

    def bytes(self, data: bytes) -> None:
        self._queue.put(data)

    def blob(self, fd: int, digest: str, size: int, verify: bool, path: Path, start: int = 0) -> None:
        with self._done:
            self._pending += size
        dup = os.dup(fd)
        try:
            self._queue.put((dup, digest, size, verify, path, start))   # blocks while QUEUED blobs wait
        except BaseException:
            os.close(dup)
            raise

    def wait_pending(self, limit: int) -> None:
        """Wait until at most ``limit`` queued blob bytes are left to hash (their files' space is held
        until then: a writer that removes each file as it goes bounds the disk it holds this way)."""
        with self._done:
            self._done.wait_for(lambda: self._pending <= limit or self.error is not None
                                or not self._thread.is_alive())

    def _run(self) -> None:
        buf = bytearray(HASH_CHUNK)
        while (item := self._queue.get()) is not None:
            if isinstance(item, bytes):
                self.hash.update(item)
                continue
            fd = item[0]
            try:
                if self.error is None and not self._cancelled:
                    self._blob(buf, *item)
            except BaseException as exc:  # noqa: BLE001 - handed to the writer's thread
                self.error = exc
            finally:
                os.close(fd)
                with self._done:
                    self._pending -= item[2]
                    self._done.notify_all()

    def _blob(self, buf: bytearray, fd: int, digest: str, size: int, verify: bool, path: Path,
              start: int = 0) -> None:
        check = hashlib.sha256() if verify else None
        view = memoryview(buf)
        offset = 0
        while offset < size and not self._cancelled:
            try:
                n = os.preadv(fd, [view[:min(HASH_CHUNK, size - offset)]], start + offset)
            except OSError as exc:
                raise OperationError(f"blob {digest}: cannot read {path}: {exc.strerror or exc}") from None
            if n == 0:
                raise OperationError(f"blob {digest} shrank while being written: {path}")
            self.hash.update(view[:n])
            if check is not None:
                check.update(view[:n])
            offset += n
        if check is not None and not self._cancelled:
            check_stored_digest(digest, "sha256:" + check.hexdigest())

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def finish(self) -> str:
        self._queue.put(None)
        self._thread.join()
        self.raise_error()
        return self.hash.hexdigest()

    def cancel(self) -> None:
        self._cancelled = True
        self._queue.put(None)
        self._thread.join()


class _Copier:
    """Copies a file range into the volume at its current position: ``copy_file_range`` where the
    kernel takes it, else ``sendfile``, else reads and writes."""

    def __init__(self) -> None:
        self.how = "copy_file_range" if hasattr(os, "copy_file_range") else "sendfile"

    def __call__(self, src: int, dst: int, offset: int, count: int) -> int:
        if self.how == "copy_file_range":
            try:
                return os.copy_file_range(src, dst, count, offset)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                    raise
                self.how = "sendfile"       # another filesystem, an old kernel: the next way
        if self.how == "sendfile":
            try:
                return os.sendfile(dst, src, offset, count)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                self.how = "read"
        data = os.pread(src, min(count, CHUNK), offset)
        _write_all(dst, data)
        return len(data)


class _Writeback:
    """Starts the disk writing the volume while it is still being copied (Linux ``sync_file_range``,
    SYNC_FILE_RANGE_WRITE: no waiting), so the closing fsync finds little left to do."""

    STEP = 64 << 20

    def __init__(self, fd: int) -> None:
        self.fd, self.started = fd, 0
        self._call: Callable[[int, int, int, int], int] | None = None
        try:
            import ctypes

            self._call = ctypes.CDLL(None, use_errno=True).sync_file_range
            self._call.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
        except (OSError, AttributeError, ImportError):
            self._call = None

    def __call__(self, upto: int) -> None:
        if self._call is not None and upto - self.started >= self.STEP:
            self._call(self.fd, self.started, upto - self.started, 2)   # SYNC_FILE_RANGE_WRITE
            self.started = upto


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_plain(partial: Path, head: list[tuple[str, bytes]], blobs: list[Piece],
                 mtime: int, progress: Progress | None, written: list[int], trusted: frozenset[str],
                 on_written: Callable[[Piece], None] | None = None, max_lag: int | None = None) -> str:
    """The same bytes ``tarfile.open(mode="w|", format=PAX_FORMAT)`` writes, without passing blob data
    through Python: headers and padding are written, data ranges copied by the kernel."""
    hasher = _VolumeHasher()
    copy = _Copier()
    offset = 0
    try:
        out = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        writeback = _Writeback(out)
        try:
            def put(data: bytes) -> None:
                nonlocal offset
                _write_all(out, data)
                hasher.bytes(data)
                offset += len(data)
                written[0] += len(data)

            for name, data in head:
                put(_header(name, len(data), mtime) + data + bytes(-len(data) % tarfile.BLOCKSIZE))
            for piece in blobs:
                digest, size, path, start = piece.digest, piece.nbytes, piece.path, piece.offset
                interrupt.check()
                hasher.raise_error()
                put(_header(piece.member, size, mtime))
                try:
                    src = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                except OSError as exc:
                    raise OperationError(f"blob {digest} cannot be read from the work directory: "
                                         f"{exc.strerror or exc}: {path}") from None
                try:
                    hasher.blob(src, digest, size, digest not in trusted, path, start)
                    done = 0
                    while done < size:
                        n = copy(src, out, start + done, min(COPY_CHUNK, size - done))
                        if n == 0:
                            raise OperationError(f"blob {digest} shrank while being written: {path}")
                        done += n
                        written[0] += n
                        writeback(offset + done)
                        if progress:
                            progress(n)
                finally:
                    os.close(src)
                offset += size
                put(bytes(-size % tarfile.BLOCKSIZE))
                if on_written:
                    on_written(piece)
                if max_lag is not None:
                    hasher.wait_pending(max_lag)
            end = tarfile.BLOCKSIZE * 2
            put(bytes(end + -(offset + end) % tarfile.RECORDSIZE))
            os.fsync(out)
        finally:
            os.close(out)
        return hasher.finish()
    except BaseException:
        hasher.cancel()
        raise
