"""Plain HTTP(S) files: a Helm repository's ``index.yaml`` and charts, a package repository's files.

Registries are not the only servers mirrorkit reads: Helm repositories (and package
repositories) are static files behind a web server or a CDN. They get the same care
as blobs: TLS verified by the same rules as registries (``--ca-cert``,
``certs.d/HOST[:PORT]``, ``--insecure HOST`` for unverified TLS; plain ``http://``
only because the URL says so), credentials from the same auth files sent only to
the URL's own origin and never across a redirect to another one (an apt source may carry
``user:password@`` in its URL: those go out the same way and never into a message), a download that
grows a ``.partial`` file resumed with ``Range`` after a cut, the one retry policy
(:mod:`mirrorkit.oci.retry`) around each operation, and a size cap and a sha256
check before a file is put in place. httpx errors never leave this module.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from mirrorkit import interrupt
from mirrorkit.errors import AuthError, InputError, NotFoundError, OperationError, RegistryError
from mirrorkit.files import disk_full, is_disk_full, write_error
from mirrorkit.oci import retry
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.protocol import parse_retry_after
from mirrorkit.oci.retry import RetryPolicy, TransientError
from mirrorkit.oci.transport import Endpoints

CHUNK = 1 << 20
MAX_REDIRECTS = 5
DEFAULT_LIMIT = 256 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _netloc(url: httpx.URL) -> str:
    return f"{url.host}:{url.port}" if url.port else url.host


def redact(url: str) -> str:
    """A URL as messages, logs and locks show it: no user or password, no query or fragment (a signed
    CDN URL carries its token there)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid URL>"
    if not (parsed.userinfo or parsed.query or parsed.fragment):
        return url
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


class HttpFiles:
    """One client for the plain files a command reads; thread-safe, closed with the command."""

    def __init__(self, endpoints: Endpoints | None = None, credentials: CredentialStore | None = None,
                 policy: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.endpoints = endpoints or Endpoints()
        self.credentials = credentials or CredentialStore()
        self.policy = policy or RetryPolicy.from_env()
        self.transport = transport
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> HttpFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _client(self, netloc: str) -> httpx.Client:
        """One httpx client per host, with that host's TLS settings; proxies from the environment."""
        with self._lock:
            client = self._clients.get(netloc)
            if client is None:
                client = httpx.Client(verify=self.endpoints.verify(netloc), timeout=self.policy.stall_timeout,
                                      follow_redirects=False, transport=self.transport, trust_env=True,
                                      headers={"User-Agent": "mirrorkit"})
                self._clients[netloc] = client
            return client

    def _auth(self, url: httpx.URL, given: tuple[str, str] | None) -> dict[str, str]:
        """Basic auth for the URL's own origin: what the URL itself carried, else the auth files."""
        if given is None:
            creds = self.credentials.get(_netloc(url))
            if creds is None or not creds.username:
                return {}
            given = (creds.username, creds.password or "")
        token = base64.b64encode(f"{given[0]}:{given[1]}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def open(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """One GET, redirects followed hop by hop; a streamed response with status 200 or 206.

        One attempt: 5xx, 429 and network faults raise TransientError (the caller is the
        operation under the policy), 404 NotFoundError, anything else RegistryError.
        """
        try:
            origin = httpx.URL(url)
        except httpx.InvalidURL:
            raise InputError(f"{redact(url)}: not a valid URL") from None
        if origin.scheme not in ("http", "https") or not origin.host:
            raise InputError(f"{redact(url)}: expected an http:// or https:// URL")
        given = (origin.username, origin.password) if origin.userinfo else None
        origin = origin.copy_with(username=None, password=None)
        current = origin
        for _ in range(MAX_REDIRECTS + 1):
            hdrs = dict(headers or {})
            if (current.scheme, current.host, current.port) == (origin.scheme, origin.host, origin.port):
                hdrs.update(self._auth(current, given))
            client = self._client(_netloc(current))
            try:
                resp = client.send(client.build_request("GET", current, headers=hdrs), stream=True)
            except httpx.TransportError as exc:
                raise self._transport_error(exc, current) from None
            if resp.is_redirect and resp.headers.get("Location"):
                resp.close()
                nxt = current.join(resp.headers["Location"])
                if current.scheme == "https" and nxt.scheme != "https" \
                        and not self.endpoints.is_insecure(_netloc(nxt)):
                    raise RegistryError(f"refusing a redirect from {redact(str(current))} to plain HTTP "
                                        f"({nxt.scheme}://{_netloc(nxt)})")
                current = nxt
                continue
            if resp.status_code in (200, 206):
                return resp
            resp.close()
            what = f"GET {redact(str(current))}"
            if resp.status_code == 429 or resp.status_code >= 500:
                raise TransientError(f"HTTP {resp.status_code} from {what}",
                                     parse_retry_after(resp.headers.get("Retry-After")))
            if resp.status_code == 404:
                raise NotFoundError(f"not found (HTTP 404): {what}")
            if resp.status_code in (401, 403):
                raise AuthError(f"access denied (HTTP {resp.status_code}): {what}")
            raise RegistryError(f"HTTP {resp.status_code}: {what}")
        raise RegistryError(f"more than {MAX_REDIRECTS} redirects from {redact(url)}")

    def _transport_error(self, exc: httpx.TransportError, url: httpx.URL) -> RegistryError:
        what = f"GET {redact(str(url))}"
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "WRONG_VERSION_NUMBER" in str(exc):
            return RegistryError(f"TLS verification failed at {_netloc(url)} for {what}; trust its CA with "
                                 f"--ca-cert, or name it with --insecure {_netloc(url)}")
        if retry.is_name_resolution_failure(exc):
            return RegistryError(f"cannot resolve {url.host}: {exc} ({what})")
        return TransientError(f"{type(exc).__name__}: {exc or 'connection failed'} ({what})")

    def fetch_bytes(self, url: str, limit: int = DEFAULT_LIMIT) -> bytes:
        """A small file whole (an index, a signature): one operation under the policy, size capped."""
        what = redact(url)

        def attempt() -> bytes:
            resp = self.open(url)
            try:
                declared = int(resp.headers.get("Content-Length") or 0)
                if declared > limit:
                    raise OperationError(f"{what}: {declared} bytes, more than the {limit} allowed")
                chunks, total = [], 0
                for chunk in resp.iter_bytes():
                    interrupt.check()
                    total += len(chunk)
                    if total > limit:
                        raise OperationError(f"{what}: more than the {limit} bytes allowed")
                    chunks.append(chunk)
                return b"".join(chunks)
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise TransientError(f"{type(exc).__name__} reading {what}") from None
            finally:
                resp.close()

        return retry.run(self.policy, attempt)

    def download(self, url: str, dest: Path, sha256: str | None = None, size: int | None = None,
                 limit: int = DEFAULT_LIMIT, progress: Callable[[int], None] | None = None) -> str:
        """``url`` to ``dest`` through ``dest.partial`` (resumed with Range, in this run or the next).

        Returns the file's sha256 (hex). ``sha256`` (hex, or ``sha256:hex``) and ``size``
        are checked before the file is renamed into place; a mismatch is refused
        (OperationError) and leaves nothing behind. A mismatch after a resumed download
        is first fetched once more from the first byte (the kept part may be stale).
        """
        want = sha256.removeprefix("sha256:").lower() if sha256 else None
        cap = size if size is not None else limit
        partial = dest.with_name(dest.name + ".partial")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(exc, str(dest.parent)) from None
        for round_ in (1, 2):
            resumed = partial.is_file() and partial.stat().st_size > 0
            got = self._grow(url, partial, cap, size, progress)
            if (want is None or got == want) and (size is None or partial.stat().st_size == size):
                partial.replace(dest)
                return got
            partial.unlink(missing_ok=True)
            if round_ == 2 or not resumed:
                if want is not None and got != want:
                    raise OperationError(f"{redact(url)}: sha256 is {got}, which does not match the expected "
                                         f"{want}: refusing it")
                raise OperationError(f"{redact(url)}: {size} bytes expected, another size arrived: refusing it")
        raise AssertionError("unreachable")

    def _grow(self, url: str, partial: Path, cap: int, size: int | None,
              progress: Callable[[int], None] | None = None) -> str:
        """Bring ``partial`` to the whole file, resuming; returns its sha256 (hex)."""
        what = redact(url)
        if partial.is_file() and partial.stat().st_size > cap:
            partial.unlink()
        try:
            partial.touch()
        except OSError as exc:
            raise write_error(exc, str(partial.parent)) from None
        hasher = hashlib.sha256()
        hashed = [0]
        done = [False]

        def have() -> int:
            return partial.stat().st_size if partial.is_file() else 0

        def catch_up() -> None:
            if hashed[0] == have():
                return
            with partial.open("rb") as fh:
                fh.seek(hashed[0])
                while chunk := fh.read(CHUNK):
                    hasher.update(chunk)
                    hashed[0] += len(chunk)

        def restart() -> None:
            nonlocal hasher
            partial.write_bytes(b"")
            hasher = hashlib.sha256()
            hashed[0] = 0

        def attempt() -> None:
            start = have()
            if size is not None and start >= size:
                done[0] = True
                return
            resp = self.open(url, {"Range": f"bytes={start}-"} if start else {})
            try:
                if resp.status_code == 206:
                    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
                    if not match or int(match.group(1)) != start:
                        restart()
                        raise TransientError(f"{what}: an answer to a range request that does not fit; starting over")
                    catch_up()
                else:
                    restart()           # 200: the server ignored Range and sends the whole file
                try:
                    with partial.open("ab") as fh:
                        for chunk in resp.iter_bytes():
                            interrupt.check()
                            if hashed[0] + len(chunk) > cap:
                                raise OperationError(f"{what}: more than the {cap} bytes expected")
                            fh.write(chunk)
                            hasher.update(chunk)
                            hashed[0] += len(chunk)
                            if progress:
                                progress(len(chunk))
                except OSError as exc:
                    if not is_disk_full(exc):
                        raise write_error(exc, str(partial.parent)) from None
                    partial.unlink(missing_ok=True)
                    raise disk_full(partial.parent, f"downloading {what}", removed=partial) from None
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise TransientError(f"{type(exc).__name__} reading {what} at byte {have()}") from None
            finally:
                resp.close()
            if size is not None and have() < size:
                raise TransientError(f"{what}: the answer ended at byte {have()} of {size}")
            done[0] = True

        try:
            retry.run(self.policy, attempt, progress=have)
        except RegistryError as exc:
            if have() and not isinstance(exc, NotFoundError):
                raise type(exc)(f"{exc}; {have()} bytes are kept in {partial} and the next run resumes "
                                "from there") from None
            if not have():
                partial.unlink(missing_ok=True)
            raise
        catch_up()
        return hasher.hexdigest()


def fetch_bytes(url: str, limit: int = DEFAULT_LIMIT, *, files: HttpFiles | None = None) -> bytes:
    """A small file whole, with a client of its own unless one is given."""
    if files is not None:
        return files.fetch_bytes(url, limit)
    with HttpFiles() as own:
        return own.fetch_bytes(url, limit)


def download(url: str, dest: Path, sha256: str | None = None, size: int | None = None, *,
             files: HttpFiles | None = None, progress: Callable[[int], None] | None = None) -> str:
    """``url`` to ``dest``, resumed, hash and size checked; with a client of its own unless one is given."""
    if files is not None:
        return files.download(url, dest, sha256, size, progress=progress)
    with HttpFiles() as own:
        return own.download(url, dest, sha256, size, progress=progress)


__all__ = ["DEFAULT_LIMIT", "HttpFiles", "download", "fetch_bytes", "redact"]
