"""Resumable, verified blob downloads: a layer cut off at 90 % is finished, not fetched again.

Every blob the engine takes from a registry comes through here, whatever its
size. The bytes go to a ``.partial`` file in the work folder and are hashed as
they arrive; each new attempt (in this run or a later one) asks for the rest
with ``Range: bytes=N-``; a registry or CDN that ignores Range (200) starts the
file over; the file enters the store only if it hashes to its digest. The whole
download is one operation under the retry policy, counted from the last attempt
that made the file longer, so a link that drops every few minutes still gets a
gigabyte layer through.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import httpx

from mirrorkit import interrupt
from mirrorkit.errors import OperationError, RegistryError
from mirrorkit.files import disk_full, is_disk_full, write_error
from mirrorkit.oci import retry
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.layout import BlobStore
from mirrorkit.oci.retry import TransientError
from mirrorkit.refs import Ref, check_digest

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def fetch_blob(client: RegistryClient, ref: Ref, digest: str, size: int, store: BlobStore,
               progress: Callable[[int], None] | None = None) -> int:
    """Download one blob into the store, resuming a partial file; returns the bytes fetched now.

    A download that does not hash to its digest (a stale partial, a registry that
    served a different object, a flipped bit) is fetched once more from its first
    byte before the blob is refused.
    """
    check_digest(digest)
    if store.has(digest):
        return 0
    partial = store.partial_path(digest)
    fetched = 0
    for round_ in (1, 2):
        got, actual = _download(client, ref, digest, size, partial, progress)
        fetched += got
        if actual == digest:
            store.adopt(partial, digest, hashed=actual)
            return fetched
        partial.unlink(missing_ok=True)
        if round_ == 2:
            raise OperationError(f"digest mismatch: {ref.registry}/{ref.repository}@{digest} downloaded twice "
                                 f"and hashed to {actual} both times: refusing it")
    raise AssertionError("unreachable")


def _download(client: RegistryClient, ref: Ref, digest: str, size: int, partial: Path,
              progress: Callable[[int], None] | None) -> tuple[int, str]:
    """Bring ``partial`` to ``size`` bytes; returns the bytes fetched and the file's digest."""
    where = f"{ref.registry}/{ref.repository}@{digest}"
    if partial.is_file() and partial.stat().st_size > size:
        partial.unlink()                       # left by a different download: not ours to trust
    try:
        partial.touch()
    except OSError as exc:
        raise write_error(exc, str(partial.parent)) from None
    state = {"fetched": 0}
    hasher = hashlib.sha256()
    hashed = [0]                               # bytes of the partial file already fed to the hasher

    def have() -> int:
        return partial.stat().st_size if partial.is_file() else 0

    def catch_up() -> None:
        """Hash what the partial file holds beyond what was hashed (a partial kept from a past run)."""
        if hashed[0] == have():
            return
        with partial.open("rb") as fh:
            fh.seek(hashed[0])
            while chunk := fh.read(CHUNK):
                hasher.update(chunk)
                hashed[0] += len(chunk)

    def restart() -> None:
        nonlocal hasher
        partial.unlink(missing_ok=True)
        hasher = hashlib.sha256()
        hashed[0] = 0

    def attempt() -> None:
        start = have()
        if start >= size:
            return
        headers = {"Range": f"bytes={start}-{size - 1}"} if start else {}
        try:
            resp = client.request(ref.registry, "GET", f"/v2/{ref.repository}/blobs/{digest}",
                                  scope=f"repository:{ref.repository}:pull", headers=headers,
                                  ok=(200, 206, 416), stream=True, retry=False)
        except TransientError as exc:
            raise TransientError(f"{exc}; {start} of {size} bytes kept", exc.retry_after, status=exc.status,
                                 code=exc.code, outage=exc.outage) from None
        try:
            mode = _write_mode(resp, start, size)
            if mode is None:                   # 416, or a range we did not ask for: start over
                restart()
                raise TransientError(f"HTTP {resp.status_code} to a range request for {where}")
            if mode == "wb":
                restart()
            else:
                catch_up()
            try:
                with partial.open("ab") as fh:
                    for chunk in resp.iter_bytes():     # as it arrives: a cut keeps every byte that came
                        interrupt.check()
                        if hashed[0] + len(chunk) > size:
                            raise OperationError(f"{where}: the registry sent more than the {size} bytes "
                                                 "the manifest declares")
                        fh.write(chunk)
                        hasher.update(chunk)
                        hashed[0] += len(chunk)
                        state["fetched"] += len(chunk)
                        if progress:
                            progress(len(chunk))
            except OSError as exc:
                if not is_disk_full(exc):
                    raise write_error(exc, str(partial.parent)) from None
                partial.unlink(missing_ok=True)        # the disk must not stay full; completed blobs stay
                raise disk_full(partial.parent.parent, f"downloading {where} ({size} bytes)", removed=partial) \
                    from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise TransientError(f"{type(exc).__name__} reading {where} at byte {have()} of {size}",
                                 outage=retry.is_outage(exc)) from None
        finally:
            resp.close()
        if have() < size:
            raise TransientError(f"the answer for {where} ended at byte {have()} of {size}")

    try:
        retry.run(client.retry, attempt, progress=have)
    except RegistryError as exc:
        if have():
            raise type(exc)(f"{exc}; {have()} of {size} bytes are kept in {partial.parent} and the next run "
                            "resumes from there", code=exc.code, status=exc.status) from None
        raise
    catch_up()
    return state["fetched"], "sha256:" + hasher.hexdigest()


def _write_mode(resp: httpx.Response, have: int, size: int) -> str | None:
    """How the answer's body joins the partial file: appended, written anew, or (None) not used."""
    if resp.status_code == 200:
        return "wb"                            # the whole blob: Range ignored, the partial is replaced
    if resp.status_code != 206:
        return None
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
    if not match or int(match.group(1)) != have or (match.group(3) != "*" and int(match.group(3)) != size):
        return None
    return "ab"
