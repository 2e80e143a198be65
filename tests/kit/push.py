"""A minimal uploader that seeds test registries with testkit content.

This is deliberately not mirrorkit's registry client: seeding with the code under
test would let one bug hide another.  It speaks the plain distribution API
(HEAD, monolithic POST+PUT blob upload, PUT manifest), basic auth only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from kit.images import Blob, Image, Index

Auth = tuple[str, str] | None

TIMEOUT = httpx.Timeout(15.0, connect=5.0)


class PushError(RuntimeError):
    """The registry refused a seeding step; carries the status and the body."""


@contextmanager
def _session(auth: Auth, verify: bool, client: httpx.Client | None) -> Iterator[httpx.Client]:
    if client is not None:
        yield client
        return
    with httpx.Client(auth=auth, verify=verify, timeout=TIMEOUT) as new:
        yield new


def _base(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base if "://" in base else f"http://{base}"


def _check(response: httpx.Response, *expected: int) -> httpx.Response:
    if response.status_code not in expected:
        raise PushError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: "
            f"{response.text[:500]}"
        )
    return response


def push_blob(
    base_url: str,
    repo: str,
    blob: Blob,
    auth: Auth = None,
    verify: bool = True,
    *,
    client: httpx.Client | None = None,
) -> bool:
    """Upload ``blob`` unless present; returns whether bytes were sent."""
    base = _base(base_url)
    with _session(auth, verify, client) as http:
        head = http.head(f"{base}/v2/{repo}/blobs/{blob.digest}")
        if head.status_code == 200:
            return False
        _check(head, 404)
        started = _check(http.post(f"{base}/v2/{repo}/blobs/uploads/"), 202)
        # Location may be relative or absolute and already carries _state params.
        location = started.url.join(started.headers["Location"])
        target = location.copy_merge_params({"digest": blob.digest})
        _check(
            http.put(
                target,
                content=blob.data,
                headers={"Content-Type": "application/octet-stream"},
            ),
            201,
        )
        return True


def push_manifest(
    base_url: str,
    repo: str,
    reference: str,
    data: bytes,
    media_type: str,
    auth: Auth = None,
    verify: bool = True,
    *,
    client: httpx.Client | None = None,
) -> str:
    """PUT a manifest or index by tag or digest; returns the digest the registry computed."""
    base = _base(base_url)
    with _session(auth, verify, client) as http:
        response = _check(
            http.put(
                f"{base}/v2/{repo}/manifests/{reference}",
                content=data,
                headers={"Content-Type": media_type},
            ),
            201,
        )
        return response.headers.get("Docker-Content-Digest", "")


def push_image(
    base_url: str,
    repo: str,
    tag: str,
    content: Image | Index,
    auth: Auth = None,
    verify: bool = True,
) -> str:
    """Push blobs, then child manifests by digest, then the top manifest by ``tag``.

    That order is the one a registry enforces: it refuses a manifest whose blobs or
    children it does not have.  Returns the top manifest's digest, checked against
    what the registry computed.
    """
    images = content.images if isinstance(content, Index) else (content,)
    with _session(auth, verify, None) as http:
        for image in images:
            for blob in image.blobs():
                push_blob(base_url, repo, blob, client=http)
        if isinstance(content, Index):
            for image in images:
                push_manifest(
                    base_url, repo, image.digest, image.manifest, image.media_type, client=http
                )
            data, media_type, digest = content.data, content.media_type, content.digest
        else:
            data, media_type, digest = content.manifest, content.media_type, content.digest
        got = push_manifest(base_url, repo, tag, data, media_type, client=http)
    if got and got != digest:
        raise PushError(f"registry computed {got} for {repo}:{tag}, expected {digest}")
    return digest
