"""TLS and bearer-token auth end to end, against real servers on 127.0.0.1.

TLS: a ``docker-registry`` serving a certificate from a throw-away CA
(``testkit.tls``): trusted with ``--ca-cert`` or a ``certs.d/HOST:PORT/ca.crt``
folder (``--certs-dir`` / ``$MIRRORKIT_CERTS_DIR``), refused quickly and in one
line otherwise, ``--insecure`` scoped to the one host it names, and skopeo
verifying with the same CA. Tokens: ``testkit.tokenauth`` in front of a real
registry, nvcr.io style (``$oauthtoken`` + password), credentials from every
place users keep them, tokens that expire mid-run, a plain-HTTP realm refused
unless named, and no credentials for an upload ``Location`` on another origin.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from kit.images import Image, Index, make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer
from kit.tls import TestCA, make_ca
from kit.tokenauth import ReverseProxy, TokenAuthProxy

from mirrorkit.cli.main import main

USER = "$oauthtoken"
PASSWORD = "nv-api-key-Tok3n-0427"
PREFIX = "kse"
ACCEPT = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json"])


def build() -> dict[str, Image | Index]:
    base = make_layer("tls/base", 24 << 10)
    return {
        "nvidia/gpu-operator:v1": make_index([
            make_image(f"op/{a}", [base, make_layer(f"op/{a}", 8 << 10)], ("linux", a)) for a in ("amd64", "arm64")]),
        "nvidia/k8s-driver-manager:v1": make_image("dm", [base, make_layer("dm", 4 << 10)]),
    }


IMAGES = build()


def seed(url: str, **kwargs) -> None:
    for name, content in IMAGES.items():
        repo, tag = name.split(":")
        push_image(url, repo, tag, content, **kwargs)


def cli(*args: object, input: str | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def ok(res: Result) -> Result:
    assert res.exit_code == 0, res.output
    return res


def one_line_error(res: Result) -> str:
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


def image_args(registry: str = "nvcr.io") -> list[str]:
    return [a for ref in IMAGES for a in ("--image", f"{registry}/{ref}")]


def b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def write_auth(path: Path, entries: dict[str, dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": entries}))
    path.chmod(0o600)
    return path


@pytest.fixture(autouse=True)
def hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No credentials or certs.d from the machine: HOME is a test folder, /etc is never read."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    empty = tmp_path / "no-certs.d"
    empty.mkdir()
    monkeypatch.setenv("MIRRORKIT_CERTS_DIR", str(empty))
    return home


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def skopeo_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every skopeo argv mirrorkit runs (the real skopeo still runs)."""
    calls: list[list[str]] = []
    real = subprocess.run

    def recording(argv, *args, **kwargs):
        if isinstance(argv, list) and argv and str(argv[0]).endswith("skopeo"):
            calls.append([str(a) for a in argv])
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording)
    return calls


# -- TLS ------------------------------------------------------------------------------------------


def tls_registry(factory, ca: TestCA) -> RegistryServer:
    return factory(tls_cert=ca.cert, tls_key=ca.key)


def test_tls_with_ca_cert_end_to_end_and_refused_without(tmp_path: Path, registry_factory, ca: TestCA,
                                                         skopeo_calls: list[list[str]]) -> None:
    up, private = tls_registry(registry_factory, ca), tls_registry(registry_factory, ca)
    seed(up.url, verify=ca.client_context())
    src = ("--source-endpoint", f"nvcr.io=https://{up.host}")
    plan = tmp_path / "plan.yaml"

    # unknown CA: one line naming the registry and the way out, at once (no retry loop)
    started = time.monotonic()
    line = one_line_error(cli("plan", "--registry", f"{private.host}/{PREFIX}", "--resolve", *src, *image_args(),
                              "-o", plan))
    assert time.monotonic() - started < 5
    assert "nvcr.io" in line and "TLS verification failed" in line
    assert "--ca-cert" in line and "--insecure" in line
    assert not plan.exists()

    ok(cli("plan", "--registry", f"{private.host}/{PREFIX}", "--resolve", *src, *image_args(), "-o", plan,
           "--ca-cert", ca.ca_cert))
    bundle = tmp_path / "gpu.tar"
    ok(cli("pull-bundle", plan, "-o", bundle, *src, "--ca-cert", ca.ca_cert))
    assert skopeo_calls == []   # every byte came through mirrorkit's own verified client

    started = time.monotonic()
    line = one_line_error(cli("push-bundle", bundle))
    assert time.monotonic() - started < 5
    assert private.host in line and "--ca-cert" in line
    assert httpx.get(f"{private.url}/v2/_catalog", verify=ca.client_context()).json()["repositories"] == []

    rep = json.loads(ok(cli("push-bundle", bundle, "--ca-cert", ca.ca_cert, "--format", "json")).stdout)
    assert rep["images_pushed"] == 2 and rep["verified"] == 2
    assert "2 of 2 images present" in ok(cli("verify", plan, "--ca-cert", ca.ca_cert)).stderr
    line = one_line_error(cli("verify", plan))
    assert private.host in line and "--ca-cert" in line

    # mirror: both sides verified with the CA
    rep = json.loads(ok(cli("mirror", plan, "--registry", f"{private.host}/mirror", *src, "--ca-cert", ca.ca_cert,
                            "--format", "json")).stdout)
    assert rep["copied"] == 2 and rep["verified"] == 2
    assert skopeo_calls == []


def test_certs_d_folder_per_host(tmp_path: Path, registry_factory, ca: TestCA, monkeypatch: pytest.MonkeyPatch,
                                 skopeo_calls: list[list[str]]) -> None:
    up, private, stranger = (tls_registry(registry_factory, ca) for _ in range(3))
    seed(up.url, verify=ca.client_context())
    certs = tmp_path / "certs.d"
    for reg in (up, private):
        (certs / reg.host).mkdir(parents=True)
        shutil.copy(ca.ca_cert, certs / reg.host / "ca.crt")
    src = ("--source-endpoint", f"nvcr.io=https://{up.host}")
    plan, bundle = tmp_path / "plan.yaml", tmp_path / "gpu.tar"

    ok(cli("plan", "--registry", f"{private.host}/{PREFIX}", "--resolve", *src, *image_args(), "-o", plan,
           "--certs-dir", certs))
    monkeypatch.setenv("MIRRORKIT_CERTS_DIR", str(certs))  # the environment works as well as the option
    ok(cli("pull-bundle", plan, "-o", bundle, *src))
    assert skopeo_calls == []
    monkeypatch.setenv("MIRRORKIT_CERTS_DIR", str(tmp_path / "no-certs.d"))
    rep = json.loads(ok(cli("push-bundle", bundle, "--certs-dir", certs, "--format", "json")).stdout)
    assert rep["verified"] == 2

    # certs.d trusts a CA for its own host only: same CA, another port, no folder -> refused
    line = one_line_error(cli("verify", plan, "--registry", f"{stranger.host}/{PREFIX}", "--certs-dir", certs))
    assert stranger.host in line and "TLS verification failed" in line
    # the option replaces the environment's folder (which has nothing)
    one_line_error(cli("verify", plan))
    ok(cli("verify", plan, "--certs-dir", certs))
    res = cli("verify", plan, "--certs-dir", tmp_path / "nowhere")
    assert res.exit_code == 2 and "--certs-dir" in res.stderr


def test_insecure_names_one_host_only(tmp_path: Path, registry_factory, ca: TestCA,
                                      skopeo_calls: list[list[str]]) -> None:
    a, b = tls_registry(registry_factory, ca), tls_registry(registry_factory, ca)
    for reg in (a, b):
        seed(reg.url, verify=ca.client_context())
    both = ("--source-endpoint", f"a.example=https://{a.host}", "--source-endpoint", f"b.example=https://{b.host}")
    plan = tmp_path / "plan.yaml"

    line = one_line_error(cli("plan", "--resolve", *both, *image_args("a.example"), *image_args("b.example"),
                              "--insecure", a.host, "-o", plan))
    assert "b.example" in line and "TLS verification failed" in line and not plan.exists()
    # a bare host does not cover HOST:PORT
    one_line_error(cli("plan", "--resolve", *both[:2], *image_args("a.example"), "--insecure", "127.0.0.1"))

    ok(cli("plan", "--resolve", *both, *image_args("a.example"), "--insecure", a.host, "-o", plan))
    assert plan.read_text().count("digest: sha256:") == 2
    ok(cli("pull-bundle", plan, "-o", tmp_path / "a.tar", *both, "--insecure", a.host))
    assert skopeo_calls == []
    # --insecure a.host does not cover b: pulling from it is refused
    line = one_line_error(cli("pull-bundle", plan, "-o", tmp_path / "b.tar", "--source-endpoint",
                              f"a.example=https://{b.host}", "--insecure", a.host))
    assert "TLS verification failed" in line and not (tmp_path / "b.tar").exists()


def test_garbled_ca_cert_is_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    res = cli("plan", "--resolve", "--image", "nvcr.io/nvidia/x:v1", "--ca-cert", bad)
    assert res.exit_code == 2 and "--ca-cert" in res.stderr and "Traceback" not in res.output


# -- bearer tokens ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[RegistryServer]:
    with RegistryServer() as reg:
        seed(reg.url)
        yield reg


@pytest.fixture(scope="module")
def bundle(upstream: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of IMAGES, pulled once (anonymously) for the push tests."""
    folder = tmp_path_factory.mktemp("bundle")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(folder))
        for var in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG"):
            mp.delenv(var, raising=False)
        src = ("--source-endpoint", f"nvcr.io=http://{upstream.host}")
        ok(cli("plan", "--registry", f"mirror.invalid/{PREFIX}", "--resolve", *src, *image_args(),
               "-o", folder / "plan.yaml"))
        ok(cli("pull-bundle", folder / "plan.yaml", "-o", folder / "gpu.tar", *src))
    return folder / "gpu.tar"


@pytest.fixture
def front(registry_factory) -> Iterator:
    """``front(**TokenAuthProxy kwargs)``: a token proxy before a fresh private registry."""
    proxies: list[ReverseProxy] = []

    def start(reg: RegistryServer | None = None, **kwargs) -> TokenAuthProxy:
        proxy = TokenAuthProxy((reg or registry_factory()).url, kwargs.pop("password", PASSWORD), **kwargs)
        proxies.append(proxy)
        return proxy.start()

    yield start
    for proxy in proxies:
        proxy.stop()


def push_and_verify(proxy: TokenAuthProxy, bundle: Path, *extra: str, input: str | None = None) -> dict:
    dest = ("--registry", f"{proxy.host}/{PREFIX}", "--insecure", proxy.host)
    rep = json.loads(ok(cli("push-bundle", bundle, *dest, "--format", "json", *extra, input=input)).stdout)
    assert rep["images_pushed"] == 2 and rep["verified"] == 2 and rep["problems"] == []
    doc = json.loads(ok(cli("verify", bundle, *dest, "--format", "json", *extra, input=input)).stdout)
    assert doc["passed"] and len(doc["ok"]) == 2
    return rep


def assert_bearer_only(proxy: TokenAuthProxy) -> None:
    """Registry endpoints saw bearer tokens, never the password; /token saw Basic."""
    api = [s for s in proxy.seen if not s.path.startswith("/token")]
    assert any(s.auth_scheme == "Bearer" and s.status < 300 for s in api)
    assert {s.auth_scheme for s in api} <= {None, "Bearer"}
    assert all(s.auth_scheme in (None, "Basic") for s in proxy.seen if s.path.startswith("/token"))


@pytest.mark.parametrize("source", ["registry_auth_file", "docker_config", "docker_config_fields",
                                    "password_stdin"])
def test_token_auth_credentials_from_every_source(source: str, tmp_path: Path, hermetic: Path, upstream,
                                                  bundle: Path, front, monkeypatch: pytest.MonkeyPatch) -> None:
    field = {"registry_auth_file": "token", "docker_config": "access_token"}.get(source, "both")
    # nvcr.io lets anyone pull public images with an anonymous token: the stdin case plans that way
    nvcr = front(upstream, token_field=field, anonymous_pull=source == "password_stdin")
    private = front(token_field=field)
    entry = ({"username": USER, "password": PASSWORD} if source == "docker_config_fields"
             else {"auth": b64(USER, PASSWORD)})
    if source == "registry_auth_file":
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(write_auth(tmp_path / "auth" / "auth.json",
                                                                {"nvcr.io": entry, private.host: entry})))
    elif source.startswith("docker_config"):
        write_auth(hermetic / ".docker" / "config.json", {"nvcr.io": entry, f"http://{private.host}": entry})

    plan = tmp_path / "plan.yaml"
    ok(cli("plan", "--registry", f"{private.host}/{PREFIX}", "--resolve", "--source-endpoint",
           f"nvcr.io=http://{nvcr.host}", *image_args(), "-o", plan))
    assert plan.read_text().count("digest: sha256:") == 2
    assert sum(nvcr.tokens_issued.values()) >= 1 and nvcr.token_refusals == 0

    if source == "password_stdin":
        res = cli("push-bundle", bundle, "--registry", f"{private.host}/{PREFIX}", "--insecure", private.host)
        assert "refused anonymous access" in one_line_error(res)
        refused = private.token_refusals
        push_and_verify(private, bundle, "--username", USER, "--password-stdin", input=PASSWORD + "\n")
        assert private.token_refusals == refused
    else:
        push_and_verify(private, bundle)
        assert private.token_refusals == 0
    for proxy in (nvcr, private):
        assert_bearer_only(proxy)


def test_expired_tokens_are_renewed_mid_run(bundle: Path, front) -> None:
    # tokens that say they last 1 s, and a registry that stalls 1.5 s mid-push
    short = front(expires_in=1, stall=1.5, stall_after=6)
    creds = ("--username", USER, "--password-stdin")
    push_and_verify(short, bundle, *creds, input=PASSWORD + "\n")
    assert short.renewals() >= 1

    # tokens revoked before their advertised expiry: the client meets a 401 and fetches a new one
    revoked = front(expires_in=300, lifetime=0.5, stall=1.0, stall_after=6)
    push_and_verify(revoked, bundle, *creds, input=PASSWORD + "\n")
    assert revoked.expired_presented >= 1 and revoked.renewals() >= 1


def test_a_token_expiring_before_an_upload_body_restarts_that_upload(front) -> None:
    """The PUT's body is a one-shot stream: a 401 on it must restart the upload, never resend it."""
    import hashlib
    import io

    from mirrorkit.oci.client import RegistryClient
    from mirrorkit.oci.credentials import Credentials, CredentialStore
    from mirrorkit.oci.transport import Endpoints
    from mirrorkit.refs import Ref

    now = [1000.0]
    proxy = front(expires_in=300, lifetime=0.5, clock=lambda: now[0])   # the token service's clock, injected
    data = b"layer bytes " * 40_000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    opened: list[float] = []

    def opener() -> io.BytesIO:
        if not opened:
            now[0] += 0.8             # the first upload's token expires before its PUT arrives
        opened.append(now[0])
        return io.BytesIO(data)

    creds = CredentialStore({proxy.host: Credentials(USER, PASSWORD)}, files=[])
    with RegistryClient(Endpoints(insecure={proxy.host}), creds) as client:
        client.upload_blob(proxy.host, f"{PREFIX}/slow", digest, len(data), opener)
        assert client.blob_exists(Ref.parse(f"{proxy.host}/{PREFIX}/slow:x"), digest)
    assert len(opened) == 2 and proxy.expired_presented >= 1


def test_plain_http_realm_refused_unless_named(tmp_path: Path, upstream, front, ca: TestCA,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # an HTTPS registry whose token service is plain HTTP on another port
    proxy = front(upstream, tls=ca.server_context())
    assert proxy.realm.startswith("http://") and proxy.realm_host != proxy.host
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(write_auth(tmp_path / "auth.json",
                                                            {"nvcr.io": {"auth": b64(USER, PASSWORD)}})))
    args = ["plan", "--resolve", "--source-endpoint", f"nvcr.io=https://{proxy.host}", "--ca-cert", ca.ca_cert,
            *image_args()]
    line = one_line_error(cli(*args))
    assert "refusing token realm" in line and f"--insecure {proxy.realm_host}" in line
    assert proxy.token_requests == 0  # the password never went over plain HTTP
    # naming the realm's HOST:PORT allows it, and only that: the registry itself stays verified
    res = ok(cli(*args, "--insecure", proxy.realm_host))
    assert res.stdout.count("digest: sha256:") == 2 and proxy.token_requests >= 1


def test_wrong_password_is_one_line_without_the_password(tmp_path: Path, upstream, bundle: Path, front,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "Wr0ng-pa55word-9911"
    nvcr, private = front(upstream), front()
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(write_auth(tmp_path / "auth.json",
                                                            {"nvcr.io": {"auth": b64(USER, wrong)}})))
    res = cli("plan", "--resolve", "--source-endpoint", f"nvcr.io=http://{nvcr.host}", *image_args())
    line = one_line_error(res)
    assert "refused" in line and USER in line and wrong not in res.output
    assert nvcr.token_refusals >= 1 and not nvcr.tokens_issued

    res = cli("push-bundle", bundle, "--registry", f"{private.host}/{PREFIX}", "--insecure", private.host,
              "--username", USER, "--password-stdin", input=wrong + "\n")
    line = one_line_error(res)
    assert "refused" in line and wrong not in res.output and PASSWORD not in res.output


def test_upload_location_on_another_origin_gets_no_credentials(bundle: Path, registry_factory, front) -> None:
    private = registry_factory()
    with ReverseProxy(private.url) as elsewhere:
        proxy = front(private, upload_origin=elsewhere.url)
        push_and_verify(proxy, bundle, "--username", USER, "--password-stdin", input=PASSWORD + "\n")
        uploads = [s for s in elsewhere.seen if s.method == "PUT" and "/blobs/uploads/" in s.path]
    assert uploads and all(s.status == 201 for s in uploads)  # the blobs really went there
    assert {s.auth_scheme for s in elsewhere.seen} == {None}  # and no Authorization with them
    assert_bearer_only(proxy)
