"""A bearer-token front for a real registry on loopback, the way nvcr.io and Docker Hub work.

``docker-registry`` itself only knows htpasswd (basic auth) or JWT tokens signed
by a key it trusts; neither shows a client the ``WWW-Authenticate: Bearer`` dance
against a separate token service that production registries use. This module
puts a small threaded reverse proxy (standard library only) in front of a real,
anonymous ``RegistryServer``:

* ``realm_failures=[(503, None), (429, "1")]``: the realm answers these first (a token service
  restarting or rate limiting), counted in ``token_failures``;
* every ``/v2/...`` request without a valid token gets ``401`` and
  ``WWW-Authenticate: Bearer realm="http://127.0.0.1:P/token",service="test-registry",
  scope="repository:REPO:pull"`` (the scope follows the request: ``pull`` for
  reads, ``pull,push`` for writes, ``registry:catalog:*`` for the catalog);
* ``POST /token`` with ``grant_type=refresh_token`` exchanges the ``refresh_token=``
  given to the proxy (docker's stored ``identitytoken``) for an access token;
* ``GET /token`` checks HTTP Basic credentials (user ``$oauthtoken`` and the given
  password, like nvcr.io) and answers ``{"token": ...}`` or ``{"access_token": ...}``
  with a short ``expires_in``; tokens really expire (``lifetime`` may be shorter
  than the advertised ``expires_in``, to test a token revoked early);
* authorised requests are forwarded to the registry (bodies buffered, chunked
  uploads decoded, ``Location``/``Link`` pointed back at the proxy).

The realm is plain HTTP on loopback. With ``tls=`` the proxy serves HTTPS and the
realm moves to a separate plain-HTTP port (``realm_host``), which is what a
client must refuse unless told otherwise. ``upload_origin=`` rewrites upload
``Location`` headers to another origin (a ``ReverseProxy`` that records whether
credentials reached it). Every request is recorded in ``seen`` (method, path,
auth scheme — never the credentials themselves).

    with RegistryServer() as reg, TokenAuthProxy(reg.url, password="pw", expires_in=2) as proxy:
        ...  # reach proxy.host; credentials "$oauthtoken" / "pw"; realm proxy.realm
"""

from __future__ import annotations

import base64
import binascii
import hmac
import http.client
import json
import re
import secrets
import socketserver
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "expect", "host", "content-length", "authorization"})
MAX_BODY = 256 << 20
REPO_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?:manifests|blobs|tags)/")


@dataclass(frozen=True)
class Seen:
    """One request as the proxy received it (no secrets: only the auth scheme)."""

    method: str
    path: str
    auth_scheme: str | None
    status: int


def required_scope(method: str, path: str) -> str | None:
    """The token scope a registry API request needs; None for the ``/v2/`` ping."""
    bare = urllib.parse.urlsplit(path).path
    if bare in ("/v2", "/v2/"):
        return None
    if bare == "/v2/_catalog":
        return "registry:catalog:*"
    match = REPO_PATH.match(bare)
    name = match.group("name") if match else bare.removeprefix("/v2/").strip("/")
    return f"repository:{name}:{'pull' if method in ('GET', 'HEAD') else 'pull,push'}"


def _grants(scopes: list[str]) -> set[tuple[str, str, str]]:
    out = set()
    for item in scopes:
        for scope in item.split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            out |= {(kind, name, a) for a in actions.split(",") if a}
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ReverseProxy

    def server_bind(self) -> None:
        # HTTPServer.server_bind would do a reverse DNS lookup (getfqdn); not on loopback tests.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up, TLS handshakes refused on purpose: not worth a traceback


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # here, in the connection's thread, not in accept()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _dispatch(self) -> None:
        try:
            self.server.owner._handle(self)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError):
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    # -- helpers used by the proxies -----------------------------------------------------

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            for _ in range(1 << 20):
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    for _ in range(100):  # trailers, up to the blank line
                        if self.rfile.readline(65536) in (b"\r\n", b"\n", b""):
                            break
                    break
                total += size
                if total > MAX_BODY:
                    raise ConnectionResetError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ConnectionResetError("body too large")
        return self.rfile.read(length) if length else b""

    def reply(self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None,
              head_length: str | None = None) -> None:
        self.send_response(status)
        for name, value in headers or []:
            self.send_header(name, value)
        # a HEAD answer keeps the registry's Content-Length (a blob's size), without the body
        self.send_header("Content-Length", head_length if head_length is not None else str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)


class ReverseProxy:
    """A recording reverse proxy on 127.0.0.1 in front of ``upstream`` (an http:// registry URL)."""

    def __init__(self, upstream: str, *, tls: ssl.SSLContext | None = None,
                 upload_origin: str | None = None) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("upstream must be an http:// registry URL")
        self.upstream = f"http://{parts.netloc}"
        self._upstream_addr = (parts.hostname, parts.port or 80)
        self.tls = tls
        self.upload_origin = upload_origin.rstrip("/") if upload_origin else None
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self.port: int | None = None

    # -- addresses & lifecycle -------------------------------------------------------------

    @property
    def host(self) -> str:
        if self.port is None:
            raise RuntimeError("proxy not started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def _listen(self, tls: ssl.SSLContext | None) -> _Server:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name=f"{type(self).__name__}-{server.server_port}", daemon=True)
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)
        return server

    def start(self) -> ReverseProxy:
        if self.port is None:
            self.port = self._listen(self.tls).server_port
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> ReverseProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url if self.port else '-'} -> {self.upstream}>"

    # -- requests ---------------------------------------------------------------------------

    def auth_schemes(self) -> Counter[str | None]:
        with self._lock:
            return Counter(s.auth_scheme for s in self.seen)

    def _record(self, h: _Handler, status: int) -> None:
        auth = h.headers.get("Authorization")
        with self._lock:
            self.seen.append(Seen(h.command, h.path, auth.split(" ", 1)[0] if auth else None, status))

    def _handle(self, h: _Handler) -> None:
        body = h.read_body()
        status = self._forward(h, body)
        self._record(h, status)

    def _rewrite(self, h: _Handler, name: str, value: str, status: int) -> str:
        own = f"{'https' if isinstance(h.connection, ssl.SSLSocket) else 'http'}://{h.headers.get('Host') or self.host}"
        if value.startswith(self.upstream):
            value = own + value[len(self.upstream):]
        is_upload = "/blobs/uploads/" in value and h.command in ("POST", "PATCH") and status == 202
        if name.lower() == "location" and self.upload_origin and is_upload:
            absolute = urllib.parse.urljoin(own + "/", value)
            value = self.upload_origin + absolute[len(own):] if absolute.startswith(own) else absolute
        return value

    def _forward(self, h: _Handler, body: bytes) -> int:
        # a list, not a dict: repeated headers (skopeo sends one Accept per media type) must all pass
        headers = [(k, v) for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP]
        # the registry builds Location URLs from Host and X-Forwarded-Proto: point them at us
        headers += [("Host", h.headers.get("Host") or self.host),
                    ("X-Forwarded-Proto", "https" if isinstance(h.connection, ssl.SSLSocket) else "http")]
        if body or h.command in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(body))))
        conn = http.client.HTTPConnection(*self._upstream_addr, timeout=60)
        try:
            conn.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            out = [(k, self._rewrite(h, k, v, resp.status) if k.lower() in ("location", "link") else v)
                   for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            head_length = resp.getheader("Content-Length") if h.command == "HEAD" else None
            status = resp.status
        except (OSError, http.client.HTTPException) as exc:
            h.reply(502, f"proxy: upstream failed: {type(exc).__name__}".encode())
            return 502
        finally:
            conn.close()
        h.reply(status, data, out, head_length)
        return status


class TokenAuthProxy(ReverseProxy):
    """A registry behind a bearer-token service (see the module docstring).

    ``token_field``: ``"token"``, ``"access_token"`` or ``"both"``.  ``expires_in`` is
    advertised; ``lifetime`` (default: the same) is how long the proxy honours a token.
    ``stall`` seconds are slept once, before forwarding the ``stall_after``-th
    authorised request: tokens issued before then expire mid-run.
    """

    def __init__(self, upstream: str, password: str, *, username: str = "$oauthtoken",
                 service: str = "test-registry", token_field: str = "token", expires_in: int = 300,
                 lifetime: float | None = None, anonymous_pull: bool = False, tls: ssl.SSLContext | None = None,
                 upload_origin: str | None = None, stall: float = 0.0, stall_after: int = 0,
                 refresh_token: str | None = None, clock: Callable[[], float] = time.monotonic,
                 realm_failures: list[tuple[int, str | None]] | None = None) -> None:
        super().__init__(upstream, tls=tls, upload_origin=upload_origin)
        self.clock = clock      # when tokens expire: a test moves it forward instead of sleeping
        if token_field not in ("token", "access_token", "both"):
            raise ValueError("token_field: token, access_token or both")
        self.username, self._password = username, password
        self.service, self.token_field = service, token_field
        self.expires_in = expires_in
        self.lifetime = float(expires_in if lifetime is None else lifetime)
        self.anonymous_pull = anonymous_pull
        self.stall, self.stall_after = stall, stall_after
        self._refresh_token = refresh_token
        # (status, Retry-After) answered by the realm, in order, before it issues any token: a token
        # service that is restarting (503) or rate limiting (429)
        self.realm_failures = list(realm_failures or [])
        self.token_failures = 0  # realm requests answered with one of realm_failures
        self.refresh_grants = 0  # tokens issued for a refresh_token grant (POST /token)
        self.realm_port: int | None = None
        self._tokens: dict[str, tuple[float, set[tuple[str, str, str]]]] = {}
        self.tokens_issued: Counter[str] = Counter()  # scope string -> tokens issued for it
        self.token_refusals = 0
        self.expired_presented = 0
        self._authorised = 0

    @property
    def realm_host(self) -> str:
        if self.realm_port is None:
            raise RuntimeError("proxy not started")
        return f"127.0.0.1:{self.realm_port}"

    @property
    def realm(self) -> str:
        return f"http://{self.realm_host}/token"

    @property
    def token_requests(self) -> int:
        with self._lock:
            return sum(self.tokens_issued.values()) + self.token_refusals + self.token_failures

    def start(self) -> TokenAuthProxy:
        if self.port is None:
            super().start()
            # over TLS the realm needs its own plain-HTTP listener; otherwise it shares the port
            self.realm_port = self._listen(None).server_port if self.tls else self.port
        return self

    def renewals(self) -> int:
        """Tokens issued for a scope that had been given a token before."""
        with self._lock:
            return sum(n - 1 for n in self.tokens_issued.values() if n > 1)

    # -- the token service ------------------------------------------------------------------

    def _check_basic(self, header: str | None) -> bool | None:
        """True: right credentials; False: wrong ones; None: none sent."""
        if not header or not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == self.username and hmac.compare_digest(password.encode(), self._password.encode())

    def _token(self, h: _Handler, form: dict[str, list[str]] | None = None) -> int:
        """GET: Basic credentials; POST (``form``): the OAuth2 refresh-token grant docker uses."""
        with self._lock:
            failure = self.realm_failures.pop(0) if self.realm_failures else None
            if failure:
                self.token_failures += 1
        if failure:
            status, retry_after = failure
            h.reply(status, b'{"errors":[{"code":"UNAVAILABLE","message":"token service unavailable"}]}',
                    [("Content-Type", "application/json")] + ([("Retry-After", retry_after)] if retry_after else []))
            return status
        query = form if form is not None else urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
        if query.get("service", [self.service])[0] != self.service:
            h.reply(400, b'{"errors":[{"code":"UNSUPPORTED","message":"unknown service"}]}')
            return 400
        scopes = query.get("scope", [])
        if form is not None:
            ok: bool | None = (query.get("grant_type") == ["refresh_token"] and self._refresh_token is not None
                               and hmac.compare_digest(query.get("refresh_token", [""])[0].encode(),
                                                       self._refresh_token.encode()))
            if ok:
                with self._lock:
                    self.refresh_grants += 1
        else:
            ok = self._check_basic(h.headers.get("Authorization"))
        granted = _grants(scopes)
        if ok is None and self.anonymous_pull:
            granted = {g for g in granted if g[2] == "pull"}
        elif not ok:
            with self._lock:
                self.token_refusals += 1
            h.reply(401, b'{"details":"incorrect username or password"}',
                    [("Content-Type", "application/json"), ("WWW-Authenticate", 'Basic realm="token"')])
            return 401
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = (self.clock() + self.lifetime, granted)
            self.tokens_issued[" ".join(scopes)] += 1
        doc: dict[str, Any] = {"expires_in": self.expires_in,
                               "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.token_field in ("token", "both"):
            doc["token"] = token
        if self.token_field in ("access_token", "both"):
            doc["access_token"] = token
        h.reply(200, json.dumps(doc).encode(), [("Content-Type", "application/json")])
        return 200

    # -- the registry front -----------------------------------------------------------------

    def _valid(self, header: str | None, scope: str | None) -> bool | None:
        """True: token good for scope; None: expired; False: missing, unknown or too narrow."""
        if not header or not header.startswith("Bearer "):
            return False
        with self._lock:
            entry = self._tokens.get(header[7:].strip())
        if entry is None:
            return False
        if entry[0] < self.clock():
            return None
        return scope is None or _grants([scope]) <= entry[1]

    def _handle(self, h: _Handler) -> None:
        body = h.read_body()
        port = h.connection.getsockname()[1]
        if urllib.parse.urlsplit(h.path).path == "/token" and h.command == "GET":
            status = self._token(h)
        elif urllib.parse.urlsplit(h.path).path == "/token" and h.command == "POST":
            status = self._token(h, urllib.parse.parse_qs(body.decode("utf-8", "replace")))
        elif port == self.realm_port and port != self.port:
            h.reply(404)
            status = 404
        else:
            status = self._front(h, body)
        self._record(h, status)

    def _front(self, h: _Handler, body: bytes) -> int:
        scope = required_scope(h.command, h.path)
        valid = self._valid(h.headers.get("Authorization"), scope)
        if not valid:
            challenge = f'Bearer realm="{self.realm}",service="{self.service}"'
            if scope:
                challenge += f',scope="{scope}"'
            if valid is None:
                with self._lock:
                    self.expired_presented += 1
                challenge += ',error="invalid_token"'
            h.reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                    [("Content-Type", "application/json"), ("WWW-Authenticate", challenge),
                     ("Docker-Distribution-Api-Version", "registry/2.0")])
            return 401
        with self._lock:
            self._authorised += 1
            stall = self.stall if self.stall and self._authorised == self.stall_after else 0.0
        if stall:
            time.sleep(stall)
        return self._forward(h, body)

