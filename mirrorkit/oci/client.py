"""A small registry API client (OCI distribution spec) over httpx.

It does what mirrorkit needs and does it carefully: anonymous, basic and
bearer-token auth (the ``WWW-Authenticate`` dance nvcr.io and Docker Hub use),
retries under the one policy of mirrorkit.oci.retry (network faults, 429 and
5xx honouring ``Retry-After``, stalls), resumable chunked uploads,
manifests hashed and checked against the digest asked for, and size caps so a
lying registry cannot exhaust memory. httpx, tenacity and ssl errors are
translated here into mirrorkit's error tree and never leak past this module.
A connect, read or write with no progress for the policy's ``stall_timeout`` (60 s,
or ``MIRRORKIT_STALL_TIMEOUT`` seconds) is cut, and retried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from mirrorkit.errors import AuthError, NotFoundError, RegistryError, UnsupportedError
from mirrorkit.oci import manifests
from mirrorkit.oci import retry as retries
from mirrorkit.oci.auth import Auth
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.manifests import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    sha256_digest,
)
from mirrorkit.oci.protocol import (
    error_detail,
    first_error_code,
    parse_retry_after,
    read_error_body,
)
from mirrorkit.oci.retry import RetryPolicy, TransientError
from mirrorkit.oci.transport import Endpoints
from mirrorkit.refs import Ref

ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
MAX_MANIFEST = 4 * 1024 * 1024
MAX_SMALL_BLOB = 4 * 1024 * 1024
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Manifest:
    data: bytes
    media_type: str
    digest: str

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


class RegistryClient:
    """One client for every registry a command talks to; thread-safe for parallel jobs."""

    def __init__(self, endpoints: Endpoints | None = None, credentials: CredentialStore | None = None,
                 transport: httpx.BaseTransport | None = None, retry: RetryPolicy | None = None,
                 timeout: float | None = None, sleep: Callable[[float], None] | None = None) -> None:
        self.endpoints = endpoints or Endpoints()
        self.credentials = credentials or CredentialStore()
        for name in self.endpoints.overrides:   # an upstream reached elsewhere: its login may be under that host
            self.credentials.alias(name, self.endpoints.network_host(name))
        self.transport = transport
        policy = retry or RetryPolicy.from_env()
        if sleep is not None:
            policy = dataclasses.replace(policy, sleep=sleep)
        if timeout is not None:
            policy = dataclasses.replace(policy, stall_timeout=timeout)
        self.retry = policy
        # no byte for stall_timeout seconds (connect, read or write) cuts the transfer; the
        # retry policy then resumes it
        self.timeout = policy.stall_timeout
        self._clients: dict[str, httpx.Client] = {}
        self._bases: dict[str, str] = {}
        self._lock = threading.Lock()
        self.auth = Auth(self.endpoints, self.credentials, self.client_for)

    # -- connections ------------------------------------------------------------
    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self, registry: str) -> httpx.Client:
        """One httpx client per registry; HTTPS_PROXY, HTTP_PROXY and NO_PROXY apply through it.

        httpx reads the proxy variables only when it builds its own transport: an injected
        ``transport`` (tests' MockTransport) disables them. TLS runs end to end through a
        CONNECT tunnel, so ``verify`` (--ca-cert, certs.d, --insecure) still decides.
        """
        return self._http(registry, registry)

    def _http(self, key: str, name: str) -> httpx.Client:
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                # redirects are followed by _send, hop by hop, each host with its own TLS settings
                # metadata requests run many at once (transfer.engine.metadata_width): keep their
                # connections open, a new one costs a round trip (two with TLS) to a distant registry
                client = httpx.Client(
                    verify=self.endpoints.verify(name), timeout=self.timeout,
                    follow_redirects=False, transport=self.transport, trust_env=True,
                    headers={"User-Agent": "mirrorkit"},
                    limits=httpx.Limits(max_connections=160, max_keepalive_connections=160),
                )
                self._clients[key] = client
            return client

    def client_for(self, registry: str, url: httpx.URL) -> httpx.Client:
        """The registry's own client for its own endpoint; any other host (a token realm, the CDN
        a blob redirects to) gets a client with that host's TLS settings, so an ``--insecure``
        registry's unverified TLS, or its certs.d CA, never carries over to another host."""
        netloc = f"{url.host}:{url.port}" if url.port else url.host
        if netloc == self.endpoints.network_host(registry):
            return self._client(registry)
        return self._http(f"host {netloc}", netloc)

    def _send(self, registry: str, method: str, url: str, headers: dict[str, str], stream: bool,
              kwargs: dict[str, Any]) -> httpx.Response:
        """Send, following redirects hop by hop (blob storage often answers 307 to a CDN).

        Each hop is reached with its own host's TLS settings; a redirect from https to plain
        HTTP is refused unless that host is named ``--insecure``; the Authorization header
        stays with the registry's own origin.
        """
        for _ in range(MAX_REDIRECTS + 1):
            target = httpx.URL(url)
            client = self.client_for(registry, target)
            resp = client.send(client.build_request(method, url, headers=headers, **kwargs), stream=stream)
            if not (resp.is_redirect and resp.headers.get("Location")):
                return resp
            resp.close()
            nxt = target.join(resp.headers["Location"])
            netloc = f"{nxt.host}:{nxt.port}" if nxt.port else nxt.host
            if target.scheme == "https" and nxt.scheme != "https" and not self.endpoints.is_insecure(netloc):
                raise RegistryError(f"refusing a redirect from https://{target.host} to {nxt.scheme}://{netloc} "
                                    f"(name it with --insecure {netloc} if this is intended)")
            if not self._same_origin(registry, str(nxt)):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if resp.status_code == 303:
                method, kwargs = "GET", {k: v for k, v in kwargs.items() if k not in ("content", "data", "json")}
            elif not isinstance(kwargs.get("content"), bytes | None):
                raise TransientError(f"HTTP {resp.status_code} redirect of a streamed body from {target.host}: "
                                     "starting it again")
            url = str(nxt)
        raise RegistryError(f"more than {MAX_REDIRECTS} redirects from {method} {registry}{httpx.URL(url).path}")

    def base_url(self, registry: str) -> str:
        """The endpoint; for an insecure registry without an explicit scheme, probe https then http."""
        if registry in self._bases:
            return self._bases[registry]
        base = self.endpoints.base_url(registry)
        if self.endpoints.is_insecure(registry) and registry not in self.endpoints.overrides:
            try:
                self._client(registry).get(f"{base}/v2/", timeout=5.0)
            except (httpx.TransportError, httpx.HTTPError):
                base = "http://" + base.split("://", 1)[1]
        self._bases[registry] = base
        return base

    def authenticated(self, registry: str) -> bool:
        """Whether the registry asked for credentials and took them (a token, or basic auth)."""
        return self.auth.authenticated(registry)

    # -- requests ---------------------------------------------------------------
    def _same_origin(self, registry: str, url: str) -> bool:
        base = httpx.URL(self.base_url(registry))
        target = httpx.URL(url)
        return (base.scheme, base.host, base.port) == (target.scheme, target.host, target.port)

    def request(self, registry: str, method: str, path: str, scope: str = "",
                headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200,),
                stream: bool = False, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """One API call with auth; returns a response whose status is in ``ok``.

        ``retry=True`` runs the call under the retry policy. ``retry=False`` sends one
        attempt and raises :class:`TransientError` for a failure worth another try: the
        caller is then itself one operation under the policy (a download, an upload),
        so retries never nest. Credentials go only to the registry's own origin: an
        upload ``Location`` on another host gets none.
        """
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url(registry)}{path}"
        what = f"{method} {registry}{httpx.URL(url).path}"
        send_auth = self._same_origin(registry, url)
        one_shot = not isinstance(kwargs.get("content"), bytes | None)   # a streamed body cannot be re-sent

        def attempt() -> httpx.Response:
            for _ in range(3):
                hdrs = dict(headers or {})
                if send_auth:
                    hdrs.update(self.auth.header(registry, scope))
                try:
                    resp = self._send(registry, method, url, hdrs, stream, kwargs)
                except httpx.TransportError as exc:
                    raise self.transport_error(exc, what, registry, url) from None
                if resp.status_code == 401 and resp.headers.get("WWW-Authenticate") and send_auth:
                    resp.close()
                    self.auth.renew(registry, scope, resp.headers["WWW-Authenticate"],
                                    sent=hdrs.get("Authorization", ""))
                    if one_shot:
                        # the body may have been a one-shot stream, already (partly) sent: the
                        # caller's operation starts again, now with the renewed authorization
                        raise TransientError(f"{what}: authorization renewed mid-request; starting it again",
                                             free=True)
                    continue
                if resp.status_code == 429 or resp.status_code >= 500:
                    code = "" if stream else (first_error_code(read_error_body(resp, False)) or "")
                    resp.close()
                    raise TransientError(f"HTTP {resp.status_code}{' ' + code if code else ''} from {what}",
                                         parse_retry_after(resp.headers.get("Retry-After")),
                                         status=resp.status_code, code=code or None)
                return resp
            raise AuthError(f"{registry}: authentication did not succeed for {what}", status=401)

        resp = retries.run(self.retry, attempt) if retry else attempt()
        if resp.status_code in ok:
            return resp
        body = read_error_body(resp, stream)
        resp.close()
        detail, code = error_detail(body), first_error_code(body)
        # the registry's own words first: the cause, then which request (its URL may be long)
        cause = f"HTTP {resp.status_code}{detail}"
        # a read in a repository the registry will not name (Quay's depth limit: 400 NAME_INVALID)
        # finds nothing there, like a 404: "is the image there?" is answered no, and the preflight
        # then reports the name rule before anything is pushed
        status = resp.status_code
        if status == 404 or (method in ("GET", "HEAD") and code in ("NAME_INVALID", "NAME_UNKNOWN")):
            raise NotFoundError(f"not found ({cause}): {what}", code=code, status=status)
        if status in (401, 403):
            raise AuthError(f"access denied ({cause}): {what}", code=code, status=status)
        raise RegistryError(f"{cause}: {what}", code=code, status=status)

    def transport_error(self, exc: httpx.TransportError, what: str, registry: str, url: str) -> RegistryError:
        """A network failure as mirrorkit's error: TLS and name resolution are final, the rest transient."""
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "WRONG_VERSION_NUMBER" in str(exc):
            return RegistryError(
                f"TLS verification failed at {httpx.URL(url).host}:{httpx.URL(url).port or 443} "
                f"({str(exc).split(']')[-1].strip() or exc}) for {what}; trust its CA with --ca-cert, or name it "
                f"with --insecure {self.endpoints.network_host(registry)}")
        if retries.is_name_resolution_failure(exc):
            return RegistryError(f"cannot resolve {httpx.URL(url).host}: {exc} ({what})")
        return TransientError(f"{type(exc).__name__}: {exc or 'connection failed'} ({what})",
                              outage=retries.is_outage(exc))

    # -- manifests ----------------------------------------------------------------
    def get_manifest(self, ref: Ref, reference: str | None = None) -> Manifest:
        """The manifest's exact bytes, checked against the digest when one is asked for.

        Headers and body are one attempt: a body cut or stalled midway is asked for again.
        """
        reference = reference or ref.reference
        path = f"/v2/{ref.repository}/manifests/{reference}"
        what = f"GET {ref.registry}{path}"

        def attempt() -> tuple[httpx.Response, bytes]:
            resp = self.request(ref.registry, "GET", path, scope=f"repository:{ref.repository}:pull",
                                headers={"Accept": ACCEPT}, stream=True, retry=False)
            try:
                declared = int(resp.headers.get("Content-Length") or 0)
                if declared > MAX_MANIFEST:
                    raise RegistryError(f"{ref.name}:{reference}: manifest of {declared} bytes exceeds "
                                        f"the {MAX_MANIFEST} byte limit")
                chunks, total = [], 0
                for chunk in resp.iter_bytes():
                    total += len(chunk)
                    if total > MAX_MANIFEST:
                        raise RegistryError(f"{ref.name}:{reference}: manifest exceeds the "
                                            f"{MAX_MANIFEST} byte limit")
                    chunks.append(chunk)
                return resp, b"".join(chunks)
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise TransientError(f"reading manifest cut off: {type(exc).__name__} ({what})",
                                     outage=retries.is_outage(exc)) from None
            except httpx.HTTPError as exc:
                raise RegistryError(f"reading manifest failed: {type(exc).__name__} ({what})") from None
            finally:
                resp.close()

        resp, data = retries.run(self.retry, attempt)
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"{ref.name}@{reference}: registry answered with a manifest whose "
                                f"digest is {digest}")
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != digest:
            raise RegistryError(f"{ref.name}:{reference}: Docker-Content-Digest {header} does not "
                                f"match the manifest bytes ({digest})")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            media_type = _body_media_type(data) or media_type
        return Manifest(data, media_type, digest)

    def manifest_digest(self, ref: Ref) -> str | None:
        """Digest of what the registry holds at ref, or None when it has nothing there."""
        try:
            return self.get_manifest(ref).digest
        except NotFoundError:
            return None

    def blob_exists(self, ref: Ref, digest: str) -> bool:
        resp = self.request(ref.registry, "HEAD", f"/v2/{ref.repository}/blobs/{digest}",
                            scope=f"repository:{ref.repository}:pull", ok=(200, 404))
        return resp.status_code == 200


    def open_blob(self, ref: Ref, digest: str) -> BlobStream:
        """One GET of a whole blob, as a stream of chunks; one attempt, for a caller that is itself
        one operation under the policy. Network faults while reading raise TransientError."""
        resp = self.request(ref.registry, "GET", f"/v2/{ref.repository}/blobs/{digest}",
                            scope=f"repository:{ref.repository}:pull", stream=True, retry=False)
        return BlobStream(resp, f"{ref.name}@{digest}")

    def get_small_blob(self, ref: Ref, digest: str, limit: int = MAX_SMALL_BLOB) -> bytes:
        """A small blob (config, signature payload, SBOM) whole: one operation under the policy,
        size capped, hash checked."""
        what = f"{ref.name}@{digest}"

        def attempt() -> bytes:
            chunks, total = [], 0
            with self.open_blob(ref, digest) as stream:
                for chunk in stream.chunks():
                    total += len(chunk)
                    if total > limit:
                        raise RegistryError(f"{what}: blob exceeds the {limit} byte limit for artifacts")
                    chunks.append(chunk)
            return b"".join(chunks)

        data = retries.run(self.retry, attempt)
        got = sha256_digest(data)
        if got != digest:
            raise RegistryError(f"{what}: registry served bytes whose digest is {got}")
        return data

    # -- writing ----------------------------------------------------------------
    def upload_location(self, registry: str, resp: httpx.Response) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"{registry}: upload started without a Location header")
        return self.upload_url(registry, loc)

    def upload_url(self, registry: str, location: str) -> str:
        """An upload ``Location`` (often relative) as an absolute URL."""
        return str(httpx.URL(self.base_url(registry) + "/").join(location))

    def mount_blob(self, registry: str, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; False when the registry declines (it then expects an upload)."""
        scope = f"repository:{repo}:pull,push repository:{from_repo}:pull"
        resp = self.request(registry, "POST", f"/v2/{repo}/blobs/uploads/", scope=scope,
                            params={"mount": digest, "from": from_repo}, ok=(201, 202))
        if resp.status_code == 202:
            self._cancel_upload(registry, resp, scope)
        return resp.status_code == 201

    def start_and_cancel_upload(self, registry: str, repo: str) -> None:
        """Start an upload into ``repo`` and cancel it at once: the cheapest request that meets the same
        checks as a real push (name rules, project existence, push rights). Raises the refusal."""
        scope = f"repository:{repo}:pull,push"
        resp = self.request(registry, "POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,))
        self._cancel_upload(registry, resp, scope)

    def _cancel_upload(self, registry: str, resp: httpx.Response, scope: str) -> None:
        """DELETE the session an upload POST opened (its ``Location``); a registry that cannot is left be."""
        location = resp.headers.get("Location")
        if location:
            with contextlib.suppress(RegistryError):
                self.request(registry, "DELETE", self.upload_url(registry, location), scope=scope,
                             ok=(200, 202, 204, 404, 405))

    def upload_blob(self, registry: str, repo: str, digest: str, size: int,
                    opener: Callable[[], Any], progress: Callable[[int], None] | None = None,
                    attempts: int | None = None) -> None:
        """Upload one blob as one operation under the retry policy (mirrorkit.oci.upload)."""
        from mirrorkit.oci.upload import upload_blob

        upload_blob(self, registry, repo, digest, size, opener, progress, attempts)

    def put_manifest(self, registry: str, repo: str, reference: str, data: bytes, media_type: str,
                     retry: bool = True) -> str:
        """Upload manifest bytes exactly as given (never re-serialised); returns their digest.

        ``retry=False``: one attempt, for a caller that is itself one operation under the policy.
        """
        digest = sha256_digest(data)
        resp = self.request(registry, "PUT", f"/v2/{repo}/manifests/{reference}",
                            scope=f"repository:{repo}:pull,push", retry=retry,
                            headers={"Content-Type": media_type}, content=data, ok=(201, 200))
        header = resp.headers.get("Docker-Content-Digest")
        if header and header != digest:
            raise RegistryError(f"{registry}/{repo}:{reference}: registry stored digest {header}, "
                                f"expected {digest}")
        return digest

    # -- deleting (prune) ---------------------------------------------------------
    def delete_manifest(self, registry: str, repo: str, reference: str) -> bool:
        """DELETE ``/v2/REPO/manifests/REFERENCE`` (a digest, or a tag where the registry allows it).

        True when deleted, False when it was already gone. A registry that refuses
        the operation (405, or 400 ``UNSUPPORTED`` for tag deletes) raises
        UnsupportedError carrying its error code, so the caller can tell "not allowed
        here" from a fault.
        """
        resp = self.request(registry, "DELETE", f"/v2/{repo}/manifests/{reference}",
                            scope=f"repository:{repo}:pull,push,delete", ok=(200, 202, 204, 404, 400, 405))
        if resp.status_code in (200, 202, 204):
            return True
        code = first_error_code(read_error_body(resp, stream=False)) or ""
        if resp.status_code == 404 and code in ("", "MANIFEST_UNKNOWN", "NOT_FOUND"):
            return False
        raise UnsupportedError(f"DELETE {registry}/{repo}/manifests/{reference}: HTTP {resp.status_code}"
                               + (f" {code}" if code else ""))

    def _paged(self, registry: str, path: str, scope: str, key: str, max_pages: int = 1000) -> list[str]:
        out: list[str] = []
        url: str | None = f"{path}?n=1000"
        pages = 0
        seen: set[str] = set()
        while url and pages < max_pages:
            if url in seen:
                raise RegistryError(f"{registry}{path}: the registry's page links loop back to {url}; giving up")
            seen.add(url)
            pages += 1
            resp = self.request(registry, "GET", url, scope=scope)
            try:
                items = resp.json().get(key) or []
            except (ValueError, AttributeError):
                raise RegistryError(f"{registry}{path}: invalid JSON listing") from None
            out.extend(str(i) for i in items if isinstance(i, str))
            link = resp.headers.get("Link", "")
            url = None
            if 'rel="next"' in link and link.startswith("<"):
                url = str(httpx.URL(self.base_url(registry) + "/").join(link[1:link.index(">")]))
        if url:
            raise RegistryError(f"{registry}{path}: more than {max_pages} pages; giving up")
        return out

    def list_tags(self, registry: str, repo: str) -> list[str]:
        return self._paged(registry, f"/v2/{repo}/tags/list", f"repository:{repo}:pull", "tags")

    def catalog(self, registry: str) -> list[str]:
        return self._paged(registry, "/v2/_catalog", "registry:catalog:*", "repositories")


def _body_media_type(data: bytes) -> str | None:
    """The media type a manifest's body declares or has the shape of; None when it says nothing."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not (isinstance(doc.get("mediaType"), str) or "manifests" in doc
                                         or "layers" in doc):
        return None
    return manifests.media_type(doc)


class BlobStream:
    """A blob GET's body: chunks as they arrive; httpx's errors become mirrorkit's and never leak."""

    def __init__(self, resp: httpx.Response, what: str) -> None:
        self.resp = resp
        self.what = what

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self.resp.iter_bytes()
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise TransientError(f"{type(exc).__name__} reading {self.what}", outage=retries.is_outage(exc)) from None
        except httpx.HTTPError as exc:
            raise RegistryError(f"reading {self.what} failed: {type(exc).__name__}") from None

    def close(self) -> None:
        self.resp.close()

    def __enter__(self) -> BlobStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
