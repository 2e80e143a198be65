"""Plain HTTP(S) file reads (package repositories, Helm repositories) under the one retry policy.

Package repositories are not registries: a file is a URL, nothing more. What stays the same as
for registries: TLS is verified (``--ca-cert`` and ``certs.d/HOST[:PORT]/*.crt`` through
:class:`~mirrorkit.oci.transport.Endpoints`), every attempt goes through :func:`mirrorkit.oci.retry.run`
(5xx, 429, cuts and stalls are retried; 4xx is final), a cut download resumes with ``Range``, and a
file is kept only when its size and sha256 are the ones the caller expected. Plain ``http://`` is
allowed: package repositories are commonly served so, and their integrity comes from the signed
metadata and the hashes it lists, never from the transport.

Credentials in a URL (``https://user:token@host/...``) are sent as basic auth and never appear in an
error or a log line: every message names the URL through :func:`redact`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from mirrorkit import interrupt
from mirrorkit.errors import InputError, NotFoundError, OperationError, RegistryError
from mirrorkit.files import is_disk_full, write_error
from mirrorkit.oci import retry
from mirrorkit.oci.retry import RetryPolicy, TransientError
from mirrorkit.oci.transport import Endpoints

CHUNK = 1 << 20
MAX_SMALL = 1 << 30        # metadata read whole into memory: Debian's uncompressed Packages is 50 MB


def redact(url: str) -> str:
    """The URL without user and password, fit for a message."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _split(url: str) -> tuple[str, httpx.BasicAuth | None, str]:
    """(URL without credentials, basic auth from them, host[:port])."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InputError(f"{redact(url)}: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{redact(url)}: expected an http:// or https:// URL")
    auth = httpx.BasicAuth(parts.username or "", parts.password or "") if parts.username else None
    host = parts.hostname if not port else f"{parts.hostname}:{port}"
    return redact(url), auth, host


class HTTPFiles:
    """A Fetcher (``mirrorkit.packages.model.Fetcher``): ``fetch_bytes`` and ``download``."""

    def __init__(self, endpoints: Endpoints | None = None, policy: RetryPolicy | None = None) -> None:
        self.endpoints = endpoints or Endpoints()
        self.policy = policy or RetryPolicy.from_env()
        self._clients: dict[str, httpx.Client] = {}

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> HTTPFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self, host: str) -> httpx.Client:
        if host not in self._clients:
            timeout = httpx.Timeout(self.policy.stall_timeout, connect=min(30.0, self.policy.stall_timeout))
            self._clients[host] = httpx.Client(verify=self.endpoints.verify(host), timeout=timeout,
                                               follow_redirects=True, trust_env=True)
        return self._clients[host]

    def _open(self, url: str, headers: dict[str, str]) -> tuple[httpx.Response, str]:
        """One attempt's response (streamed), or the failure classified for the retry policy."""
        clean, auth, host = _split(url)
        client = self._client(host)
        try:
            req = client.build_request("GET", clean, headers=headers)
            resp = client.send(req, auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT, stream=True)
        except httpx.TransportError as exc:
            if retry.is_name_resolution_failure(exc):
                raise RegistryError(f"{clean}: cannot resolve the host name") from None
            raise TransientError(f"{clean}: {type(exc).__name__}: {_reason(exc)}") from None
        if resp.status_code in (200, 206):
            return resp, clean
        resp.close()
        code = resp.status_code
        if code == 429 or code >= 500:
            after = resp.headers.get("Retry-After", "")
            raise TransientError(f"{clean}: HTTP {code}", float(after) if after.isdigit() else None)
        if code == 404:
            raise NotFoundError(f"{clean}: not found (HTTP 404)")
        if code in (401, 403):
            raise RegistryError(f"{clean}: access refused (HTTP {code})")
        raise RegistryError(f"{clean}: HTTP {code}")

    def fetch_bytes(self, url: str, limit: int = MAX_SMALL) -> bytes:
        """A small file, whole (metadata), or a one-line error naming the URL."""

        def attempt() -> bytes:
            resp, clean = self._open(url, {})
            try:
                out = bytearray()
                for chunk in resp.iter_bytes():
                    interrupt.check()
                    out += chunk
                    if len(out) > limit:
                        raise OperationError(f"{clean}: larger than {limit} bytes")
                return bytes(out)
            except httpx.TransportError as exc:
                raise TransientError(f"{clean}: cut after {len(out)} bytes ({_reason(exc)})") from None
            finally:
                resp.close()

        return retry.run(self.policy, attempt)

    def download(self, url: str, dest: Path, sha256: str | None = None, size: int | None = None) -> None:
        """``url`` to ``dest`` (atomically), resumed with Range after a cut; size and sha256 checked."""
        partial = dest.with_name(f".{dest.name}.partial")
        clean = redact(url)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if partial.is_file() and size is not None and partial.stat().st_size > size:
                partial.unlink()
            partial.touch()
        except OSError as exc:
            raise write_error(exc, str(dest.parent)) from None

        def have() -> int:
            return partial.stat().st_size if partial.is_file() else 0

        def attempt() -> None:
            start = have()
            if size is not None and start >= size:
                return
            headers = {"Range": f"bytes={start}-"} if start else {}
            resp, _ = self._open(url, headers)
            try:
                mode = "ab" if start and resp.status_code == 206 else "wb"   # a server ignoring Range: afresh
                with partial.open(mode) as fh:
                    for chunk in resp.iter_bytes():
                        interrupt.check()
                        fh.write(chunk)
                        if size is not None and fh.tell() > size:
                            raise OperationError(f"{clean}: larger than the {size} bytes the signed metadata lists")
            except httpx.TransportError as exc:
                raise TransientError(f"{clean}: cut at {have()} bytes ({_reason(exc)})") from None
            except OSError as exc:
                if is_disk_full(exc):
                    raise write_error(exc, str(dest.parent)) from None
                raise
            finally:
                resp.close()

        retry.run(self.policy, attempt, progress=have)
        got = have()
        if size is not None and got != size:
            partial.unlink(missing_ok=True)
            raise OperationError(f"{clean}: {got} bytes, but the signed metadata lists {size}")
        if sha256 is not None:
            actual = file_sha256(partial)
            if actual != sha256.lower():
                partial.unlink(missing_ok=True)
                raise OperationError(f"{clean}: sha256 {actual} does not match the signed metadata ({sha256})")
        os.replace(partial, dest)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _reason(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]


_DEFAULT: HTTPFiles | None = None


def _default() -> HTTPFiles:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = HTTPFiles()
    return _DEFAULT


def fetch_bytes(url: str, files: HTTPFiles | None = None) -> bytes:
    """Module-level form (shared name with the charts code): a small file, whole."""
    return (files or _default()).fetch_bytes(url)


def download(url: str, dest: Path, sha256: str | None = None, size: int | None = None,
             files: HTTPFiles | None = None) -> None:
    """Module-level form (shared name with the charts code): a verified, resumed download."""
    (files or _default()).download(url, dest, sha256, size)
