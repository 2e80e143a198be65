"""Decisions on an error's fields (HTTP status, the registry's code), never on its text.

httpx.MockTransport plays the registry where the point is an exact request sequence:
which answers restart an upload, which end it, and which lookups fall back.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import httpx
import pytest

from mirrorkit.errors import RegistryError
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.referrers import referrers
from mirrorkit.oci.retry import GaveUpError, RetryPolicy
from mirrorkit.oci.transport import Endpoints
from mirrorkit.refs import Ref
from mirrorkit.trust.discover import Discovery

DATA = bytes(range(256)) * 200
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def client(handler: Callable[[httpx.Request], httpx.Response], **policy: float) -> RegistryClient:
    retry = RetryPolicy(jitter=0.0, sleep=lambda _: None, **policy)  # type: ignore[arg-type]
    return RegistryClient(Endpoints(), CredentialStore(explicit={}, files=[]), transport=httpx.MockTransport(handler),
                          retry=retry)


def error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"code": code, "message": code.lower()}]})


def test_an_upload_session_the_registry_forgot_starts_again_without_counting_as_a_failure() -> None:
    """The registry restarts between the POST and the PUT three times: with one attempt allowed, the
    upload still completes, because a forgotten session is no failure of the upload."""
    log: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        req.read()
        log.append(req.method)
        if req.method == "POST":
            return httpx.Response(202, headers={"Location": f"/v2/team/app/blobs/uploads/u{len(log)}"})
        if log.count("PUT") <= 3:
            return error(404, "BLOB_UPLOAD_UNKNOWN")
        return httpx.Response(201)

    with client(handler, attempts=1, outage_attempts=1) as c:
        c.upload_blob("reg.example", "team/app", DIGEST, len(DATA), lambda: io.BytesIO(DATA))
    assert log == ["POST", "PUT"] * 4


Handler = Callable[[httpx.Request], httpx.Response]


def resumed_upload(patch_answer: httpx.Response, repo: str) -> tuple[list[str], Handler]:
    """The whole-blob PUT is cut after 10 000 bytes, the session says so, and the PATCH gets ``patch_answer``
    (the first time; after that the upload goes through)."""
    log: list[str] = []
    kept = bytearray()

    def handler(req: httpx.Request) -> httpx.Response:
        body = req.read()
        log.append(req.method)
        loc = {"Location": f"/v2/{repo}/blobs/uploads/u1"}
        if req.method == "POST":
            kept.clear()
            return httpx.Response(202, headers=loc)
        if req.method == "GET":
            return httpx.Response(204, headers={**loc, "Range": f"0-{len(kept) - 1}"})
        if req.method == "PATCH":
            if log.count("PATCH") == 1:
                return patch_answer
            kept.extend(body)
            return httpx.Response(202, headers=loc)
        if body and not kept and log.count("PUT") == 1:
            kept.extend(body[:10_000])
            raise httpx.RemoteProtocolError("connection reset mid-body")
        kept.extend(body)
        return httpx.Response(201 if bytes(kept) == DATA else 400)

    return log, handler


def test_a_416_to_a_resumed_upload_starts_it_again_by_its_status() -> None:
    log, handler = resumed_upload(httpx.Response(416), "team/app")
    with client(handler) as c:
        c.upload_blob("reg.example", "team/app", DIGEST, len(DATA), lambda: io.BytesIO(DATA))
    assert log == ["POST", "PUT", "GET", "PATCH", "POST", "PUT"]


def test_a_repository_named_416_does_not_make_every_refusal_a_416() -> None:
    """Matching "416" in the message's text restarted this upload forever; the status says 400."""
    log, handler = resumed_upload(error(400, "SIZE_INVALID"), "team/cuda-416")
    with client(handler) as c, pytest.raises(RegistryError) as info:
        c.upload_blob("reg.example", "team/cuda-416", DIGEST, len(DATA), lambda: io.BytesIO(DATA))
    assert (info.value.status, info.value.code) == (400, "SIZE_INVALID")
    assert log == ["POST", "PUT", "GET", "PATCH"]


REF = Ref.parse("reg.example/team/app:v1")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405])
def test_referrers_refused_falls_back_to_the_tag_schema(status: int) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return error(status, "DENIED") if status in (401, 403) else httpx.Response(status)

    with client(handler) as c:
        assert referrers(c, REF, DIGEST) is None


def test_referrers_of_a_failing_registry_is_an_error_not_a_silent_fallback() -> None:
    with client(lambda req: error(503, "UNAVAILABLE"), max_total=1.0) as c, pytest.raises(GaveUpError) as info:
        referrers(c, REF, DIGEST)
    assert info.value.status == 503


def test_a_tag_list_refused_is_asked_tag_by_tag_but_a_failing_one_is_an_error() -> None:
    with client(lambda req: error(403, "DENIED")) as c:
        assert Discovery(c, REF).tags() is None
    with client(lambda req: httpx.Response(500), max_total=1.0) as c, pytest.raises(GaveUpError) as info:
        Discovery(c, REF).tags()
    assert info.value.status == 500
