"""Path limits found before a byte moves: Quay- and Harbor-like fronts before a real registry.

push-bundle and mirror start (and cancel) an upload in every destination repository
first, and report every refusal at once with the registry's own error code and a
hint. ``plan --max-path-depth`` then makes names such a registry takes, and every
later step (mirror, rewrite-config) follows the names the plan chose.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from kit.images import make_image, make_layer
from kit.pathfront import PathRulesFront
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main
from mirrorkit.errors import RegistryError
from mirrorkit.oci.client import RegistryClient, RetryPolicy
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.transport import Endpoints
from mirrorkit.refs import Ref
from mirrorkit.transfer.preflight import probe_destinations

DEEP = ["nvidia/cloud-native/gpu-operator-validator:v1", "nvidia/driver:v1"]


def cli(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def ok(res: Result) -> Result:
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(autouse=True)
def hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    for var in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def upstream() -> Iterator[RegistryServer]:
    with RegistryServer() as reg:
        for n, name in enumerate(DEEP):
            repo, tag = name.split(":")
            push_image(reg.url, repo, tag, make_image(f"pf{n}", [make_layer(f"pf{n}", 4 << 10)]))
        yield reg


@pytest.fixture(scope="module")
def built(upstream: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A plan and its bundle with the usual (deep) names, and a plan capped at two segments."""
    folder = tmp_path_factory.mktemp("preflight")
    src = ("--source-endpoint", f"nvcr.io=http://{upstream.host}")
    images = [a for ref in DEEP for a in ("--image", f"nvcr.io/{ref}")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(folder))
        mp.setenv("XDG_RUNTIME_DIR", str(folder))
        ok(cli("plan", "--registry", "mirror.invalid/kse", "--resolve", *src, *images, "-o", folder / "plan.yaml"))
        ok(cli("pull-bundle", folder / "plan.yaml", "-o", folder / "gpu.tar", *src))
        ok(cli("plan", "--registry", "mirror.invalid/kse", "--max-path-depth", "2", "--resolve", *src, *images,
               "-o", folder / "plan2.yaml"))
    return {"plan": folder / "plan.yaml", "bundle": folder / "gpu.tar", "plan2": folder / "plan2.yaml"}


@pytest.fixture
def fronts(registry_factory) -> Iterator:
    started: list[PathRulesFront] = []

    def start(**kwargs) -> tuple[PathRulesFront, RegistryServer]:
        reg = registry_factory()
        front = PathRulesFront(reg.url, **kwargs).start()
        started.append(front)
        return front, reg

    yield start
    for front in started:
        front.stop()


def catalog(reg: RegistryServer) -> list[str]:
    return httpx.get(f"{reg.url}/v2/_catalog").json()["repositories"]


def test_quay_like_depth_limit_refused_at_once_then_max_path_depth(built: dict[str, Path], fronts,
                                                                    upstream: RegistryServer) -> None:
    quay, reg = fronts(max_depth=2)
    res = cli("push-bundle", built["bundle"], "--registry", f"{quay.host}/kse", "--insecure", quay.host)
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.stderr
    line = lines[0]
    # every refused repository at once, each with the registry's code and message, then the way out
    assert "refused 2 destination repositories" in line
    for repo in ("kse/nvidia/cloud-native/gpu-operator-validator", "kse/nvidia/driver"):
        assert f"{quay.host}/{repo}: HTTP 400: NAME_INVALID: invalid repository name" in line
    assert "--max-path-depth" in line and "--mapping flatten" in line
    # nothing was pushed: no blob or manifest write reached the registry
    assert not [s for s in quay.seen if s.method in ("PUT", "PATCH")] and catalog(reg) == []

    # the plan capped at two segments: mirror probes, copies, verifies; rewrite-config follows the names
    rep = json.loads(ok(cli("mirror", built["plan2"], "--registry", f"{quay.host}/kse", "--insecure", quay.host,
                            "--source-endpoint", f"nvcr.io=http://{upstream.host}", "--format", "json")).stdout)
    assert rep["copied"] == 2 and rep["verified"] == 2
    assert sorted(catalog(reg)) == ["kse/nvidia-cloud-native-gpu-operator-validator", "kse/nvidia-driver"]
    # every probe's upload was cancelled
    deletes = [s for s in quay.seen if s.method == "DELETE" and "/blobs/uploads/" in s.path]
    assert len(deletes) >= 2
    plan2 = built["plan2"].read_text()
    assert "max_path_depth: 2" in plan2 and "mirror.invalid/kse/nvidia-cloud-native-gpu-operator-validator:v1" in plan2


def test_rewrite_config_follows_the_capped_names(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    config = tmp_path / "mirrorkit.yaml"
    config.write_text("apiVersion: mirrorkit.dev/v1alpha1\nkind: PlanConfig\nversion: v23.9.2\n"
                      "nodes: [ubuntu22.04/5.15.0-131-generic]\ndriverBranch: 550\nprecompiled: true\n"
                      "registry: quay.example.com/gpu\nmaxPathDepth: 2\n")
    ok(cli("plan", "-c", config, "-o", plan))
    flags = ok(cli("rewrite-config", plan, "--format", "set-flags")).stdout
    assert "validator.repository=quay.example.com/gpu " in flags
    assert "validator.image=nvidia-cloud-native-gpu-operator-validator " in flags
    assert "driver.image=nvidia-driver " in flags
    # --registry given later recomputes with the plan's depth
    flags = ok(cli("rewrite-config", plan, "--format", "set-flags", "--registry", "other.example.com/x")).stdout
    assert "validator.repository=other.example.com/x " in flags and "image=nvidia-cloud-native-" in flags
    res = cli("plan", "-c", config, "--max-path-depth", "0")
    assert res.exit_code == 2 and "--max-path-depth" in res.stderr


def test_harbor_like_missing_project(built: dict[str, Path], fronts) -> None:
    harbor, reg = fronts(projects={"gpu"})
    res = cli("push-bundle", built["bundle"], "--registry", f"{harbor.host}/kse", "--insecure", harbor.host)
    assert res.exit_code == 1 and res.stderr.count("\n") == 1, res.output
    assert res.stderr.count("NAME_UNKNOWN: project kse not found") == 2
    assert "create the project" in res.stderr
    assert catalog(reg) == []
    rep = json.loads(ok(cli("push-bundle", built["bundle"], "--registry", f"{harbor.host}/gpu",
                            "--insecure", harbor.host, "--format", "json")).stdout)
    assert rep["images_pushed"] == 2 and rep["verified"] == 2 and rep["problems"] == []


def test_registry_errors_carry_the_registry_code(fronts) -> None:
    quay, _ = fronts(max_depth=2)
    client = RegistryClient(Endpoints(insecure={quay.host}), CredentialStore(files=[]),
                            retry=RetryPolicy(attempts=1))
    with client, pytest.raises(RegistryError) as caught:
        client.get_manifest(Ref.parse(f"{quay.host}/a/b/c:v1"))
    assert caught.value.code == "NAME_INVALID"
    assert "HTTP 400: NAME_INVALID: invalid repository name: at most 2 path components" in str(caught.value)
    with client:
        problems = probe_destinations(client, [Ref.parse(f"{quay.host}/a/b/c:v1"), Ref.parse(f"{quay.host}/a/b:v1"),
                                               Ref.parse(f"{quay.host}/a/b/c:v2")])
    assert [(p.repository, p.code) for p in problems] == [(f"{quay.host}/a/b/c", "NAME_INVALID")]


VALIDATOR = "nvidia/cloud-native/gpu-operator-validator"


@pytest.mark.parametrize(("depth", "source", "expected"), [
    (2, f"{VALIDATOR}:v1", "kse/nvidia-cloud-native-gpu-operator-validator:v1"),
    (3, f"{VALIDATOR}:v1", "kse/nvidia/cloud-native-gpu-operator-validator:v1"),
    (4, f"{VALIDATOR}:v1", f"kse/{VALIDATOR}:v1"),
    (2, "nvidia/driver@sha256:" + "a" * 64, "kse/nvidia-driver@sha256:" + "a" * 64),
])
def test_max_path_depth_names(depth: int, source: str, expected: str) -> None:
    res = cli("plan", "--image", f"nvcr.io/{source}", "--registry", "reg.local/kse", "--max-path-depth", depth,
              "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["images"][0]["destination"] == f"reg.local/{expected}"


def test_max_path_depth_refuses_collisions_and_a_too_deep_prefix() -> None:
    res = cli("plan", "--image", "nvcr.io/a/b-c:v1", "--image", "nvcr.io/a-b/c:v2", "--registry", "reg.local",
              "--max-path-depth", "1")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert "nvcr.io/a/b-c and nvcr.io/a-b/c would both become reg.local/a-b-c" in res.stderr
    res = cli("plan", "--image", "nvcr.io/a/b:v1", "--registry", "reg.local/x/y", "--max-path-depth", "2")
    assert res.exit_code == 2 and "prefix 'x/y'" in res.stderr
