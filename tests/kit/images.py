"""Deterministic builders of real OCI (and Docker schema2) image content.

Everything here is pure: the same arguments always give the same bytes, hence the
same digests, so tests can assert exact digests and a benchmark can rebuild its
data set instead of storing it.  JSON is serialised with sorted keys and no
whitespace, tars carry fixed metadata and gzip streams carry mtime=0.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

DOCKER_MEDIA_TYPES = frozenset(
    {DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LAYER_GZIP}
)

Platform = tuple[str, str]
DEFAULT_PLATFORMS: tuple[Platform, ...] = (("linux", "amd64"), ("linux", "arm64"))

_CHUNK = 8 << 20


def canonical_json(obj: Any) -> bytes:
    """Serialise so that equal objects always give equal bytes (and digests)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """A content-addressed blob; ``diff_id`` is set for layers (digest of the plain tar)."""

    digest: str
    size: int
    media_type: str
    data: bytes = field(repr=False, compare=False)
    diff_id: str | None = None

    @classmethod
    def of(cls, data: bytes, media_type: str, diff_id: str | None = None) -> Blob:
        return cls(sha256_digest(data), len(data), media_type, data, diff_id)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Image:
    """One platform's manifest plus everything it references."""

    manifest: bytes = field(repr=False)
    digest: str
    media_type: str
    config: Blob
    layers: tuple[Blob, ...]
    platform: Platform

    @property
    def size(self) -> int:
        return len(self.manifest)

    def blobs(self) -> tuple[Blob, ...]:
        """Config then layers; a fixed order keeps push logs and benchmarks comparable."""
        return (self.config, *self.layers)

    def descriptor(self) -> dict[str, Any]:
        os_, arch = self.platform
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
            "platform": {"architecture": arch, "os": os_},
        }


@dataclass(frozen=True)
class Index:
    """A multi-platform index (OCI) or manifest list (Docker) with its child images."""

    data: bytes = field(repr=False)
    digest: str
    media_type: str
    images: tuple[Image, ...]

    @property
    def size(self) -> int:
        return len(self.data)

    def blobs(self) -> tuple[Blob, ...]:
        """Unique blobs of all children: shared layers appear once."""
        return tuple(unique_blobs([self]).values())


def _pseudo_random(seed: str, size: int) -> bytes:
    # shake_256 is fast (C, ~200 MB/s), stable across Python versions (unlike
    # random.randbytes) and incompressible, so layer sizes stay what was asked for.
    out = bytearray()
    counter = 0
    while len(out) < size:
        want = min(_CHUNK, size - len(out))
        out += hashlib.shake_256(f"{seed}\0{counter}".encode()).digest(want)
        counter += 1
    return bytes(out)


def _tar_one_file(name: str, content: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def make_layer(
    seed: str,
    size: int,
    *,
    compress: bool = True,
    compresslevel: int = 0,
    docker: bool = False,
) -> Blob:
    """A layer tar holding one file of ``size`` pseudo-random bytes derived from ``seed``.

    By default the tar is gzip-compressed, like nearly every upstream layer, so that
    digest != diff_id and media types say ``+gzip``.  The content is random and
    cannot shrink, so the default ``compresslevel=0`` writes stored deflate blocks:
    still a valid gzip stream every tool can read, at ~10x the speed of level 1
    (which matters for the hundreds of MB ``make bench`` builds).  ``compress=False``
    gives a plain tar layer instead.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    name = "data/" + hashlib.sha256(seed.encode()).hexdigest()[:16] + ".bin"
    tar = _tar_one_file(name, _pseudo_random(seed, size))
    diff_id = sha256_digest(tar)
    if not compress:
        return Blob.of(tar, DOCKER_LAYER if docker else OCI_LAYER, diff_id)
    data = gzip.compress(tar, compresslevel=compresslevel, mtime=0)
    return Blob.of(data, DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP, diff_id)


def make_image(
    config_seed: str,
    layers: Sequence[Blob],
    platform: Platform = ("linux", "amd64"),
    *,
    docker: bool = False,
) -> Image:
    """An image config + manifest for ``layers``; ``config_seed`` makes configs distinct.

    Two images with the same layers but different seeds get different configs and so
    different manifest digests, like rebuilt upstream images do.
    """
    for layer in layers:
        if layer.diff_id is None:
            raise ValueError(f"{layer.digest} is not a layer (no diff_id)")
        if (layer.media_type in DOCKER_MEDIA_TYPES) != docker:
            kind = "Docker" if docker else "OCI"
            raise ValueError(f"layer {layer.digest} has media type {layer.media_type}, not {kind}")
    os_, arch = platform
    config = {
        "architecture": arch,
        "os": os_,
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": {"io.kit.seed": config_seed},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"testkit {config_seed}"}],
    }
    config_blob = Blob.of(canonical_json(config), DOCKER_CONFIG if docker else OCI_CONFIG)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": config_blob.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        }
    )
    return Image(
        manifest, sha256_digest(manifest), media_type, config_blob, tuple(layers), platform
    )


def make_index(images: Sequence[Image]) -> Index:
    """An OCI index, or a Docker manifest list when the children are Docker manifests."""
    if not images:
        raise ValueError("an index needs at least one image")
    kinds = {image.media_type for image in images}
    if len(kinds) != 1:
        raise ValueError(f"cannot mix manifest media types in one index: {sorted(kinds)}")
    media_type = DOCKER_MANIFEST_LIST if kinds == {DOCKER_MANIFEST} else OCI_INDEX
    data = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [image.descriptor() for image in images],
        }
    )
    return Index(data, sha256_digest(data), media_type, tuple(images))


def unique_blobs(contents: Iterable[Image | Index]) -> dict[str, Blob]:
    """Digest -> blob over many images/indexes, each shared blob once (first-seen order)."""
    seen: dict[str, Blob] = {}
    for content in contents:
        images = content.images if isinstance(content, Index) else (content,)
        for image in images:
            for blob in image.blobs():
                seen.setdefault(blob.digest, blob)
    return seen


# Repository paths and tags shaped like the NVIDIA GPU Operator's image set.
GPU_OPERATOR_REFS: tuple[tuple[str, str], ...] = (
    ("nvidia/gpu-operator", "v24.3.0"),
    ("nvidia/cloud-native/gpu-operator-validator", "v24.3.0"),
    ("nvidia/driver", "550.54.15-ubuntu22.04"),
    ("nvidia/driver", "550.54.15-rhel9.4"),
    ("nvidia/k8s/container-toolkit", "v1.15.0-ubuntu20.04"),
    ("nvidia/k8s-device-plugin", "v0.15.0"),
    ("nvidia/cloud-native/dcgm", "3.3.5-1-ubuntu22.04"),
    ("nvidia/k8s/dcgm-exporter", "3.3.5-3.4.1-ubuntu22.04"),
    ("nvidia/cloud-native/k8s-mig-manager", "v0.7.0-ubuntu20.04"),
    ("nvidia/cloud-native/k8s-driver-manager", "v0.6.8"),
    ("nvidia/cloud-native/vgpu-device-manager", "v0.2.6"),
    ("nvidia/cloud-native/k8s-kata-manager", "v0.2.0"),
    ("nvidia/cloud-native/k8s-cc-manager", "v0.1.1"),
    ("nvidia/kubevirt-gpu-device-plugin", "v1.2.7"),
    ("nvidia/cuda", "12.4.1-base-ubi8"),
    ("nfd/node-feature-discovery", "v0.15.4"),
)


def gpu_operator_like_set(
    refs: Sequence[tuple[str, str]] = GPU_OPERATOR_REFS,
    layer_size: int = 64 << 10,
    *,
    base_size: int | None = None,
    platforms: Sequence[Platform] = DEFAULT_PLATFORMS,
    seed: str = "gpu-operator",
    compress: bool = True,
    docker: bool = False,
) -> dict[str, Index]:
    """Multi-arch indexes whose platform images share one base layer per architecture.

    Real operator images are mostly built on the same UBI/Ubuntu base, so a mirror that
    de-duplicates blobs moves far fewer bytes than the sum of image sizes; this set
    reproduces that shape.  Each image gets the shared base layer of its architecture
    (``base_size``, default ``layer_size``) plus one or two own layers of ``layer_size``
    (alternating), so unique bytes are about
    ``len(platforms) * (base_size + 1.5 * len(refs) * layer_size)``; e.g. 16 refs with
    ``layer_size=10 << 20`` give ~500 MB.  Returns ``"repo:tag" -> Index``.
    """
    bases = {
        platform: make_layer(
            f"{seed}/base/{'/'.join(platform)}",
            layer_size if base_size is None else base_size,
            compress=compress,
            docker=docker,
        )
        for platform in platforms
    }
    result: dict[str, Index] = {}
    for position, (repo, tag) in enumerate(refs):
        ref = f"{repo}:{tag}"
        if ref in result:
            raise ValueError(f"duplicate reference {ref}")
        images = []
        for platform in platforms:
            prefix = f"{seed}/{ref}/{'/'.join(platform)}"
            own = [
                make_layer(f"{prefix}/{n}", layer_size, compress=compress, docker=docker)
                for n in range(1 + position % 2)
            ]
            images.append(make_image(prefix, [bases[platform], *own], platform, docker=docker))
        result[ref] = make_index(images)
    return result
