"""``mirrorkit login``: verified against real registries, stored where podman and skopeo read it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kit.images import make_image, make_layer
from kit.push import push_image
from kit.tls import TestCA, make_ca
from kit.tokenauth import TokenAuthProxy

from mirrorkit.cli.main import main

IMAGE = make_image("login", [make_layer("login", 4 << 10)])
TOKEN_PASSWORD = "login-Tok3n-8812"


def cli(*args: object, input: str | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture(autouse=True)
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    out = {"home": tmp_path / "home", "runtime": tmp_path / "runtime", "config": tmp_path / "config"}
    for path in out.values():
        path.mkdir()
    monkeypatch.setenv("HOME", str(out["home"]))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(out["runtime"]))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(out["config"]))
    for var in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    empty = tmp_path / "no-certs.d"
    empty.mkdir()
    monkeypatch.setenv("MIRRORKIT_CERTS_DIR", str(empty))
    return out


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_ca(tmp_path_factory.mktemp("pki"))


def test_login_tls_htpasswd_then_used_by_plan(places: dict[str, Path], registry_factory, ca: TestCA) -> None:
    reg = registry_factory(auth=True, tls_cert=ca.cert, tls_key=ca.key)
    user, password = reg.auth
    push_image(reg.url, "team/app", "v1", IMAGE, auth=(user, password), verify=ca.client_context())
    authfile = places["runtime"] / "containers" / "auth.json"

    # wrong password: refused in one line, nothing written
    res = cli("login", reg.host, "-u", user, "--password-stdin", "--ca-cert", ca.ca_cert, input="nope-x\n")
    assert res.exit_code == 1 and "refused" in res.stderr and res.stderr.count("\n") == 1, res.output
    assert not authfile.exists() and "nope-x" not in res.output

    res = cli("login", reg.host, "-u", user, "--password-stdin", "--ca-cert", ca.ca_cert, input=password + "\n")
    assert res.exit_code == 0, res.output
    assert f"Login succeeded: {reg.host} saved in {authfile}" in res.stderr and password not in res.output
    assert stat.S_IMODE(authfile.stat().st_mode) == 0o600
    assert list(json.loads(authfile.read_text())["auths"]) == [reg.host]
    # the next command finds the login on its own
    res = cli("plan", "--resolve", "--image", f"{reg.host}/team/app:v1", "--ca-cert", ca.ca_cert, "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["images"][0]["digest"].startswith("sha256:")


def test_login_through_a_token_service_with_a_prompt_and_a_namespace(places: dict[str, Path], registry,
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with TokenAuthProxy(registry.url, TOKEN_PASSWORD) as front:
        authfile = tmp_path / "chosen" / "auth.json"
        authfile.parent.mkdir()
        authfile.write_text(json.dumps({"auths": {"other.example": {"auth": "eDp5"}}, "credHelpers": {"a": "b"}}))
        # REGISTRY_AUTH_FILE comes first in the order: login writes there, and keeps what was there
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(authfile))
        res = cli("login", f"{front.host}/team", "--insecure", input=f"$oauthtoken\n{TOKEN_PASSWORD}\n")
        assert res.exit_code == 0, res.output
        assert "Username" in res.stderr and "Password" in res.stderr and TOKEN_PASSWORD not in res.output
        doc = json.loads(authfile.read_text())
        assert set(doc["auths"]) == {"other.example", f"{front.host}/team"} and doc["credHelpers"] == {"a": "b"}
        assert front.tokens_issued and front.token_refusals == 0
        # a wrong password at the token service: refused, and the file is as it was
        before = authfile.read_text()
        res = cli("login", front.host, "-u", "$oauthtoken", "--password-stdin", "--insecure", input="bad\n")
        assert res.exit_code == 1 and "refused" in res.stderr and authfile.read_text() == before


def test_login_file_is_read_by_skopeo(places: dict[str, Path], registry_factory) -> None:
    reg = registry_factory(auth=True)
    user, password = reg.auth
    push_image(reg.url, "team/app", "v1", IMAGE, auth=(user, password))
    res = cli("login", reg.host, "-u", user, "--password-stdin", "--insecure", input=password + "\n")
    assert res.exit_code == 0, res.output
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE",)}
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{reg.host}/team/app:v1"],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["Digest"].startswith("sha256:")


def test_login_bad_input(places: dict[str, Path]) -> None:
    res = cli("login", "https://reg.example", "-u", "x", "--password-stdin", input="y\n")
    assert res.exit_code == 2 and "without a scheme" in res.stderr
    res = cli("login", "127.0.0.1:1", "-u", "x", "--password-stdin", input="\n")
    assert res.exit_code == 2 and "no password" in res.stderr
