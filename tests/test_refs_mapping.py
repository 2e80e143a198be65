"""Image references and destination mapping: pure functions, no I/O."""

from __future__ import annotations

import pytest

from mirrorkit.errors import MappingCollisionError, ReferenceFormatError
from mirrorkit.mapping import check_collisions, map_ref
from mirrorkit.refs import Ref, RegistryTarget

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "expected"), [
    ("ubuntu", "docker.io/library/ubuntu:latest"),
    ("kubesphere/node-feature-discovery:v0.14.2", "docker.io/kubesphere/node-feature-discovery:v0.14.2"),
    ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
    ("nvcr.io/nvidia/driver:550-5.15.0-131-generic-ubuntu22.04",
     "nvcr.io/nvidia/driver:550-5.15.0-131-generic-ubuntu22.04"),
    ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
    (f"nvcr.io/nvidia/gpu-operator@{DIGEST}", f"nvcr.io/nvidia/gpu-operator@{DIGEST}"),
    (f"nvcr.io/nvidia/gpu-operator:v1@{DIGEST}", f"nvcr.io/nvidia/gpu-operator:v1@{DIGEST}"),
    ("127.0.0.1:5001/nvidia/cuda:12.3.2-base-ubi8", "127.0.0.1:5001/nvidia/cuda:12.3.2-base-ubi8"),
])
def test_parse_normalises(text: str, expected: str) -> None:
    assert str(Ref.parse(text)) == expected


@pytest.mark.parametrize("text", [
    "", "nvcr.io/Nvidia/case", "nvcr.io/nvidia/driver:bad tag", "nvcr.io/nvidia/driver@sha256:xyz",
    "nvcr.io/nvidia/driver@md5:" + "a" * 32, "nvcr.io//driver", "nvcr.io/nvidia/driver:" + "x" * 200,
    "nvcr.io/nvidia/dri$ver:1", "-bad.io/x:1",
])
def test_parse_refuses_illegal(text: str) -> None:
    with pytest.raises(ReferenceFormatError):
        Ref.parse(text)


def test_registry_target() -> None:
    t = RegistryTarget.parse("harbor.example.com:8443/gpu/ops")
    assert (t.host, t.prefix) == ("harbor.example.com:8443", "gpu/ops")
    assert str(t) == "harbor.example.com:8443/gpu/ops"
    for bad in ("https://harbor.example.com", "", "host/UPPER", "ho st"):
        with pytest.raises(ReferenceFormatError):
            RegistryTarget.parse(bad)


@pytest.mark.parametrize(("strategy", "expected"), [
    ("prefix", "dockerhub.kubekey.local/kse/nvidia/gpu-operator:v23.9.2"),
    ("keep-host", "dockerhub.kubekey.local/kse/nvcr.io/nvidia/gpu-operator:v23.9.2"),
    ("flatten", "dockerhub.kubekey.local/kse/nvidia-gpu-operator:v23.9.2"),
])
def test_mapping_strategies(strategy: str, expected: str) -> None:
    src = Ref.parse("nvcr.io/nvidia/gpu-operator:v23.9.2")
    assert str(map_ref(src, RegistryTarget.parse("dockerhub.kubekey.local/kse"), strategy)) == expected


def test_mapping_keeps_digest_only_sources_addressable() -> None:
    src = Ref.parse(f"nvcr.io/nvidia/gpu-operator@{DIGEST}")
    dest = map_ref(src, RegistryTarget.parse("reg.local"), "prefix")
    assert str(dest) == f"reg.local/nvidia/gpu-operator@{DIGEST}"


def test_collision_names_both_sources() -> None:
    target = RegistryTarget.parse("reg.local")
    a = Ref.parse("nvcr.io/nvidia/cuda:12.3.2-base-ubi8")
    b = Ref.parse("docker.io/nvidia/cuda:12.3.2-base-ubi8")
    pairs = [(a, map_ref(a, target, "prefix")), (b, map_ref(b, target, "prefix"))]
    with pytest.raises(MappingCollisionError) as err:
        check_collisions(pairs)
    assert str(a) in str(err.value) and str(b) in str(err.value)
    check_collisions([(a, map_ref(a, target, "keep-host")), (b, map_ref(b, target, "keep-host"))])


def test_flatten_collision_detected() -> None:
    target = RegistryTarget.parse("reg.local/p")
    a = Ref.parse("nvcr.io/nvidia/k8s-device-plugin:v1")
    b = Ref.parse("nvcr.io/nvidia-k8s/device-plugin:v1")
    with pytest.raises(MappingCollisionError):
        check_collisions([(r, map_ref(r, target, "flatten")) for r in (a, b)])
