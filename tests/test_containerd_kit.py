"""A real containerd pulls nvcr.io names from a prefixed loopback mirror via hosts.toml.

Every hosts.toml here sets ``server`` to an unused loopback port: without it
containerd's last fallback is ``https://nvcr.io`` itself.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kit.containerd import (
    DEFAULT_BINARY,
    DEFAULT_CTR,
    Containerd,
    ContainerdError,
    write_hosts_toml,
)
from kit.images import Image, Index, make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer, free_port

UPSTREAM = "nvcr.io"
PREFIX = "mirror"
REPO = "nvidia/gpu-operator"
TAG = "v23.9.2"
REF = f"{UPSTREAM}/{REPO}:{TAG}"


@pytest.fixture
def containerd() -> Iterator[Containerd]:
    for name in (DEFAULT_BINARY, DEFAULT_CTR):
        if shutil.which(name) is None:
            pytest.fail(f"{name} is not installed (Debian package 'containerd')")
    with Containerd() as daemon:
        yield daemon


@pytest.fixture
def mirror(registry_factory: Callable[..., RegistryServer]) -> tuple[RegistryServer, Index]:
    """A registry holding a 2-arch index at ``mirror/nvidia/gpu-operator:v23.9.2``."""
    registry = registry_factory(access_log=True)
    images = [
        make_image(
            f"ctd/{arch}",
            [make_layer("ctd/base", 16 << 10), make_layer(f"ctd/{arch}", 8 << 10)],
            ("linux", arch),
        )
        for arch in ("amd64", "arm64")
    ]
    index = make_index(images)
    assert push_image(registry.url, f"{PREFIX}/{REPO}", TAG, index) == index.digest
    return registry, index


def _loopback_dead_end() -> str:
    return f"http://127.0.0.1:{free_port()}"


def _requests(registry: RegistryServer) -> list[str]:
    """Access-log lines of containerd's requests (seeding used python-httpx)."""
    return [line for line in registry.log_path.read_text().splitlines() if '"containerd/' in line]


def _digests(*images: Image) -> set[str]:
    return {d for image in images for d in (image.digest, *(b.digest for b in image.blobs()))}


def test_pull_through_prefixed_mirror(
    containerd: Containerd, mirror: tuple[RegistryServer, Index], tmp_path: Path
) -> None:
    registry, index = mirror
    amd64, arm64 = index.images
    hosts = tmp_path / "certs.d"
    write_hosts_toml(hosts, UPSTREAM, registry.url, PREFIX, server=_loopback_dead_end())

    result = containerd.pull(REF, hosts_dir=hosts, platform="linux/amd64")

    assert result.returncode == 0
    assert containerd.images() == [REF]
    assert containerd.image_digest(REF) == index.digest
    requests = _requests(registry)
    assert requests, registry.log_tail()
    assert all(f"/v2/{PREFIX}/{REPO}/" in line for line in requests), requests
    assert any(f"/manifests/{TAG}" in line for line in requests)
    # The amd64 child and its blobs were fetched; arm64's own content was not.
    stored = containerd.content_digests()
    assert _digests(amd64) | {index.digest} <= stored
    assert not (_digests(arm64) - _digests(amd64)) & stored
    assert not any(arm64.digest in line for line in requests)


def test_pull_all_platforms(containerd: Containerd, mirror: tuple[RegistryServer, Index], tmp_path: Path) -> None:
    registry, index = mirror
    hosts = tmp_path / "certs.d"
    write_hosts_toml(hosts, UPSTREAM, registry.url, PREFIX, server=_loopback_dead_end())

    containerd.pull(REF, hosts_dir=hosts, all_platforms=True)

    assert containerd.image_digest(REF) == index.digest
    assert _digests(*index.images) | {index.digest} <= containerd.content_digests()
    assert all(f"/v2/{PREFIX}/{REPO}/" in line for line in _requests(registry))


def test_pull_fails_when_mirror_is_down(containerd: Containerd, tmp_path: Path) -> None:
    hosts = tmp_path / "certs.d"
    write_hosts_toml(hosts, UPSTREAM, _loopback_dead_end(), PREFIX, server=_loopback_dead_end())

    with pytest.raises(ContainerdError, match="connection refused"):
        containerd.pull(REF, hosts_dir=hosts, platform="linux/amd64")
    result = containerd.pull(REF, hosts_dir=hosts, check=False)
    assert result.returncode != 0
    # Both the mirror and the fallback server were tried, and nothing else.
    tried = set(re.findall(r'host="([^"]+)"', result.stderr))
    assert len(tried) == 2 and all(h.startswith("127.0.0.1:") for h in tried), result.stderr
    assert containerd.images() == []


def test_pull_fails_without_prefix(
    containerd: Containerd, mirror: tuple[RegistryServer, Index], tmp_path: Path
) -> None:
    """The mirror answers 404 for the unprefixed path; the fallback server is a dead end."""
    registry, _ = mirror
    hosts = tmp_path / "certs.d"
    write_hosts_toml(hosts, UPSTREAM, registry.url, server=_loopback_dead_end())

    with pytest.raises(ContainerdError, match="StatusNotFound"):
        containerd.pull(REF, hosts_dir=hosts, platform="linux/amd64")
    assert containerd.images() == []
    assert any(f"/v2/{REPO}/manifests/{TAG}" in line for line in _requests(registry))


def test_write_hosts_toml(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    path = write_hosts_toml(
        tmp_path, "nvcr.io", "https://127.0.0.1:5000/", "/mirror/", skip_verify=True, ca=ca, server="http://127.0.0.1:9"
    )
    assert path == tmp_path / "nvcr.io" / "hosts.toml"
    assert tomllib.loads(path.read_text()) == {
        "server": "http://127.0.0.1:9",
        "host": {
            "https://127.0.0.1:5000/v2/mirror": {
                "capabilities": ["pull", "resolve"],
                "override_path": True,
                "skip_verify": True,
                "ca": str(ca),
            }
        },
    }
    plain = tomllib.loads(write_hosts_toml(tmp_path, "docker.io", "http://127.0.0.1:5000").read_text())
    assert plain == {"host": {"http://127.0.0.1:5000": {"capabilities": ["pull", "resolve"]}}}


def test_stop_removes_everything() -> None:
    daemon = Containerd().start()
    workdir = daemon.workdir
    assert workdir is not None and Path(daemon.address).is_socket()
    assert daemon.images() == []
    daemon.stop()
    assert not daemon.running
    assert not workdir.exists()
