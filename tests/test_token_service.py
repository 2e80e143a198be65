"""A token service that fails for a moment (503, 429), and many threads meeting one 401 at once.

A real ``docker-registry`` behind the kit's bearer-token front (kit.tokenauth); the
front counts every request its realm answers, so the tests count token fetches there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from kit.images import make_image, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer
from kit.tokenauth import TokenAuthProxy

from mirrorkit.errors import RegistryError
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.credentials import Credentials, CredentialStore
from mirrorkit.oci.retry import RetryPolicy
from mirrorkit.oci.transport import Endpoints
from mirrorkit.refs import Ref

USER, PASSWORD = "$oauthtoken", "token-pw"
IMAGE = make_image("tokens/app", [make_layer("tokens/base", 8 << 10), make_layer("tokens/app", 4 << 10)])


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as reg:
        push_image(reg.url, "team/app", "v1", IMAGE)
        yield reg


@pytest.fixture
def front(registry: RegistryServer) -> Iterator[type[TokenAuthProxy]]:
    proxies: list[TokenAuthProxy] = []

    def start(**kwargs: object) -> TokenAuthProxy:
        proxy = TokenAuthProxy(registry.url, PASSWORD, **kwargs)  # type: ignore[arg-type]
        proxies.append(proxy)
        return proxy.start()

    yield start  # type: ignore[misc]
    for proxy in proxies:
        proxy.stop()


def client_for(proxy: TokenAuthProxy, sleeps: list[float] | None = None) -> RegistryClient:
    policy = RetryPolicy(jitter=0.0, sleep=sleeps.append) if sleeps is not None else RetryPolicy()
    return RegistryClient(Endpoints(insecure={proxy.host}),
                          CredentialStore({proxy.host: Credentials(USER, PASSWORD)}, files=[]), retry=policy)


def test_a_token_service_answering_503_once_is_asked_again(front) -> None:
    proxy = front(realm_failures=[(503, None)])
    with client_for(proxy) as client:
        manifest = client.get_manifest(Ref.parse(f"{proxy.host}/team/app:v1"))
    assert manifest.digest == IMAGE.digest
    # one answer of 503, then one token: the failure was retried, not reported, and asked for once more only
    assert proxy.token_failures == 1 and proxy.token_requests == 2
    assert sum(proxy.tokens_issued.values()) == 1


def test_a_token_service_429_waits_as_long_as_it_asks(front) -> None:
    proxy = front(realm_failures=[(429, "3")])
    sleeps: list[float] = []
    with client_for(proxy, sleeps) as client:
        assert client.blob_exists(Ref.parse(f"{proxy.host}/team/app:v1"), IMAGE.layers[0].digest)
    assert sleeps == [3.0] and proxy.token_requests == 2


def test_a_token_service_that_keeps_failing_is_one_error_with_its_status(front) -> None:
    proxy = front(realm_failures=[(503, None)] * 50)
    policy = RetryPolicy(jitter=0.0, sleep=lambda _: None, max_total=2.0)
    creds = CredentialStore({proxy.host: Credentials(USER, PASSWORD)}, files=[])
    with RegistryClient(Endpoints(insecure={proxy.host}), creds, retry=policy) as client, \
            pytest.raises(RegistryError) as info:
        client.get_manifest(Ref.parse(f"{proxy.host}/team/app:v1"))
    assert "token service answered HTTP 503" in str(info.value) and "gave up" in str(info.value)
    assert info.value.status == 503 and proxy.token_failures >= 3


def test_threads_meeting_one_401_at_once_fetch_one_token(front) -> None:
    """Eight workers ask about blobs of one repository at the same moment: the token is fetched once."""
    proxy = front()
    ref = Ref.parse(f"{proxy.host}/team/app:v1")
    start = threading.Barrier(8)
    answers: list[bool] = []
    with client_for(proxy) as client:
        def ask(n: int) -> None:
            start.wait()
            answers.append(client.blob_exists(ref, IMAGE.layers[n % 2].digest))

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert answers == [True] * 8
    assert dict(proxy.tokens_issued) == {"repository:team/app:pull": 1}
    assert proxy.token_requests == 1
