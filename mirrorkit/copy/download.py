"""Resumable blob downloads: a big layer cut off at 90 % is finished, not fetched again.

skopeo 1.9 (Debian 12) restarts a blob from its first byte when the connection
drops, and loses what it had when the process is stopped. A GPU driver layer is
gigabytes on the links air-gapped sites are fed through, so pull-bundle fetches
large layers itself: the bytes go to a ``.partial`` file in the work folder,
every new attempt (in this run or a later one) asks for the rest with
``Range: bytes=N-``, a registry or CDN that ignores Range (200) starts the file
over, and the finished file enters the store only if it hashes to its digest.
skopeo then finds the blob in the shared blob folder and does not fetch it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx

from mirrorkit import interrupt
from mirrorkit.errors import OperationError, RegistryError
from mirrorkit.files import disk_full, is_disk_full
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.layout import BlobStore
from mirrorkit.refs import Ref, check_digest

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def fetch_blob(client: RegistryClient, ref: Ref, digest: str, size: int, store: BlobStore,
               progress: Callable[[int], None] | None = None) -> int:
    """Download one blob into the store, resuming a partial file; returns the bytes fetched now.

    A resumed file that does not hash to the digest (a stale partial, a registry that
    served a different object at the same offset) is fetched once more from its first
    byte before the blob is refused.
    """
    check_digest(digest)
    partial = store.root / "partial" / f"{digest[7:]}.partial"
    partial.parent.mkdir(exist_ok=True)
    fetched, resumed = _download(client, ref, digest, size, partial, progress)
    try:
        store.adopt(partial, digest)           # checks that the bytes hash to the digest; removes them if not
    except OperationError:
        if not resumed:
            raise
        again, _ = _download(client, ref, digest, size, partial, progress)
        store.adopt(partial, digest)
        fetched += again
    return fetched


def _download(client: RegistryClient, ref: Ref, digest: str, size: int, partial: Path,
              progress: Callable[[int], None] | None) -> tuple[int, bool]:
    """Bring ``partial`` to ``size`` bytes; returns the bytes fetched and whether any came by Range.

    Each attempt that ends mid-body keeps what arrived; attempts are bounded by the
    client's retry policy, counted only when an attempt left the file no longer, so a
    download on a link that drops every few minutes still finishes.
    """
    if partial.is_file() and partial.stat().st_size > size:
        partial.unlink()                       # left by a different download: not ours to trust
    fetched, failures, last_error, resumed = 0, 0, "", False
    path = f"/v2/{ref.repository}/blobs/{digest}"
    while (have := partial.stat().st_size if partial.is_file() else 0) < size:
        if failures >= max(1, client.retry.attempts):
            raise RegistryError(f"{ref.registry}/{ref.repository}@{digest}: download stopped at {have} of {size} "
                                f"bytes ({last_error}; gave up after {failures} attempts without progress; "
                                "the next run resumes from there)")
        last_error = ""
        headers = {"Range": f"bytes={have}-{size - 1}"} if have else {}
        try:
            resp = client.request(ref.registry, "GET", path, scope=f"repository:{ref.repository}:pull",
                                  headers=headers, ok=(200, 206, 416), stream=True)
        except RegistryError as exc:
            if not have:
                raise
            raise type(exc)(f"{exc}; {have} of {size} bytes of {digest} are kept and the next run "
                            "resumes from there") from None
        added = 0
        try:
            mode = _write_mode(resp, have, size)
            if mode is None:                   # 416, or a range we did not ask for: start over
                partial.unlink(missing_ok=True)
                failures += 1
                last_error = f"HTTP {resp.status_code} to a range request"
                continue
            resumed = resumed or mode == "ab"
            with partial.open(mode) as fh:
                start = fh.tell()
                for chunk in resp.iter_bytes(CHUNK):
                    interrupt.check()
                    if start + added + len(chunk) > size:
                        raise OperationError(f"{ref.registry}/{ref.repository}@{digest}: the registry sent more "
                                             f"than the {size} bytes the manifest declares")
                    fh.write(chunk)
                    added += len(chunk)
                    if progress:
                        progress(len(chunk))
        except (httpx.TransportError, httpx.StreamError) as exc:
            last_error = type(exc).__name__
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            partial.unlink(missing_ok=True)    # the disk must not stay full; completed blobs stay
            raise disk_full(partial.parent.parent, f"downloading {ref.registry}/{ref.repository}@{digest} "
                            f"({size} bytes)", removed=partial) from None
        finally:
            resp.close()
            fetched += added
        # progress is what the file gained: a 200 that restarts it and drops early gains nothing
        grown = partial.is_file() and partial.stat().st_size > have
        failures = 0 if grown else failures + 1
        last_error = last_error or "the answer ended early"
    return fetched, resumed


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
