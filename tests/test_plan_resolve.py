"""``plan --resolve`` against real registries on loopback, seeded with testkit images.

The upstream names stay ``nvcr.io/...`` in the plan; ``--source-endpoint`` only says
where nvcr.io is reached (a plain-HTTP registry on 127.0.0.1, an explicit choice).
Expected digests and sizes are computed from the bytes the test pushed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kit.images import Image, Index, make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main
from mirrorkit.errors import AuthError, NotFoundError
from mirrorkit.oci.credentials import Credentials, CredentialStore
from mirrorkit.oci.transport import Endpoints
from mirrorkit.plan import Plan, PlanImage
from mirrorkit.resolve.lookup import resolve_plan

PASSWORD = "s3cret-Pa55"
ARCHES = ("amd64", "arm64")
BOTH = ["linux/amd64", "linux/arm64"]


def build_images() -> dict[str, Image | Index]:
    """repo:tag -> content, shaped like part of the GPU Operator's image set."""
    base = {arch: make_layer(f"ubi8/{arch}", 24 << 10) for arch in ARCHES}
    docker_base = {arch: make_layer(f"ubi8/{arch}", 24 << 10, docker=True) for arch in ARCHES}

    def oci_index(name: str) -> Index:
        return make_index([make_image(f"{name}/{arch}", [base[arch], make_layer(f"{name}/{arch}", 8 << 10)],
                                      ("linux", arch)) for arch in ARCHES])

    return {
        # OCI index, both platforms on a shared base layer
        "nvidia/gpu-operator:v23.9.2": oci_index("gpu-operator"),
        "nvidia/cloud-native/gpu-operator-validator:v23.9.2": oci_index("validator"),
        # Docker schema2 manifest list
        "nvidia/k8s-device-plugin:v0.14.5-ubi8": make_index([
            make_image(f"device-plugin/{arch}", [docker_base[arch], make_layer(f"dp/{arch}", 4 << 10, docker=True)],
                       ("linux", arch), docker=True) for arch in ARCHES]),
        # single-platform OCI manifest
        "nvidia/cloud-native/k8s-driver-manager:v0.6.5": make_image(
            "driver-manager", [base["amd64"], make_layer("driver-manager", 2 << 10)]),
    }


IMAGES = build_images()


def image_size(image: Image) -> int:
    return image.size + image.config.size + sum(layer.size for layer in image.layers)


def expected_size(content: Image | Index, arches: tuple[str, ...] = ARCHES) -> int:
    """What lookup promises: the top manifest plus, per wanted child, manifest, config and layers."""
    if isinstance(content, Image):
        return image_size(content)
    return content.size + sum(image_size(i) for i in content.images if i.platform[1] in arches)


def seed(server: RegistryServer) -> None:
    for name, content in IMAGES.items():
        repo, tag = name.rsplit(":", 1)
        assert push_image(server.url, repo, tag, content, auth=server.auth) == content.digest


def image_args(names: list[str] | None = None) -> list[str]:
    return [arg for name in names or IMAGES for arg in ("--image", f"nvcr.io/{name}")]


def run_plan(server: RegistryServer, *extra: str, env: dict[str, str] | None = None) -> Result:
    args = ["plan", *image_args(), "--source-endpoint", f"nvcr.io={server.url}", "--resolve",
            "--format", "json", *extra]
    return CliRunner().invoke(main, args, env=env)


def by_source(result: Result) -> tuple[dict, dict[str, dict]]:
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    return plan, {img["source"]: img for img in plan["images"]}


@pytest.fixture(autouse=True)
def no_real_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read the workstation's auth files."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG"):
        monkeypatch.delenv(var, raising=False)


def auth_file(tmp_path: Path, user: str, password: str, key: str = "nvcr.io") -> str:
    path = tmp_path / "auth.json"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {key: {"auth": token}}}))
    return str(path)


def test_resolve_fills_digest_platforms_size(registry: RegistryServer) -> None:
    seed(registry)
    plan, images = by_source(run_plan(registry))

    assert plan["resolved"] is True
    assert set(images) == {f"nvcr.io/{name}" for name in IMAGES}  # real upstream names kept
    assert registry.host not in json.dumps(plan)
    for name, content in IMAGES.items():
        img = images[f"nvcr.io/{name}"]
        assert img["digest"] == content.digest, name
        assert img["size"] == expected_size(content), name
        if isinstance(content, Index):
            assert img["platforms"] == BOTH, name


def test_resolve_with_platform_counts_only_that_child(registry: RegistryServer) -> None:
    seed(registry)
    plan, images = by_source(run_plan(registry, "--platform", "linux/amd64"))
    assert plan["platforms"] == ["linux/amd64"]
    for name, content in IMAGES.items():
        img = images[f"nvcr.io/{name}"]
        assert img["digest"] == content.digest  # the index digest, still
        assert img["size"] == expected_size(content, ("amd64",)), name
    operator = IMAGES["nvidia/gpu-operator:v23.9.2"]
    assert expected_size(operator, ("amd64",)) < expected_size(operator)


def test_resolve_by_digest_and_insecure_host(registry: RegistryServer) -> None:
    seed(registry)
    operator = IMAGES["nvidia/gpu-operator:v23.9.2"]
    # No --source-endpoint: the image names the loopback registry, and --insecure allows plain HTTP.
    result = CliRunner().invoke(main, [
        "plan", "--image", f"{registry.host}/nvidia/gpu-operator@{operator.digest}",
        "--insecure", registry.host, "--resolve", "--format", "json"])
    _, images = by_source(result)
    (img,) = images.values()
    assert img["digest"] == operator.digest and img["size"] == expected_size(operator)


def test_htpasswd_registry_anonymous_fails(registry_factory: Callable[..., RegistryServer]) -> None:
    server = registry_factory(auth=True)
    seed(server)
    result = run_plan(server)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a reported error, not a traceback
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "credentials" in lines[0] and "nvcr.io" in lines[0]
    assert result.stdout == ""


def test_htpasswd_registry_with_auth_file(registry_factory: Callable[..., RegistryServer],
                                          tmp_path: Path) -> None:
    server = registry_factory(auth=True)
    seed(server)
    # Several images resolved in parallel, all starting anonymous: each must switch to basic auth.
    result = run_plan(server, env={"REGISTRY_AUTH_FILE": auth_file(tmp_path, "alice", PASSWORD)})
    plan, images = by_source(result)
    assert plan["resolved"] is True
    for name, content in IMAGES.items():
        assert images[f"nvcr.io/{name}"]["digest"] == content.digest
    assert PASSWORD not in result.stdout and PASSWORD not in result.stderr


def test_htpasswd_registry_wrong_password(registry_factory: Callable[..., RegistryServer],
                                          tmp_path: Path) -> None:
    server = registry_factory(auth=True)
    seed(server)
    wrong = "n0t-the-Pa55word"
    result = run_plan(server, env={"REGISTRY_AUTH_FILE": auth_file(tmp_path, "alice", wrong)})
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused" in lines[0] and "alice" in lines[0]
    assert wrong not in result.output


def test_missing_tag_names_the_image(registry: RegistryServer) -> None:
    seed(registry)
    result = CliRunner().invoke(main, [
        "plan", *image_args(), "--image", "nvcr.io/nvidia/gpu-operator:v99.0.0",
        "--source-endpoint", f"nvcr.io={registry.url}", "--resolve", "--format", "json"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "nvcr.io/nvidia/gpu-operator:v99.0.0" in lines[0] and "not found" in lines[0]
    assert result.stdout == ""


def plan_of(*names: str) -> Plan:
    return Plan(images=[PlanImage(source=f"nvcr.io/{n}", destination=None, component="extra", reason="test")
                        for n in names])


def test_resolve_plan_library(registry: RegistryServer) -> None:
    seed(registry)
    plan = plan_of(*IMAGES)
    assert resolve_plan(plan, Endpoints.from_options([f"nvcr.io={registry.url}"])) is plan
    assert plan.resolved
    for img, content in zip(plan.images, IMAGES.values(), strict=True):
        assert img.digest == content.digest
        assert img.size == expected_size(content)
        assert img.platforms == (BOTH if isinstance(content, Index) else [])

    with pytest.raises(NotFoundError, match="nvcr.io/nvidia/nothing:v1"):
        resolve_plan(plan_of("nvidia/nothing:v1"), Endpoints.from_options([f"nvcr.io={registry.url}"]))


def test_resolve_plan_library_explicit_credentials(registry_factory: Callable[..., RegistryServer]) -> None:
    server = registry_factory(auth=True)
    seed(server)
    endpoints = Endpoints.from_options([f"nvcr.io={server.url}"])
    plan = plan_of(*IMAGES)
    store = CredentialStore(explicit={"nvcr.io": Credentials("alice", PASSWORD)}, files=[])
    resolve_plan(plan, endpoints, store)
    assert [img.digest for img in plan.images] == [c.digest for c in IMAGES.values()]

    unresolved = plan_of(*IMAGES)
    with pytest.raises(AuthError, match="credentials"):
        resolve_plan(unresolved, endpoints, CredentialStore(files=[]))
    assert not unresolved.resolved
