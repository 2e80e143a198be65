"""Bytes of a blob out of the volumes: the kernel's ``sendfile`` on plain HTTP, reads on TLS.

A blob is a list of pieces (file, offset, size); a range of it may start inside one piece
and end inside another. On plain HTTP each piece goes out with ``loop.sendfile``: the bytes
go from the page cache to the socket without entering Python (aiohttp's FileResponse can
only send whole files). TLS needs the bytes in user space to encrypt them, so there they
are read with ``os.pread`` in a worker thread, one chunk at a time, and written through
aiohttp's writer, which waits for the client to drain its buffer: memory stays flat
whatever the number of clients.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import IO

from aiohttp import web

from mirrorkit.bundle.reader import BlobPiece

CHUNK = 1 << 20
WINDOW = 8 << 20     # sendfile calls of this size, the next ones read ahead meanwhile


def _open(piece: BlobPiece) -> int:
    # no symlink swapped in after the bundle was checked
    return os.open(piece.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)


async def send_range(request: web.BaseRequest, response: web.StreamResponse, pieces: Sequence[BlobPiece],
                     start: int, count: int, use_sendfile: bool) -> int:
    """Prepare ``response`` and send ``count`` bytes of the blob from ``start``; returns the bytes sent.

    A piece shorter on disk than the bundle said (the volume changed after it was checked) ends the
    connection early, so the client sees a cut body rather than a wrong one.
    """
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    sent = 0
    for piece in pieces:
        if sent >= count:
            break
        if start >= piece.size:
            start -= piece.size
            continue
        n = min(piece.size - start, count - sent)
        fd = _open(piece)
        try:
            # a cold blob is read front to back: the kernel's bigger readahead window keeps the disk busy
            os.posix_fadvise(fd, piece.offset + start, n, os.POSIX_FADV_SEQUENTIAL)
            if use_sendfile:
                transport = request.transport
                if transport is None:
                    raise ConnectionResetError("connection lost")
                with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
                    done = await _sendfile(loop, transport, f, fd, piece.offset + start, n)
            else:
                done = await _copy(response, fd, piece.offset + start, n, loop)
        finally:
            os.close(fd)
        sent += done
        if done < n:
            if request.transport is not None:
                request.transport.close()
            return sent
        start = 0
    await response.write_eof()
    return sent


async def _sendfile(loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport, f: IO[bytes], fd: int,
                    offset: int, count: int) -> int:
    """``loop.sendfile`` in windows, asking the kernel to read the next window ahead meanwhile.

    sendfile reads a page it lacks synchronously, so on a cold cache one big call alternates
    between waiting on the disk and on the socket; a WILLNEED hint one window ahead keeps both
    busy (measured in BENCHMARKS.md).
    """
    done = 0
    os.posix_fadvise(fd, offset, min(count, 2 * WINDOW), os.POSIX_FADV_WILLNEED)
    while done < count:
        n = min(WINDOW, count - done)
        ahead = offset + done + 2 * WINDOW
        if done + 2 * WINDOW < count:
            os.posix_fadvise(fd, ahead, min(WINDOW, count - done - 2 * WINDOW), os.POSIX_FADV_WILLNEED)
        sent = await loop.sendfile(transport, f, offset + done, n)   # type: ignore[arg-type]
        done += sent
        if sent < n:
            break
    return done


async def _copy(response: web.StreamResponse, fd: int, offset: int, count: int,
                loop: asyncio.AbstractEventLoop) -> int:
    done = 0
    while done < count:
        data = await loop.run_in_executor(None, os.pread, fd, min(CHUNK, count - done), offset + done)
        if not data:
            break
        await response.write(data)
        done += len(data)
    return done
