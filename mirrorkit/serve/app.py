"""The aiohttp application: the read-only OCI Distribution routes, the package tree, ``/healthz``.

One catch-all route: the path is split and percent-decoded here, segment by segment, so
that ``..``, ``%2e%2e``, an encoded slash or backslash, an empty segment or a NUL is
refused before any lookup; nothing is ever looked up on disk by a name from a request
(names and digests are keys of the index, built from the verified lock). Writes get 405
``UNSUPPORTED``; what the bundle does not hold gets 404 with the OCI error codes.
"""

from __future__ import annotations

import asyncio
import bisect
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

from mirrorkit.oci.manifests import INDEX_TYPES, OCI_INDEX
from mirrorkit.refs import is_digest
from mirrorkit.serve.accesslog import SENT, USER
from mirrorkit.serve.auth import Htpasswd
from mirrorkit.serve.blobsend import send_range
from mirrorkit.serve.index import ServeIndex
from mirrorkit.serve.ranges import BadRange, parse_range

READ_METHODS = ("GET", "HEAD")
API_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
MAX_PAGE = 10000
REALM = "mirrorkit"
PACKAGE_TYPES = {".deb": "application/vnd.debian.binary-package", ".rpm": "application/x-rpm",
                 ".gz": "application/gzip", ".xz": "application/x-xz", ".bz2": "application/x-bzip2",
                 ".zst": "application/zstd", ".xml": "application/xml", ".gpg": "application/pgp-keys",
                 ".asc": "application/pgp-signature"}
TEXT_NAMES = ("Release", "InRelease", "Packages", "Sources", "Index")

@dataclass
class ServeSettings:
    index: ServeIndex
    htpasswd: Htpasswd | None = None
    tls: bool = False        # TLS: blobs are read and written, not sent with sendfile


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
          detail: Any = None) -> web.Response:
    """An OCI error body: ``{"errors": [{"code", "message", "detail"}]}``."""
    body = {"errors": [{"code": code, "message": message, "detail": detail if detail is not None else {}}]}
    return web.json_response(body, status=status, headers={**API_HEADER, **(headers or {})})


def split_path(raw: str) -> list[str] | None:
    """The decoded path segments, or None for anything that could climb or smuggle a separator."""
    path = raw.split("?", 1)[0]
    if not path.startswith("/"):
        return None
    parts = path[1:].split("/")
    out = []
    for n, part in enumerate(parts):
        try:
            segment = unquote(part, errors="strict")
        except UnicodeDecodeError:
            return None
        if segment in (".", "..") or (segment == "" and n != len(parts) - 1):
            return None
        if any(c in segment for c in "/\\\0"):
            return None
        out.append(segment)
    if out and out[-1] == "":
        out.pop()
    return out


def make_app(settings: ServeSettings) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _Routes(settings).handle)
    return app


class _Routes:
    def __init__(self, settings: ServeSettings) -> None:
        self.s = settings
        self.index = settings.index

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method not in READ_METHODS:
            return error(405, "UNSUPPORTED", "this registry is read-only: it serves a bundle",
                         {"Allow": ", ".join(READ_METHODS)})
        segments = split_path(request.raw_path)
        if segments is None:
            return error(400, "NAME_INVALID", "path refused (traversal, encoded separator or empty segment)")
        if segments == ["healthz"]:
            return web.Response(text="ok\n")
        if self.s.htpasswd is not None and not await self._authorized(request):
            return error(401, "UNAUTHORIZED", "authentication required",
                         {"WWW-Authenticate": f'Basic realm="{REALM}"'})
        if segments and segments[0] == "packages":
            return await self.package(request, segments[1:])
        if not segments or segments[0] != "v2":
            return error(404, "NOT_FOUND", "not found")
        return await self.v2(request, segments[1:])

    async def _authorized(self, request: web.Request) -> bool:
        assert self.s.htpasswd is not None
        header = request.headers.get("Authorization")
        user = self.s.htpasswd.remembered(header)
        if user is None and header:
            user = await asyncio.get_running_loop().run_in_executor(None, self.s.htpasswd.check, header)
        if user is None:
            return False
        request[USER] = user
        return True

    # -- /v2/ ------------------------------------------------------------------------------

    async def v2(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        if not rest:
            return web.json_response({}, headers=API_HEADER)
        if rest == ["_catalog"]:
            return self.catalog(request)
        if len(rest) >= 3 and rest[-2:] == ["tags", "list"]:
            return self.tags(request, "/".join(rest[:-2]))
        if len(rest) >= 3 and rest[-2] == "manifests":
            return self.manifest(request, "/".join(rest[:-2]), rest[-1])
        if len(rest) >= 3 and rest[-2] == "blobs":
            return await self.blob(request, "/".join(rest[:-2]), rest[-1])
        if len(rest) >= 3 and rest[-2] == "referrers":
            return self.referrers(request, "/".join(rest[:-2]), rest[-1])
        return error(404, "NOT_FOUND", "no such route in a read-only registry")

    def _repo(self, name: str) -> Any:
        return self.index.repositories.get(name)

    def catalog(self, request: web.Request) -> web.Response:
        names = sorted(self.index.repositories)
        return self._paged(request, names, "repositories", "/v2/_catalog", {})

    def tags(self, request: web.Request, name: str) -> web.Response:
        repo = self._repo(name)
        if repo is None:
            return error(404, "NAME_UNKNOWN", f"repository {name} is not in this bundle", detail={"name": name})
        return self._paged(request, sorted(repo.tags), "tags", f"/v2/{name}/tags/list", {"name": name})

    def _paged(self, request: web.Request, items: list[str], key: str, path: str,
               extra: dict[str, Any]) -> web.Response:
        """``n``/``last`` pagination as the distribution spec has it, with a ``Link`` to the next page."""
        n_text, last = request.query.get("n"), request.query.get("last")
        n: int | None = None
        if n_text is not None:
            if not n_text.isdigit() or int(n_text) > MAX_PAGE:
                return error(400, "PAGINATION_NUMBER_INVALID", f"n must be a number from 0 to {MAX_PAGE}")
            n = int(n_text)
        start = bisect.bisect_right(items, last) if last else 0
        page = items[start:] if n is None else items[start:start + n]
        headers = dict(API_HEADER)
        if n and start + n < len(items):
            headers["Link"] = f'<{path}?n={n}&last={quote(page[-1], safe="")}>; rel="next"'
        return web.json_response({**extra, key: page}, headers=headers)

    def manifest(self, request: web.Request, name: str, reference: str) -> web.Response:
        repo = self._repo(name)
        if repo is None:
            return error(404, "NAME_UNKNOWN", f"repository {name} is not in this bundle", detail={"name": name})
        digest = (reference if reference in repo.manifests else None) if is_digest(reference) \
            else repo.tags.get(reference)
        if digest is None:
            return error(404, "MANIFEST_UNKNOWN", f"manifest {name}:{reference} is not in this bundle",
                         detail={"name": name, "reference": reference})
        stored = self.index.manifests[digest]
        if not _accepts(request.headers.getall("Accept", []), stored.media_type):
            return error(404, "MANIFEST_UNKNOWN", f"{name}:{reference} is a {stored.media_type}, which the "
                         "client's Accept header does not allow", detail={"mediaType": stored.media_type})
        headers = {**API_HEADER, "Docker-Content-Digest": digest, "ETag": f'"{digest}"',
                   "Content-Type": stored.media_type}
        return web.Response(body=stored.data, headers=headers)

    async def blob(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        repo = self._repo(name)
        if repo is None:
            return error(404, "NAME_UNKNOWN", f"repository {name} is not in this bundle", detail={"name": name})
        if not is_digest(digest):
            return error(400, "DIGEST_INVALID", f"{digest!r} is not a sha256 digest", detail={"digest": digest})
        if digest not in repo.blobs:
            return error(404, "BLOB_UNKNOWN", f"blob {digest} is not in {name}", detail={"digest": digest})
        headers = {**API_HEADER, "Docker-Content-Digest": digest, "ETag": f'"{digest}"',
                   "Content-Type": "application/octet-stream", "Cache-Control": "max-age=31536000, immutable"}
        return await self._bytes(request, digest, headers)

    async def _bytes(self, request: web.Request, digest: str, headers: dict[str, str]) -> web.StreamResponse:
        """The blob whole (200) or one range of it (206); a range it cannot satisfy gets 416."""
        size = self.index.blob_size(digest)
        try:
            wanted = parse_range(request.headers.get("Range"), size)
        except BadRange:
            return error(416, "RANGE_INVALID", "the Range header cannot be satisfied",
                         {"Content-Range": f"bytes */{size}"}, {"size": size})
        start, count = wanted if wanted is not None else (0, size)
        response = web.StreamResponse(status=206 if wanted else 200, headers={**headers, "Accept-Ranges": "bytes"})
        if wanted:
            response.headers["Content-Range"] = f"bytes {start}-{start + count - 1}/{size}"
        response.content_length = count
        if request.method == "HEAD" or count == 0:
            await response.prepare(request)
            await response.write_eof()
            return response
        request[SENT] = await send_range(request, response, self.index.pieces[digest], start, count,
                                         use_sendfile=not self.s.tls)
        return response

    def referrers(self, request: web.Request, name: str, digest: str) -> web.Response:
        repo = self._repo(name)
        if repo is None:
            return error(404, "NAME_UNKNOWN", f"repository {name} is not in this bundle", detail={"name": name})
        if not is_digest(digest):
            return error(400, "DIGEST_INVALID", f"{digest!r} is not a sha256 digest", detail={"digest": digest})
        listed = repo.referrers.get(digest, [])
        headers = {**API_HEADER, "Content-Type": OCI_INDEX}
        wanted = request.query.getall("artifactType", [])
        if wanted:
            listed = [d for d in listed if d.get("artifactType") in wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed}
        return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), headers=headers)

    # -- /packages/<os>/<name>/<path> --------------------------------------------------------

    async def package(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        found = self.index.packages.get("/".join(rest)) if len(rest) >= 3 else None
        if found is None:
            return web.Response(status=404, text="not found\n")
        last = rest[-1]
        kind = next((t for s, t in PACKAGE_TYPES.items() if last.endswith(s)), None)
        if kind is None:
            kind = "text/plain; charset=utf-8" if last in TEXT_NAMES else "application/octet-stream"
        return await self._bytes(request, found.digest, {"Content-Type": kind, "ETag": f'"{found.digest}"'})


def _accepts(headers: list[str], media_type: str) -> bool:
    """Accept negotiation as registries do it: an index goes only to a client that accepts indexes;
    a single manifest is served as stored whatever the header says (there is nothing to convert it to)."""
    types = {part.split(";", 1)[0].strip().lower() for header in headers for part in header.split(",")}
    types.discard("")
    if not types or "*/*" in types or media_type in types:
        return True
    return media_type not in INDEX_TYPES
