"""RegistryClient, its parsers and CredentialStore against scripted HTTP (httpx.MockTransport).

A real registry cannot be told to answer 503 twice, lie about a digest or hand out a
token that expires in a second; a MockTransport can, and a recording ``sleep`` makes
every retry instantaneous while still showing how long the client would have waited.
"""

from __future__ import annotations

import base64
import email.utils
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mirrorkit.errors import AuthError, NotFoundError, RegistryError
from mirrorkit.oci.client import (
    DOCKER_LIST,
    MAX_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryClient,
    sha256_digest,
)
from mirrorkit.oci.credentials import Credentials, CredentialStore, auth_file_candidates
from mirrorkit.oci.protocol import RETRY_AFTER_CAP, parse_challenge, parse_retry_after
from mirrorkit.oci.retry import RetryPolicy
from mirrorkit.oci.transport import Endpoints
from mirrorkit.refs import Ref

PASSWORD = "s3cret-Pa55"
REF = Ref.parse("reg.example/a/b:v1")
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []}).encode()
DIGEST = sha256_digest(MANIFEST)
CHALLENGE = 'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"'

Handler = Callable[[httpx.Request], httpx.Response]


def ok_manifest(**headers: str) -> httpx.Response:
    return httpx.Response(200, content=MANIFEST, headers={"Content-Type": OCI_MANIFEST, **headers})


def make_client(handler: Handler, *, creds: dict[str, Credentials] | None = None,
                endpoints: Endpoints | None = None, store: CredentialStore | None = None,
                ) -> tuple[RegistryClient, list[float]]:
    sleeps: list[float] = []
    client = RegistryClient(
        endpoints or Endpoints(),
        store or CredentialStore(explicit=creds or {}, files=[]),
        transport=httpx.MockTransport(handler),
        # injected: no jitter, a clock that advances only by the sleeps taken
        retry=RetryPolicy(jitter=0.0, sleep=sleeps.append, clock=lambda: sum(sleeps)),
    )
    return client, sleeps


def sequence(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering the scripted responses in order (the last one repeats)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses[min(len(seen), len(responses)) - 1]
        if isinstance(item, Exception):
            raise httpx.ConnectError(str(item), request=request)
        return item

    return handler, seen


# -- bearer tokens ------------------------------------------------------------------


class TokenRegistry:
    """A registry behind a token service; accepts any token it ever issued (never expires them)."""

    def __init__(self, *, key: str = "token", expires_in: int | None = 300,
                 challenge: str = CHALLENGE, token_status: int = 200) -> None:
        self.key, self.expires_in, self.challenge = key, expires_in, challenge
        self.token_status = token_status
        self.issued: list[str] = []
        self.token_requests: list[httpx.Request] = []
        self.registry_requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            self.token_requests.append(request)
            if self.token_status != 200:
                return httpx.Response(self.token_status)
            token = f"tok-{len(self.issued)}"
            self.issued.append(token)
            body: dict[str, object] = {self.key: token}
            if self.expires_in is not None:
                body["expires_in"] = self.expires_in
            return httpx.Response(200, json=body)
        self.registry_requests.append(request)
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth.removeprefix("Bearer ") in self.issued:
            return ok_manifest()
        return httpx.Response(401, headers={"WWW-Authenticate": self.challenge})


@pytest.mark.parametrize("key", ["token", "access_token"])
def test_bearer_flow_anonymous(key: str) -> None:
    reg = TokenRegistry(key=key)
    client, _ = make_client(reg)
    with client:
        manifest = client.get_manifest(REF)
        assert manifest.digest == DIGEST and manifest.media_type == OCI_MANIFEST
        # The token is cached: a second call goes straight through with it.
        client.get_manifest(REF)

    assert len(reg.token_requests) == 1
    token_req = reg.token_requests[0]
    assert token_req.url.scheme == "https" and token_req.url.path == "/token"
    assert token_req.url.params["service"] == "reg"
    assert token_req.url.params["scope"] == "repository:a/b:pull"
    assert "Authorization" not in token_req.headers  # no credentials, no basic auth
    first, retried, again = reg.registry_requests
    assert "Authorization" not in first.headers
    assert retried.headers["Authorization"] == "Bearer tok-0"
    assert again.headers["Authorization"] == "Bearer tok-0"
    assert retried.url.path == "/v2/a/b/manifests/v1"


def test_bearer_flow_sends_credentials_to_token_service() -> None:
    reg = TokenRegistry()
    client, _ = make_client(reg, creds={"reg.example": Credentials("alice", PASSWORD)})
    with client:
        client.get_manifest(REF)
    (token_req,) = reg.token_requests
    expected = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert token_req.headers["Authorization"] == expected
    # The registry itself only ever sees the token, never the password.
    assert all(not r.headers.get("Authorization", "").startswith("Basic") for r in reg.registry_requests)


def test_bearer_token_expiry_fetches_a_new_one() -> None:
    clock = [1000.0]
    reg = TokenRegistry(expires_in=1)
    client, _ = make_client(reg)
    client.auth.clock = lambda: clock[0]                # injected, not a patched time module
    with client:
        client.get_manifest(REF)
        client.get_manifest(REF)  # same instant: still valid
        assert len(reg.token_requests) == 1
        clock[0] += 2  # past expires_in
        client.get_manifest(REF)
    assert len(reg.token_requests) == 2
    assert reg.registry_requests[-1].headers["Authorization"] == "Bearer tok-1"
    # The stale token was not sent once it had expired (the mock would have accepted it).
    assert all(r.headers.get("Authorization") != "Bearer tok-0" for r in reg.registry_requests[3:])


def test_token_service_refusal_is_auth_error() -> None:
    reg = TokenRegistry(token_status=401)
    client, _ = make_client(reg, creds={"reg.example": Credentials("alice", PASSWORD)})
    with client, pytest.raises(AuthError) as info:
        client.get_manifest(REF)
    assert "alice" in str(info.value) and PASSWORD not in str(info.value)


def test_registry_that_keeps_refusing_tokens_is_auth_error() -> None:
    handler, seen = sequence(httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE}))

    def with_token_service(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return httpx.Response(200, json={"token": "useless"})
        return handler(request)

    client, _ = make_client(with_token_service)
    with client, pytest.raises(AuthError):
        client.get_manifest(REF)
    assert 1 < len(seen) <= 3  # bounded, no endless 401 loop


@pytest.mark.parametrize("realm", ["http://auth.example/token", "HTTP://auth.example/token"])
def test_plain_http_realm_refused_unless_insecure(realm: str) -> None:
    reg = TokenRegistry(challenge=f'Bearer realm="{realm}",service="reg"')
    client, _ = make_client(reg, creds={"reg.example": Credentials("alice", PASSWORD)})
    with client, pytest.raises(AuthError, match="plain HTTP"):
        client.get_manifest(REF)
    assert reg.token_requests == []  # the password never went over plain HTTP

    for insecure in ("reg.example", "auth.example"):
        reg = TokenRegistry(challenge=f'Bearer realm="{realm}",service="reg"')
        client, _ = make_client(reg, endpoints=Endpoints.from_options(insecure=[insecure]))
        with client:
            assert client.get_manifest(REF).digest == DIGEST
        assert len(reg.token_requests) == 1 and reg.token_requests[0].url.scheme == "http"


def test_invalid_realm_is_auth_error() -> None:
    reg = TokenRegistry(challenge='Bearer realm="https://[::1/token"')
    client, _ = make_client(reg)
    with client, pytest.raises(AuthError, match="realm"):
        client.get_manifest(REF)


def test_unsupported_challenge() -> None:
    handler, _ = sequence(httpx.Response(401, headers={"WWW-Authenticate": 'Negotiate abc'}))
    client, _ = make_client(handler)
    with client, pytest.raises(AuthError, match="negotiate"):
        client.get_manifest(REF)


# -- basic auth ---------------------------------------------------------------------


def basic_registry(user: str, password: str, barrier: threading.Barrier | None = None,
                   ) -> tuple[Handler, list[httpx.Request]]:
    good = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("Authorization") == good:
            return ok_manifest()
        if barrier is not None and "Authorization" not in request.headers:
            barrier.wait()
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})

    return handler, seen


def test_basic_auth_retried_with_credentials() -> None:
    handler, seen = basic_registry("alice", PASSWORD)
    client, _ = make_client(handler, creds={"reg.example": Credentials("alice", PASSWORD)})
    with client:
        client.get_manifest(REF)
        client.get_manifest(REF)  # now sent up front
    assert [("Authorization" in r.headers) for r in seen] == [False, True, True]


def test_basic_auth_wrong_password_hides_it() -> None:
    handler, seen = basic_registry("alice", PASSWORD)
    wrong = "wr0ng-Pa55-xyz"
    client, _ = make_client(handler, creds={"reg.example": Credentials("alice", wrong)})
    with client, pytest.raises(AuthError) as info:
        client.get_manifest(REF)
    assert "refused" in str(info.value) and "alice" in str(info.value)
    assert wrong not in str(info.value) and wrong not in repr(info.value)
    assert len(seen) == 2


def test_basic_auth_without_credentials() -> None:
    handler, _ = basic_registry("alice", PASSWORD)
    client, _ = make_client(handler)
    with client, pytest.raises(AuthError, match="requires credentials"):
        client.get_manifest(REF)


def test_basic_auth_parallel_first_requests_all_succeed() -> None:
    # Four threads send their first request before any has seen the 401: each must
    # retry with credentials, not mistake another thread's switch to basic auth for a refusal.
    handler, _ = basic_registry("alice", PASSWORD, barrier=threading.Barrier(4, timeout=10))
    client, _ = make_client(handler, creds={"reg.example": Credentials("alice", PASSWORD)})
    refs = [Ref.parse(f"reg.example/a/b{i}:v1") for i in range(4)]
    with client, ThreadPoolExecutor(4) as pool:
        digests = list(pool.map(client.get_manifest, refs))
    assert {m.digest for m in digests} == {DIGEST}


# -- retries ------------------------------------------------------------------------


def test_503_twice_then_ok_backs_off() -> None:
    handler, seen = sequence(httpx.Response(503), httpx.Response(503), ok_manifest())
    client, sleeps = make_client(handler)
    with client:
        assert client.get_manifest(REF).digest == DIGEST
    assert len(seen) == 3
    assert sleeps == [0.25, 0.5]


@pytest.mark.parametrize(("header", "expected"), [("3", 3.0), ("3600", RETRY_AFTER_CAP), ("soon", 0.25),
                                                  (b"\xb2", 0.25), ("0", 0.25)])  # "0": the schedule, no tight loop
def test_429_retry_after(header: str | bytes, expected: float) -> None:
    # b"\xb2" reaches the client as "\u00b2": str.isdigit() says yes, float() says no.
    handler, seen = sequence(httpx.Response(429, headers=[(b"Retry-After", header)]), ok_manifest())
    client, sleeps = make_client(handler)
    with client:
        client.get_manifest(REF)
    assert len(seen) == 2
    assert sleeps == [expected]


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 10, usegmt=True)
    handler, _ = sequence(httpx.Response(503, headers={"Retry-After": when}), ok_manifest())
    client, sleeps = make_client(handler)
    with client:
        client.get_manifest(REF)
    assert len(sleeps) == 1 and 8.0 <= sleeps[0] <= 10.0


def test_persistent_503_gives_up_once_the_outage_budget_is_spent() -> None:
    """A registry answering 503 is away (restarting, failing over): retried for the whole budget, not 6 times."""
    handler, seen = sequence(httpx.Response(503))
    client, sleeps = make_client(handler)
    with client, pytest.raises(RegistryError, match="gave up") as info:
        client.get_manifest(REF)
    assert "503" in str(info.value) and "60 s --retry-for budget" in str(info.value)
    assert info.value.status == 503
    assert sleeps[:5] == [0.25, 0.5, 1.0, 2.0, 2.0]  # exponential, capped at backoff_max
    assert 55 <= sum(sleeps) <= 60 and len(seen) == len(sleeps) + 1


def test_persistent_429_gives_up_after_the_attempts() -> None:
    """A registry that answers "too many requests" is there: bounded by attempts, not by the outage budget."""
    handler, seen = sequence(httpx.Response(429))
    client, sleeps = make_client(handler)
    with client, pytest.raises(RegistryError, match="gave up after 6 attempts") as info:
        client.get_manifest(REF)
    assert info.value.status == 429 and len(seen) == client.retry.attempts == 6


def test_connection_errors_are_retried() -> None:
    handler, seen = sequence(OSError("refused"), OSError("refused"), ok_manifest())
    client, sleeps = make_client(handler)
    with client:
        assert client.get_manifest(REF).digest == DIGEST
    assert len(seen) == 3 and len(sleeps) == 2


def test_persistent_connection_error_is_registry_error() -> None:
    handler, seen = sequence(OSError("refused"))
    client, _ = make_client(handler)
    with client, pytest.raises(RegistryError, match="gave up") as info:
        client.get_manifest(REF)
    assert "ConnectError" in str(info.value)
    assert not isinstance(info.value, httpx.HTTPError)
    assert len(seen) > 6                        # outages are bounded by the budget, not by attempts


@pytest.mark.parametrize(("status", "error"), [(400, RegistryError), (403, AuthError), (404, NotFoundError)])
def test_client_errors_are_not_retried(status: int, error: type[Exception]) -> None:
    handler, seen = sequence(httpx.Response(status))
    client, sleeps = make_client(handler)
    with client, pytest.raises(error):
        client.get_manifest(REF)
    assert len(seen) == 1 and sleeps == []


# -- manifests ----------------------------------------------------------------------


def test_manifest_request_shape() -> None:
    handler, seen = sequence(ok_manifest(**{"Docker-Content-Digest": DIGEST}))
    client, _ = make_client(handler)
    with client:
        manifest = client.get_manifest(REF)
    assert manifest.data == MANIFEST and not manifest.is_index
    (req,) = seen
    assert str(req.url) == "https://reg.example/v2/a/b/manifests/v1"
    accept = req.headers["Accept"]
    for media_type in (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"):
        assert media_type in accept


def test_digest_mismatch_by_digest() -> None:
    other = "sha256:" + "0" * 64
    handler, _ = sequence(ok_manifest())
    client, _ = make_client(handler)
    with client:
        assert client.get_manifest(REF.with_digest(DIGEST)).digest == DIGEST
        with pytest.raises(RegistryError, match="digest"):
            client.get_manifest(REF.with_digest(other))


def test_docker_content_digest_mismatch() -> None:
    handler, _ = sequence(ok_manifest(**{"Docker-Content-Digest": "sha256:" + "1" * 64}))
    client, _ = make_client(handler)
    with client, pytest.raises(RegistryError, match="Docker-Content-Digest"):
        client.get_manifest(REF)


def chunks(counter: list[int], size: int = 1 << 20, count: int = 64) -> Iterator[bytes]:
    for _ in range(count):
        counter[0] += 1
        yield b"x" * size


def test_oversized_manifest_by_content_length() -> None:
    produced = [0]
    handler, _ = sequence(httpx.Response(200, headers={"Content-Length": str(MAX_MANIFEST + 1)},
                                         content=chunks(produced)))
    client, _ = make_client(handler)
    with client, pytest.raises(RegistryError, match="limit"):
        client.get_manifest(REF)
    assert produced[0] == 0  # refused before reading the body


def test_oversized_manifest_streamed() -> None:
    produced = [0]
    handler, _ = sequence(httpx.Response(200, content=chunks(produced)))  # chunked, no length
    client, _ = make_client(handler)
    with client, pytest.raises(RegistryError, match="limit"):
        client.get_manifest(REF)
    assert produced[0] <= 6  # stopped just past 4 MiB, not after all 64 MiB


def test_manifest_of_exactly_the_limit_is_accepted() -> None:
    body = b" " * (MAX_MANIFEST - len(MANIFEST)) + MANIFEST
    handler, _ = sequence(httpx.Response(200, content=body, headers={"Content-Type": OCI_MANIFEST}))
    client, _ = make_client(handler)
    with client:
        assert len(client.get_manifest(REF).data) == MAX_MANIFEST


def test_not_found() -> None:
    handler, _ = sequence(httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]}))
    client, _ = make_client(handler)
    with client:
        with pytest.raises(NotFoundError, match="not found"):
            client.get_manifest(REF)
        assert client.manifest_digest(REF) is None


@pytest.mark.parametrize(("content_type", "expected"), [
    (f"{DOCKER_LIST}; charset=utf-8", DOCKER_LIST),
    (f"{OCI_INDEX} ; charset=utf-8", OCI_INDEX),
    ("Application/VND.Docker.Distribution.Manifest.List.V2+JSON", DOCKER_LIST),
    ("application/json", OCI_INDEX),  # unknown header: the body decides
])
def test_content_type_with_parameters(content_type: str, expected: str) -> None:
    # No mediaType in the body, so only the header can say "Docker manifest list".
    body = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    handler, _ = sequence(httpx.Response(200, content=body, headers={"Content-Type": content_type}))
    client, _ = make_client(handler)
    with client:
        manifest = client.get_manifest(REF)
    assert manifest.media_type == expected and manifest.is_index


def test_blob_exists() -> None:
    handler, seen = sequence(httpx.Response(200), httpx.Response(404))
    client, _ = make_client(handler)
    with client:
        assert client.blob_exists(REF, DIGEST) is True
        assert client.blob_exists(REF, DIGEST) is False
    assert seen[0].method == "HEAD" and seen[0].url.path == f"/v2/a/b/blobs/{DIGEST}"


# -- parsers ------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), ("  ", None), ("5", 5.0), (" 7 ", 7.0), ("0", 0.0), ("31", RETRY_AFTER_CAP),
    ("soon", None), ("-5", None), ("1.5", None), ("\u00b2", None), ("Wed, 99 Foo 2015", None),
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


@pytest.fixture
def non_utc_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("non_utc_local_time")
@pytest.mark.parametrize("value", [
    "Wed, 21 Oct 2015 07:28:10 GMT",         # IMF-fixdate
    "Wednesday, 21-Oct-15 07:28:10 GMT",     # RFC 850
    "Wed Oct 21 07:28:10 2015",              # asctime: no zone, GMT by definition
])
def test_parse_retry_after_http_dates(value: str) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC
    assert parse_retry_after(value, now=now) == 10.0
    assert parse_retry_after(value, now=now + 60) == 0.0  # in the past: no wait
    assert parse_retry_after(value, now=now - 3600) == RETRY_AFTER_CAP


@pytest.mark.parametrize(("header", "scheme", "params"), [
    (CHALLENGE, "bearer",
     {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a/b:pull"}),
    ('Bearer realm="https://a/t", service="s"', "bearer", {"realm": "https://a/t", "service": "s"}),
    ('BEARER Realm="https://a/t",Service="s"', "bearer", {"realm": "https://a/t", "service": "s"}),
    ('Bearer realm="https://a/t",scope="repository:x:pull,push repository:y:pull"', "bearer",
     {"realm": "https://a/t", "scope": "repository:x:pull,push repository:y:pull"}),
    ("Basic realm=reg", "basic", {"realm": "reg"}),
    ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
    ("Bearer realm=https://a/t,service=s", "bearer", {"realm": "https://a/t", "service": "s"}),
    ('Bearer realm="https://a/t', "bearer", {"realm": "https://a/t"}),
    ("Basic", "basic", {}),
    ("", "", {}),
    ('Bearer error="invalid_token",realm="https://a/t"', "bearer",
     {"error": "invalid_token", "realm": "https://a/t"}),
])
def test_parse_challenge(header: str, scheme: str, params: dict[str, str]) -> None:
    assert parse_challenge(header) == (scheme, params)


# -- credentials --------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_auths(path: Path, auths: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake HOME and no auth env vars, so the real ~/.docker is never read."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return home


def test_candidates_stay_under_fake_home(home: Path) -> None:
    # without XDG_RUNTIME_DIR the runtime file is root podman's /run/containers/$UID/auth.json
    assert auth_file_candidates() == [Path(f"/run/containers/{os.getuid()}/auth.json"),
                                      home / ".config/containers/auth.json", home / ".docker/config.json",
                                      home / ".dockercfg"]
    assert CredentialStore().get("nvcr.io") is None


def test_registry_auth_file_base64(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_auths(tmp_path / "auth.json", {"nvcr.io": {"auth": b64("alice:pa:ss")}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(path))
    assert CredentialStore().get("nvcr.io") == Credentials("alice", "pa:ss")
    assert CredentialStore().get("quay.io") is None


def test_nvcr_oauthtoken_user(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "nvapi-abcdef0123456789"
    path = write_auths(tmp_path / "auth.json", {"nvcr.io": {"auth": b64(f"$oauthtoken:{key}")}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(path))
    store = CredentialStore()
    assert store.get("nvcr.io") == Credentials("$oauthtoken", key)

    # ... and it is what the token service receives.
    reg = TokenRegistry()
    client, _ = make_client(reg, store=store)
    with client:
        client.get_manifest(Ref.parse("nvcr.io/nvidia/gpu-operator:v23.9.2"))
    assert reg.token_requests[0].headers["Authorization"] == "Basic " + b64(f"$oauthtoken:{key}")
    assert reg.token_requests[0].url.params["scope"] == "repository:nvidia/gpu-operator:pull"


def test_docker_config_username_password(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docker_dir = tmp_path / "dockercfg"
    write_auths(docker_dir / "config.json", {"https://harbor.example": {"username": "bob", "password": "pw1"}})
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_dir))
    assert CredentialStore().get("harbor.example") == Credentials("bob", "pw1")


def test_docker_hub_keys(home: Path) -> None:
    write_auths(home / ".docker/config.json", {"https://index.docker.io/v1/": {"auth": b64("carol:pw2")}})
    store = CredentialStore()
    assert store.get("docker.io") == Credentials("carol", "pw2")
    assert store.get("index.docker.io") == Credentials("carol", "pw2")
    assert store.get("quay.io") is None


def test_search_order_and_explicit(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "run"
    write_auths(home / ".docker/config.json", {"nvcr.io": {"auth": b64("docker:1")}})
    write_auths(home / ".config/containers/auth.json", {"nvcr.io": {"auth": b64("podman:2")}})
    assert CredentialStore().get("nvcr.io") == Credentials("podman", "2")
    write_auths(runtime / "containers/auth.json", {"nvcr.io": {"auth": b64("runtime:3")}})
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert CredentialStore().get("nvcr.io") == Credentials("runtime", "3")
    # A corrupt REGISTRY_AUTH_FILE is skipped, not fatal.
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(bad))
    assert CredentialStore().get("nvcr.io") == Credentials("runtime", "3")
    explicit = CredentialStore(explicit={"nvcr.io": Credentials("flag", "4")})
    assert explicit.get("nvcr.io") == Credentials("flag", "4")
    assert explicit.secrets() == ["4"]


@pytest.mark.parametrize("entry", [{"auth": "!!!not-base64"}, {"auth": b64("no-colon")}, {"auth": b64(":pw")},
                                   {"username": "x"}, "string"])
def test_unusable_entries_are_ignored(home: Path, entry: object) -> None:
    write_auths(home / ".docker/config.json", {"nvcr.io": entry})
    assert CredentialStore().get("nvcr.io") is None


def test_credentials_repr_hides_password() -> None:
    creds = Credentials("alice", PASSWORD)
    for text in (repr(creds), str(creds), f"{creds}", repr([creds]), repr({"nvcr.io": creds})):
        assert PASSWORD not in text
        assert "alice" in text


def test_tag_listing_follows_links_and_is_bounded() -> None:
    def endless(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("last", "0"))
        return httpx.Response(200, json={"name": "a/b", "tags": [f"t{page}"]},
                              headers={"Link": f'</v2/a/b/tags/list?n=1&last={page + 1}>; rel="next"'})

    client, _ = make_client(endless)
    with pytest.raises(RegistryError, match="more than 1000 pages"):
        client.list_tags("reg.example", "a/b")

    def three(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("last", "0"))
        link = {"Link": f'</v2/a/b/tags/list?n=1&last={page + 1}>; rel="next"'} if page < 2 else {}
        return httpx.Response(200, json={"tags": [f"t{page}"]}, headers=link)

    assert make_client(three)[0].list_tags("reg.example", "a/b") == ["t0", "t1", "t2"]


# -- redirects: followed hop by hop ------------------------------------------------------


def _blob_redirect(location: str) -> tuple[Handler, list[httpx.Request]]:
    return sequence(httpx.Response(307, headers={"Location": location}), httpx.Response(200, content=b"blob"))


def test_a_blob_redirect_to_a_cdn_is_followed_without_the_registry_credentials() -> None:
    handler, seen = _blob_redirect("https://cdn.example/b/x?sig=1")
    client, _ = make_client(handler, creds={"reg.example": Credentials("alice", "pw")})
    client.auth.basic.add("reg.example")                # the registry asked for basic auth earlier
    with client:
        resp = client.request("reg.example", "GET", "/v2/a/b/blobs/sha256:" + "0" * 64)
    assert resp.content == b"blob"
    assert [str(r.url.host) for r in seen] == ["reg.example", "cdn.example"]
    assert "authorization" in seen[0].headers and "authorization" not in seen[1].headers


def test_a_redirect_from_https_to_plain_http_is_refused_unless_named_insecure() -> None:
    handler, _ = _blob_redirect("http://cdn.example/b/x")
    client, _ = make_client(handler)
    with client, pytest.raises(RegistryError, match="refusing a redirect .*--insecure cdn.example"):
        client.request("reg.example", "GET", "/v2/a/b/blobs/sha256:" + "0" * 64)
    handler, seen = _blob_redirect("http://cdn.example/b/x")
    client, _ = make_client(handler, endpoints=Endpoints.from_options(insecure=["cdn.example"]))
    with client:
        assert client.request("reg.example", "GET", "/v2/a/b/blobs/sha256:" + "0" * 64).content == b"blob"


def test_another_host_gets_its_own_tls_settings() -> None:
    endpoints = Endpoints.from_options(insecure=["reg.example"])
    with RegistryClient(endpoints, CredentialStore(explicit={}, files=[])) as client:
        own = client.client_for("reg.example", httpx.URL("https://reg.example/v2/"))
        other = client.client_for("reg.example", httpx.URL("https://auth.example/token"))
        assert own is not other
        assert own is client.client_for("reg.example", httpx.URL("https://reg.example/token"))
        # the registry named insecure is reached unverified; its token realm elsewhere is verified
        assert own._transport._pool._ssl_context.verify_mode.name == "CERT_NONE"
        assert other._transport._pool._ssl_context.verify_mode.name == "CERT_REQUIRED"
