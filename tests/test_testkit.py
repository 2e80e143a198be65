"""The test kit against real tools: if skopeo reads what we push, so will mirrorkit's peers."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from kit.images import (
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    Index,
    gpu_operator_like_set,
    make_image,
    make_index,
    make_layer,
    unique_blobs,
)
from kit.push import push_image
from kit.registryd import RegistryServer


def two_arch_index(docker: bool = False) -> Index:
    """amd64 and arm64 images sharing one layer, each with an own layer."""
    shared = make_layer("shared-base", 48 << 10, docker=docker)
    images = [
        make_image(
            f"app/{arch}",
            [shared, make_layer(f"own/{arch}", 16 << 10, docker=docker)],
            ("linux", arch),
            docker=docker,
        )
        for arch in ("amd64", "arm64")
    ]
    return make_index(images)


def skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker"])
def test_skopeo_reads_back_identical_index(registry: RegistryServer, docker: bool) -> None:
    index = two_arch_index(docker)
    assert index.media_type == (DOCKER_MANIFEST_LIST if docker else OCI_INDEX)
    assert push_image(registry.url, "team/app", "v1", index) == index.digest

    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/team/app:v1")
    assert raw.stdout == index.data
    # Children are addressable by digest too, byte for byte.
    child = index.images[1]
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        f"docker://{registry.host}/team/app@{child.digest}",
    )
    assert raw.stdout == child.manifest


def test_skopeo_copy_all_stores_shared_blob_once(registry: RegistryServer, tmp_path: Path) -> None:
    index = two_arch_index()
    shared = index.images[0].layers[0]
    assert shared is index.images[1].layers[0]
    push_image(registry.url, "team/app", "v1", index)

    layout = tmp_path / "layout"
    skopeo(
        "copy",
        "--all",
        "--src-tls-verify=false",
        f"docker://{registry.host}/team/app:v1",
        f"oci:{layout}:v1",
    )

    top = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in top["manifests"]] == [index.digest]
    files = {f"sha256:{p.name}": p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}
    for name, data in files.items():
        assert "sha256:" + hashlib.sha256(data).hexdigest() == name
    expected = {index.digest, *(i.digest for i in index.images), *unique_blobs([index])}
    assert set(files) == expected
    # 2 manifests + 2 configs + 3 layers (the shared one once) + the index.
    assert len(files) == 8
    assert files[shared.digest] == shared.data


def test_htpasswd_registry_requires_credentials(
    registry_factory: Callable[..., RegistryServer],
) -> None:
    server = registry_factory(auth=True)
    with httpx.Client(timeout=5) as client:
        anonymous = client.get(f"{server.url}/v2/")
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
        assert client.get(f"{server.url}/v2/", auth=("alice", "wrong")).status_code == 401
        assert client.get(f"{server.url}/v2/", auth=server.auth).status_code == 200

    image = make_image("solo", [make_layer("solo", 1024)])
    assert push_image(server.url, "private/solo", "v1", image, auth=server.auth) == image.digest
    with httpx.Client(timeout=5, auth=server.auth) as client:
        got = client.get(
            f"{server.url}/v2/private/solo/manifests/v1", headers={"Accept": image.media_type}
        )
    assert got.status_code == 200 and got.content == image.manifest


def test_restart_keeps_port_and_content(registry: RegistryServer) -> None:
    image = make_image("keep", [make_layer("keep", 1024)])
    push_image(registry.url, "keep/me", "v1", image)
    url = registry.url
    registry.restart()
    assert registry.url == url
    got = httpx.get(f"{url}/v2/keep/me/manifests/v1", headers={"Accept": image.media_type})
    assert got.status_code == 200 and got.content == image.manifest


def test_builders_are_deterministic() -> None:
    first, second = two_arch_index(), two_arch_index()
    assert first.digest == second.digest and first.data == second.data
    assert [i.digest for i in first.images] == [i.digest for i in second.images]
    assert make_layer("a", 100).digest != make_layer("b", 100).digest
    assert (
        make_image("x", [make_layer("a", 10)]).digest
        != make_image("y", [make_layer("a", 10)]).digest
    )


def test_layer_is_a_real_gzip_tar_with_diff_id() -> None:
    import gzip
    import io
    import tarfile

    layer = make_layer("probe", 5000)
    tar = gzip.decompress(layer.data)
    assert layer.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest() != layer.digest
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        (member,) = archive.getmembers()
        assert member.size == 5000
    plain = make_layer("probe", 5000, compress=False)
    assert plain.digest == plain.diff_id == layer.diff_id


def test_gpu_operator_like_set_shares_base_per_arch() -> None:
    refs = [("nvidia/a", "v1"), ("nvidia/b", "v1"), ("nvidia/c", "v2")]
    indexes = gpu_operator_like_set(refs, layer_size=4096)
    assert list(indexes) == ["nvidia/a:v1", "nvidia/b:v1", "nvidia/c:v2"]
    bases = {img.platform: {img.layers[0].digest} for img in indexes["nvidia/a:v1"].images}
    for index in indexes.values():
        assert {img.platform for img in index.images} == {("linux", "amd64"), ("linux", "arm64")}
        for img in index.images:
            assert img.layers[0].digest in bases[img.platform]
    layers = {b.digest for b in unique_blobs(indexes.values()).values() if b.diff_id}
    # 2 bases + per arch (1 + 2 + 1) own layers.
    assert len(layers) == 2 + 2 * 4
