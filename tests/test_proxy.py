"""HTTPS_PROXY, HTTP_PROXY and NO_PROXY through a real forward proxy on loopback.

The proxy (``kit.connectproxy``) records every CONNECT tunnel and every
absolute-form request: traffic for a proxied registry must show up there, and a
``NO_PROXY`` host must not. TLS runs end to end through the tunnel, so
``--ca-cert`` still decides whether the registry is trusted, and ``--insecure``
still names a plain-HTTP registry reached through ``HTTP_PROXY``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kit.connectproxy import ConnectProxy
from kit.images import make_image, make_layer
from kit.push import push_image
from kit.tls import TestCA, make_ca

from mirrorkit.cli.main import main

IMAGE = make_image("proxy", [make_layer("proxy", 4 << 10)])
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "all_proxy",
              "no_proxy")


def cli(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def resolve(ref: str, *extra: object) -> Result:
    return cli("plan", "--resolve", "--image", ref, "--format", "json", *extra)


def digest(res: Result) -> str:
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["images"][0]["digest"]


@pytest.fixture(autouse=True)
def hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    for var in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_CONFIG_HOME", *PROXY_VARS):
        monkeypatch.delenv(var, raising=False)
    empty = tmp_path / "no-certs.d"
    empty.mkdir()
    monkeypatch.setenv("MIRRORKIT_CERTS_DIR", str(empty))


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy() as p:
        yield p


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_ca(tmp_path_factory.mktemp("pki"))


def test_https_proxy_tunnels_with_ca_cert_and_no_proxy_bypasses(proxy: ConnectProxy, registry_factory, ca: TestCA,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    reg = registry_factory(tls_cert=ca.cert, tls_key=ca.key)
    expected = push_image(reg.url, "team/app", "v1", IMAGE, verify=ca.client_context())
    ref = f"{reg.host}/team/app:v1"
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)

    assert digest(resolve(ref, "--ca-cert", ca.ca_cert)) == expected
    assert proxy.connects and set(proxy.connects) == {reg.host}
    # TLS is end to end through the tunnel: without the CA the registry is still refused
    res = resolve(ref)
    assert res.exit_code == 1 and "TLS verification failed" in res.stderr and "--ca-cert" in res.stderr

    # NO_PROXY (host, or host:port, lower or upper case) goes direct: the proxy sees nothing more
    for value in ("127.0.0.1", reg.host):
        for var in ("NO_PROXY", "no_proxy"):
            seen = len(proxy.connects)
            monkeypatch.setenv(var, value)
            assert digest(resolve(ref, "--ca-cert", ca.ca_cert)) == expected
            assert len(proxy.connects) == seen, (var, value)
            monkeypatch.delenv(var)


def test_http_proxy_for_an_insecure_registry(proxy: ConnectProxy, registry, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = push_image(registry.url, "team/app", "v1", IMAGE)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    assert digest(resolve(f"{registry.host}/team/app:v1", "--insecure", registry.host)) == expected
    urls = [url for _, url in proxy.requests]
    assert f"http://{registry.host}/v2/team/app/manifests/v1" in urls
    assert all(url.startswith(f"http://{registry.host}/") for url in urls)
