"""Blob uploads: one PUT when nothing is there yet, resumed with PATCH after a cut.

An upload is one operation under the retry policy (mirrorkit.oci.retry): the
requests inside it are single attempts, so retries never nest. distribution
keeps an upload session's bytes when a PUT is cut; its status says how many, and
only the rest is sent again.

A session the registry forgot (a registry restarted without its upload state, a
load balancer that moved us to another node: 404 ``BLOB_UPLOAD_UNKNOWN``) is started
again at once and is not counted as a failure. Decisions are taken on the error's
``status`` and ``code`` fields, never on its text. The body generator checks for
Ctrl-C before every chunk, so an interrupted upload stops within one chunk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from mirrorkit import interrupt
from mirrorkit.errors import AuthError, NotFoundError, RegistryError
from mirrorkit.oci import retry as retries
from mirrorkit.oci.retry import TransientError

if TYPE_CHECKING:
    from mirrorkit.oci.client import RegistryClient


def upload_blob(client: RegistryClient, registry: str, repo: str, digest: str, size: int,
            opener: Callable[[], Any], progress: Callable[[int], None] | None = None,
            attempts: int | None = None) -> None:
    """Upload one blob as one operation under the retry policy, resuming where the registry allows.

    POST opens an upload session and a PUT ``?digest=`` carries the whole blob. After a
    cut, the session's status (GET, ``Range: 0-N``) says how much arrived, a PATCH
    (with ``Content-Range``) sends only the rest and an empty PUT closes it; a session
    the registry forgot, or a close it refuses after a resume, starts over.
    ``opener`` returns a fresh binary file object each time.
    """
    scope = f"repository:{repo}:pull,push"
    session: dict[str, Any] = {"url": None, "resumed": False, "confirmed": 0}

    def attempt() -> None:
        offset = 0
        if session["url"] is not None:
            offset = upload_offset(client, registry, session, scope)
            session["resumed"] = offset > 0
            session["confirmed"] = max(session["confirmed"], offset)
            if offset == 0:
                session["url"] = None       # nothing kept (or an ambiguous "0-0"): a fresh session
        if session["url"] is None:
            start = client.request(registry, "POST", f"/v2/{repo}/blobs/uploads/", scope=scope,
                                 ok=(202,), retry=False)
            session.update(url=client.upload_location(registry, start), resumed=False)
        url = str(httpx.URL(session["url"]).copy_merge_params({"digest": digest}))
        if offset == 0:
            # nothing there yet: one PUT carrying the whole blob (two round trips in all); if it is
            # cut, the session keeps what arrived and the next attempt sends only the rest
            with opener() as fh:
                try:
                    client.request(registry, "PUT", url, scope=scope, retry=False, ok=(201, 204),
                                 content=body(fh, progress),
                                 headers={"Content-Type": "application/octet-stream",
                                          "Content-Length": str(size)})
                except RegistryError as exc:
                    if exc.code in ("BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"):
                        session["url"] = None
                        raise again(exc) from None
                    raise
            return
        if offset < size:
            with opener() as fh:
                skip(fh, offset)
                try:
                    resp = client.request(registry, "PATCH", session["url"], scope=scope, retry=False,
                                        ok=(202, 204), content=body(fh, progress),
                                        headers={"Content-Type": "application/octet-stream",
                                                 "Content-Range": f"{offset}-{size - 1}",
                                                 "Content-Length": str(size - offset)})
                except RegistryError as exc:
                    if exc.code in ("BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID") or exc.status == 416:
                        session["url"] = None       # the registry lost or refused the session
                        raise again(exc) from None
                    raise
            session["url"] = client.upload_location(registry, resp)
            session["confirmed"] = size
        url = str(httpx.URL(session["url"]).copy_merge_params({"digest": digest}))
        try:
            client.request(registry, "PUT", url, scope=scope, retry=False, ok=(201, 204),
                         headers={"Content-Length": "0"})
        except RegistryError as exc:
            if exc.code in ("DIGEST_INVALID", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "SIZE_INVALID") \
                    and (session["resumed"] or exc.code == "BLOB_UPLOAD_UNKNOWN"):
                session["url"] = None           # the resumed session held something else: once more, whole
                raise again(exc) from None
            raise

    def again(exc: RegistryError) -> TransientError:
        # a session the registry forgot is no failure of this upload: it starts over at once
        return TransientError(f"{exc}; starting the upload again", status=exc.status, code=exc.code,
                              free=exc.code == "BLOB_UPLOAD_UNKNOWN")

    try:
        policy = client.retry if attempts is None else \
            dataclasses.replace(client.retry, attempts=attempts, outage_attempts=attempts)
        retries.run(policy, attempt, progress=lambda: int(session["confirmed"]))
    except RegistryError as exc:
        if isinstance(exc, AuthError):
            raise
        raise type(exc)(f"{exc} (uploading {digest} to {registry}/{repo})", code=exc.code, status=exc.status) \
            from None

def upload_offset(client: RegistryClient, registry: str, session: dict[str, Any], scope: str) -> int:
    """Bytes the registry holds for an open upload session (0 when it cannot say)."""
    try:
        resp = client.request(registry, "GET", session["url"], scope=scope, ok=(204, 200), retry=False)
    except NotFoundError:
        session["url"] = None
        raise TransientError("the registry forgot the upload session; starting it again", free=True) from None
    if resp.headers.get("Location"):
        session["url"] = client.upload_location(registry, resp)
    end = resp.headers.get("Range", "").strip().removeprefix("bytes=")
    try:
        last = int(end.split("-", 1)[1]) if "-" in end else 0
    except ValueError:
        return 0
    # distribution answers "0-0" for an empty session as well as for one byte: count it as empty
    return last + 1 if last > 0 else 0


def body(fh: Any, progress: Callable[[int], None] | None) -> Any:
    """An upload body streamed from ``fh`` in 1 MiB reads; Ctrl-C ends it before the next chunk."""
    while True:
        interrupt.check()
        chunk = fh.read(1 << 20)
        if not chunk:
            return
        if progress:
            progress(len(chunk))
        yield chunk


def skip(fh: Any, offset: int) -> None:
    """Position a fresh blob stream at ``offset``: seek when it can, else read past."""
    if not offset:
        return
    with contextlib.suppress(OSError, AttributeError, io.UnsupportedOperation):
        if fh.seekable():
            fh.seek(offset)
            return
    left = offset
    while left > 0:
        chunk = fh.read(min(left, 1 << 20))
        if not chunk:
            raise OSError("blob stream ended before the resume offset")
        left -= len(chunk)
