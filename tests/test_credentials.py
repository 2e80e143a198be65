"""Credentials the way podman, skopeo and docker keep them, end to end against real servers.

The lookup order of containers-auth.json(5) then docker, one location at a time;
namespaced keys (``HOST/team``) from the most specific; ``credHelpers`` and
``credsStore`` through a real ``docker-credential-*`` script on PATH (the
docker-credential-helpers protocol: ``get``, server on stdin, JSON on stdout);
docker's ``identitytoken`` exchanged as an OAuth2 refresh token at a real token
service; and a TLS + htpasswd ``docker-registry`` reached with a namespaced login.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kit.images import make_image, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer
from kit.tls import TestCA, make_ca
from kit.tokenauth import TokenAuthProxy

from mirrorkit.cli.main import main
from mirrorkit.errors import AuthError
from mirrorkit.oci.credentials import Credentials, CredentialStore

HOST = "reg.example:5000"
USER, PASSWORD = "$oauthtoken", "helper-Pa55-9912"
REFRESH = "refresh-Tok3n-5521-abcdef"
IMAGE = make_image("creds", [make_layer("creds", 4 << 10)])


def b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def write_json(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def cli(*args: object, input: str | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Every lookup location under tmp_path, and a bin/ folder first on PATH for helpers."""
    places = {name: tmp_path / name for name in ("home", "runtime", "config", "docker", "authfile", "bin")}
    for path in places.values():
        path.mkdir()
    monkeypatch.setenv("HOME", str(places["home"]))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(places["runtime"]))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(places["config"]))
    monkeypatch.setenv("DOCKER_CONFIG", str(places["docker"]))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("PATH", f"{places['bin']}{os.pathsep}{os.environ['PATH']}")
    empty = tmp_path / "no-certs.d"
    empty.mkdir()
    monkeypatch.setenv("MIRRORKIT_CERTS_DIR", str(empty))
    return places


def helper(bin_dir: Path, name: str, answers: dict[str, tuple[str, str]], fail: bool = False) -> Path:
    """A docker-credential-NAME script: logs its argv and stdin, answers per server as the protocol says."""
    log = bin_dir / f"{name}.log"
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"""#!/usr/bin/env python3
import json, sys
server = sys.stdin.read()
with open({str(log)!r}, "a") as fh:
    fh.write(json.dumps({{"argv": sys.argv[1:], "stdin": server}}) + "\\n")
answers = {json.dumps(answers)}
if {fail!r}:
    print("keychain locked; secret was {PASSWORD}", file=sys.stderr)
    sys.exit(3)
if server.strip() not in answers:
    print("credentials not found in native keychain")
    sys.exit(1)
user, secret = answers[server.strip()]
print(json.dumps({{"ServerURL": server.strip(), "Username": user, "Secret": secret}}))
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# -- the lookup, one location at a time ----------------------------------------------------------


def test_each_location_in_its_order_of_precedence(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    files = [
        ("REGISTRY_AUTH_FILE", env["authfile"] / "auth.json", "auths"),
        ("XDG_RUNTIME_DIR", env["runtime"] / "containers" / "auth.json", "auths"),
        ("XDG_CONFIG_HOME", env["config"] / "containers" / "auth.json", "auths"),
        ("DOCKER_CONFIG", env["docker"] / "config.json", "auths"),
        ("~/.dockercfg", env["home"] / ".dockercfg", None),
    ]
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(files[0][1]))
    for name, path, key in files:
        entry = {HOST: {"auth": b64("u", f"from-{name}")}}
        write_json(path, {key: entry} if key else entry)
    for name, path, _ in files:
        assert CredentialStore().get(HOST) == Credentials("u", f"from-{name}"), name
        path.unlink()
    assert CredentialStore().get(HOST) is None
    # ~/.docker/config.json when DOCKER_CONFIG is not set
    monkeypatch.delenv("DOCKER_CONFIG")
    write_json(env["home"] / ".docker" / "config.json", {"auths": {f"https://{HOST}/v1/": {"auth": b64("u", "d")}}})
    assert CredentialStore().get(HOST) == Credentials("u", "d")


def test_namespaced_keys_most_specific_first(env: dict[str, Path]) -> None:
    write_json(env["runtime"] / "containers" / "auth.json", {"auths": {
        f"{HOST}/team/app": {"auth": b64("app", "1")},
        f"{HOST}/team": {"auth": b64("team", "2")},
        HOST: {"auth": b64("host", "3")},
        "https://index.docker.io/v1/": {"auth": b64("hub", "4")},
    }})
    store = CredentialStore()
    assert store.get(HOST, "team/app/sub").username == "app"
    assert store.get(HOST, "team/app").username == "app"
    assert store.get(HOST, "team/apparel").username == "team"  # whole segments only
    assert store.get(HOST, "other/x").username == "host"
    assert store.get(HOST).username == "host"
    assert store.get("docker.io", "library/busybox").username == "hub"
    # a later file's more specific key does not beat an earlier file's host key (files are in order)
    write_json(env["config"] / "containers" / "auth.json", {"auths": {f"{HOST}/zzz": {"auth": b64("late", "5")}}})
    assert CredentialStore().get(HOST, "zzz/x").username == "host"


def test_credential_helpers_protocol(env: dict[str, Path]) -> None:
    per_host = helper(env["bin"], "mkhost", {HOST: (USER, PASSWORD)})
    store_log = helper(env["bin"], "mkstore", {"https://index.docker.io/v1/": ("hubuser", "hubpass")})
    write_json(env["docker"] / "config.json", {"auths": {HOST: {}}, "credHelpers": {HOST: "mkhost"},
                                                "credsStore": "mkstore"})
    store = CredentialStore()
    assert store.get(HOST, "a/b") == Credentials(USER, PASSWORD)
    assert store.get(HOST, "a/b") == Credentials(USER, PASSWORD)  # asked once per repository
    assert calls(per_host) == [{"argv": ["get"], "stdin": HOST}]  # the server on stdin, never in argv
    assert store.get("docker.io", "library/x") == Credentials("hubuser", "hubpass")
    assert calls(store_log) == [{"argv": ["get"], "stdin": "https://index.docker.io/v1/"}]
    assert store.get("quay.io") is None  # "credentials not found": nothing, not an error
    assert PASSWORD in store.secrets() and "hubpass" in store.secrets()
    assert "***" in repr(store.get(HOST)) and PASSWORD not in repr(store.get(HOST))


# -- against real servers --------------------------------------------------------------------------


@pytest.fixture
def token_front(registry: RegistryServer):
    push_image(registry.url, "team/app", "v1", IMAGE)
    with TokenAuthProxy(registry.url, PASSWORD, refresh_token=REFRESH) as proxy:
        yield proxy


def test_identity_token_is_exchanged_as_a_refresh_token(env: dict[str, Path], token_front: TokenAuthProxy,
                                                       tmp_path: Path) -> None:
    write_json(env["docker"] / "config.json", {"auths": {token_front.host: {"auth": b64("<token>", ""),
                                                                            "identitytoken": REFRESH}}})
    plan = tmp_path / "plan.yaml"
    res = cli("plan", "--resolve", "--image", f"{token_front.host}/team/app:v1", "--insecure", token_front.host,
              "-o", plan)
    assert res.exit_code == 0, res.output
    assert "digest: sha256:" in plan.read_text()
    assert token_front.refresh_grants >= 1 and token_front.token_refusals == 0
    assert REFRESH not in res.output and REFRESH not in plan.read_text()
    # a revoked refresh token: refused, in one line, without the token
    write_json(env["docker"] / "config.json", {"auths": {token_front.host: {"identitytoken": "revoked"}}})
    res = cli("plan", "--resolve", "--image", f"{token_front.host}/team/app:v1", "--insecure", token_front.host)
    assert res.exit_code == 1 and "refused the identity token" in res.stderr and "revoked" not in res.stderr


def test_credential_helper_end_to_end_through_a_token_service(env: dict[str, Path], token_front: TokenAuthProxy,
                                                             tmp_path: Path) -> None:
    log = helper(env["bin"], "mkdesk", {token_front.host: (USER, PASSWORD)})
    write_json(env["docker"] / "config.json", {"credsStore": "mkdesk"})
    res = cli("plan", "--resolve", "--image", f"{token_front.host}/team/app:v1", "--insecure", token_front.host)
    assert res.exit_code == 0, res.output
    assert sum(token_front.tokens_issued.values()) >= 1 and token_front.token_refusals == 0
    assert calls(log)[0] == {"argv": ["get"], "stdin": token_front.host}
    assert PASSWORD not in res.output


def test_failing_or_missing_helper_is_one_line_naming_it(env: dict[str, Path], token_front: TokenAuthProxy) -> None:
    helper(env["bin"], "mkbroken", {}, fail=True)
    write_json(env["docker"] / "config.json", {"credHelpers": {token_front.host: "mkbroken",
                                                                "other.example": "mkabsent"}})
    with pytest.raises(AuthError) as broken:
        CredentialStore().get(token_front.host)
    assert "docker-credential-mkbroken" in str(broken.value) and PASSWORD not in str(broken.value)
    with pytest.raises(AuthError, match="docker-credential-mkabsent .*not on PATH"):
        CredentialStore().get("other.example")
    res = cli("plan", "--resolve", "--image", f"{token_front.host}/team/app:v1", "--insecure", token_front.host)
    assert res.exit_code == 1 and res.stderr.count("\n") == 1, res.output
    assert "docker-credential-mkbroken" in res.stderr and PASSWORD not in res.output


def test_requires_credentials_names_what_it_looked_at(env: dict[str, Path], token_front: TokenAuthProxy) -> None:
    write_json(env["runtime"] / "containers" / "auth.json",
               {"auths": {f"{token_front.host}/other": {"auth": b64(USER, PASSWORD)}}})
    res = cli("plan", "--resolve", "--image", f"{token_front.host}/team/app:v1", "--insecure", token_front.host)
    assert res.exit_code == 1 and res.stderr.count("\n") == 1, res.output
    line = res.stderr
    assert "requires credentials" in line
    assert f"{env['runtime']}/containers/auth.json (other namespaces only: {token_front.host}/other)" in line
    assert f"{env['config']}/containers/auth.json (missing)" in line
    assert f"{env['docker']}/config.json (missing)" in line and ".dockercfg (missing)" in line
    assert PASSWORD not in res.output and b64(USER, PASSWORD) not in res.output


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_ca(tmp_path_factory.mktemp("pki"))


def test_namespaced_login_on_a_tls_htpasswd_registry(env: dict[str, Path], registry_factory, ca: TestCA) -> None:
    reg = registry_factory(auth=True, tls_cert=ca.cert, tls_key=ca.key)
    user, password = reg.auth
    push_image(reg.url, "team/app", "v1", IMAGE, auth=(user, password), verify=ca.client_context())
    ref = f"{reg.host}/team/app:v1"
    # podman login HOST/team: a key for the namespace only
    write_json(env["runtime"] / "containers" / "auth.json",
               {"auths": {f"{reg.host}/team": {"auth": b64(user, password)}}})
    res = cli("plan", "--resolve", "--image", ref, "--ca-cert", ca.ca_cert, "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["images"][0]["digest"].startswith("sha256:")
    # the same login does not reach another namespace; the error says what was found for the host
    push_image(reg.url, "else/app", "v1", IMAGE, auth=(user, password), verify=ca.client_context())
    res = cli("plan", "--resolve", "--image", f"{reg.host}/else/app:v1", "--ca-cert", ca.ca_cert)
    assert res.exit_code == 1 and "requires credentials" in res.stderr and f"{reg.host}/team" in res.stderr
    assert password not in res.output


def test_namespaced_login_reaches_pull_bundle(env: dict[str, Path], token_front: TokenAuthProxy,
                                              tmp_path: Path) -> None:
    # podman login HOST/team: no host-wide entry, so only the namespaced key can open team/app
    write_json(env["runtime"] / "containers" / "auth.json",
               {"auths": {f"{token_front.host}/team": {"auth": b64(USER, PASSWORD)}}})
    plan, bundle = tmp_path / "plan.yaml", tmp_path / "team.tar"
    res = cli("plan", "--resolve", "--image", f"{token_front.host}/team/app:v1", "--insecure", token_front.host,
              "-o", plan)
    assert res.exit_code == 0, res.output
    res = cli("pull-bundle", plan, "-o", bundle, "--insecure", token_front.host)
    assert res.exit_code == 0, res.output
    assert bundle.stat().st_size > 0 and token_front.token_refusals == 0
    assert PASSWORD not in res.output
