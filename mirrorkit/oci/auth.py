"""Registry authentication: the ``WWW-Authenticate`` dance, its tokens, and basic auth.

Anonymous, basic and bearer tokens (distribution's token spec, as nvcr.io and
Docker Hub use it), with docker's stored ``identitytoken`` exchanged as an OAuth2
refresh token. A token realm on another host is reached with that host's own TLS
settings (``http_for``), never the registry's.

A token service is a server like any other: its 429 (``Retry-After`` honoured), 5xx
and connection failures raise :class:`~mirrorkit.oci.retry.TransientError`, so the
request (or blob transfer) that needed the token is retried under the one policy,
never in a loop of its own. Tokens are fetched single-flight: of the threads that
get a 401 for one (registry, scope) at once, one asks the token service and the
others wait for its token.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable

import httpx

from mirrorkit.errors import AuthError, RegistryError
from mirrorkit.oci.credentials import Credentials, CredentialStore
from mirrorkit.oci.protocol import (
    MAX_ERROR_BODY,
    error_detail,
    first_error_code,
    parse_challenge,
    parse_retry_after,
    scope_repository,
)
from mirrorkit.oci.retry import TransientError, is_outage
from mirrorkit.oci.transport import Endpoints


class Auth:
    """Tokens per (registry, scope), and the registries that asked for basic auth; thread-safe."""

    def __init__(self, endpoints: Endpoints, credentials: CredentialStore,
                 http_for: Callable[[str, httpx.URL], httpx.Client],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoints = endpoints
        self.clock = clock              # injectable: tests move time past a token's expiry
        self.credentials = credentials
        self.http_for = http_for
        self.tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self.basic: set[str] = set()
        self.lock = threading.Lock()
        self._fetching: dict[tuple[str, str], threading.Lock] = {}   # one token fetch per (registry, scope)
        self.fetches = 0                # token requests sent (tests count them)

    def creds(self, registry: str, scope: str = "") -> Credentials | None:
        return self.credentials.get(registry, scope_repository(scope))

    def header(self, registry: str, scope: str) -> dict[str, str]:
        token = self.tokens.get((registry, scope))
        if token and token[1] > self.clock():
            return {"Authorization": f"Bearer {token[0]}"}
        if registry in self.basic:
            creds = self.creds(registry, scope)
            if creds and not creds.identity_token:
                pair = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
                return {"Authorization": f"Basic {pair}"}
        return {}

    def authenticated(self, registry: str) -> bool:
        """Whether the registry asked for credentials and took them (a token, or basic auth)."""
        with self.lock:
            return registry in self.basic or any(r == registry for r, _ in self.tokens)

    def renew(self, registry: str, scope: str, challenge: str, sent: str) -> None:
        """Answer a 401 to a request that carried ``sent`` (its Authorization header, or "").

        Single-flight: the first thread fetches a token while the others for the same
        (registry, scope) wait; a waiter then finds a token other than the one it sent
        and uses it, asking the token service nothing.
        """
        key = (registry, scope)
        with self.lock:
            gate = self._fetching.setdefault(key, threading.Lock())
        with gate:
            with self.lock:
                token = self.tokens.get(key)
                if token and token[1] > self.clock() and f"Bearer {token[0]}" != sent:
                    return                  # renewed by another thread while this one waited
                self.tokens.pop(key, None)  # the one sent (or an expired one): not taken any more
            self.authenticate(registry, scope, challenge, sent_basic=sent.startswith("Basic "))

    def missing(self, registry: str, scope: str) -> str:
        """What the credential lookup saw, for the one line that says none were found."""
        return self.credentials.explain(registry, scope_repository(scope))

    def authenticate(self, registry: str, scope: str, challenge: str, sent_basic: bool = False) -> None:
        scheme, params = parse_challenge(challenge)
        creds = self.creds(registry, scope)
        if scheme == "basic":
            if not creds:
                raise AuthError(f"{registry}: requires credentials (log in with mirrorkit/podman/docker login, "
                                f"or give --username and --password-stdin); {self.missing(registry, scope)}")
            if creds.identity_token:
                raise AuthError(f"{registry}: the stored login is an identity token, which only a token "
                                "service accepts; this registry asks for a password")
            # Refused only if *this* request carried them: parallel requests that went out
            # before another thread switched the registry to basic auth must simply retry.
            if sent_basic:
                raise AuthError(f"{registry}: credentials for user {creds.username!r} were refused")
            with self.lock:
                self.basic.add(registry)
            return
        if scheme != "bearer" or not params.get("realm"):
            raise AuthError(f"{registry}: unsupported authentication challenge {scheme!r}")
        realm = params["realm"]
        try:
            realm_url = httpx.URL(realm)
        except httpx.InvalidURL:
            raise AuthError(f"{registry}: invalid token realm {realm!r}") from None
        realm_host = realm_url.host
        # --insecure names HOST[:PORT]; a realm on a port (http://127.0.0.1:5001/token) must be
        # matched with its port too, or no --insecure value could ever allow it.
        realm_netloc = f"{realm_host}:{realm_url.port}" if realm_url.port else realm_host
        if realm_url.scheme == "http" and not (self.endpoints.is_insecure(registry)
                                               or realm_host in self.endpoints.insecure
                                               or realm_netloc in self.endpoints.insecure):
            raise AuthError(f"{registry}: refusing token realm {realm} over plain HTTP "
                            f"(name it with --insecure {realm_netloc} if this is intended)")
        query = {"service": params.get("service", "")} if params.get("service") else {}
        wanted = scope or params.get("scope", "")
        if wanted:
            query["scope"] = wanted
        with self.lock:
            self.fetches += 1
        try:
            if creds and creds.identity_token:
                # docker's stored identitytoken is an OAuth2 refresh token (distribution's token spec)
                form = {**query, "grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "client_id": "mirrorkit"}
                resp = self.http_for(registry, realm_url).post(realm, data=form)
            else:
                auth = httpx.BasicAuth(creds.username, creds.password) if creds else None
                resp = self.http_for(registry, realm_url).get(realm, params=query, auth=auth)
        except httpx.TransportError as exc:
            # a reset or a refused connection is worth another try, as for the registry itself
            raise TransientError(f"{registry}: token service {realm_host} unreachable: {type(exc).__name__}",
                                 outage=is_outage(exc)) from None
        except httpx.HTTPError as exc:
            raise RegistryError(f"{registry}: token service {realm_host} unreachable: "
                                f"{type(exc).__name__}") from None
        if resp.status_code in (401, 403):
            if creds is None:
                raise AuthError(f"{registry}: token service refused anonymous access for {wanted or 'access'}: "
                                f"requires credentials (log in with mirrorkit/podman/docker login, or give "
                                f"--username and --password-stdin); {self.missing(registry, scope)}")
            who = "the identity token" if creds.identity_token else f"user {creds.username!r}"
            raise AuthError(f"{registry}: token service refused {who} for {wanted or 'access'}")
        if resp.status_code == 429 or resp.status_code >= 500:
            raise TransientError(f"{registry}: token service answered HTTP {resp.status_code}"
                                 f"{error_detail(resp.content[:MAX_ERROR_BODY])}",
                                 parse_retry_after(resp.headers.get("Retry-After")),
                                 status=resp.status_code, outage=resp.status_code in (502, 503, 504))
        if resp.status_code != 200:
            body = resp.content[:MAX_ERROR_BODY]
            raise RegistryError(f"{registry}: token service answered HTTP {resp.status_code}{error_detail(body)}",
                                code=first_error_code(body), status=resp.status_code)
        try:
            body = resp.json()
        except ValueError:
            raise RegistryError(f"{registry}: token service answered with invalid JSON") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{registry}: token service answered without a token")
        try:
            expires = float(body.get("expires_in") or 60)
        except (TypeError, ValueError):
            expires = 60.0
        with self.lock:
            self.tokens[(registry, scope)] = (token, self.clock() + max(expires - 5, 1))
