"""Bundles built in process for tests and benchmarks: no registry, no skopeo, deterministic content.

``make_bundle`` writes a real bundle with mirrorkit's own writer (so the reader checks it
as it would any bundle) holding testkit images, referrers and a cosign-style fallback tag,
a Helm chart as pull-bundle carries it, and an apt repository's files as ``package_repos``
(the packages pipeline fills these in for real; here they are a few files by hand).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from kit.images import (
    OCI_MANIFEST,
    Blob,
    Image,
    Index,
    canonical_json,
    make_image,
    make_index,
    make_layer,
)
from mirrorkit.bundle.writer import write_bundle
from mirrorkit.lock import Lock, LockArtifact, LockBlob, LockImage
from mirrorkit.lockpackages import LockPackageFile, LockPackageRepo
from mirrorkit.oci.layout import BlobStore
from mirrorkit.plan import Plan, PlanImage
from mirrorkit.transfer import charts

REGISTRY = "registry.local:5000/kse"
SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM_TYPE = "application/spdx+json"
EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
CHART_YAML = "apiVersion: v2\nname: gpu-operator\nversion: v23.9.2\nappVersion: v23.9.2\n"


@dataclass
class Built:
    volumes: list[Path]
    images: dict[str, Image | Index]                 # source reference -> content
    referrers: dict[str, list[str]] = field(default_factory=dict)   # subject digest -> referrer digests
    artifact_types: dict[str, str] = field(default_factory=dict)    # referrer digest -> artifactType
    fallback_tag: tuple[str, str] = ("", "")         # (tag, digest) of the cosign-style signature
    chart: charts.HelmChart | None = None
    packages: dict[str, bytes] = field(default_factory=dict)        # "<os>/<name>/<path>" -> bytes
    blobs: dict[str, bytes] = field(default_factory=dict)


def default_images(big: int = 0) -> dict[str, Image | Index]:
    """A GPU-Operator-shaped handful: a 2-arch OCI index, a Docker manifest list, a single image.
    ``big`` adds one uncompressed layer of that many bytes to the single image (benchmarks)."""
    base = {a: make_layer(f"sv/base/{a}", 24 << 10) for a in ("amd64", "arm64")}
    dbase = {a: make_layer(f"sv/dbase/{a}", 16 << 10, docker=True) for a in ("amd64", "arm64")}
    single_layers = [base["amd64"], make_layer("sv/bb", 4 << 10)]
    if big:
        single_layers.append(make_layer("sv/big", big, compress=False))
    return {
        "nvcr.io/nvidia/gpu-operator:v23.9.2": make_index([
            make_image(f"sv/op/{a}", [base[a], make_layer(f"sv/op/{a}", 8 << 10)], ("linux", a)) for a in base]),
        "nvcr.io/nvidia/cloud-native/k8s-device-plugin:v0.14.5": make_index([
            make_image(f"sv/dp/{a}", [dbase[a], make_layer(f"sv/dp/{a}", 8 << 10, docker=True)], ("linux", a),
                       docker=True) for a in dbase]),
        "docker.io/library/busybox:1.36": make_image("sv/bb", single_layers),
    }


def _artifact(subject: Image | Index | None, artifact_type: str, payload: bytes,
              annotations: dict[str, str]) -> tuple[bytes, list[Blob]]:
    config = Blob.of(EMPTY_CONFIG, EMPTY_CONFIG_TYPE)
    layer = Blob.of(payload, artifact_type)
    doc: dict = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                 "config": config.descriptor(), "layers": [layer.descriptor()], "annotations": annotations}
    if subject is not None:
        doc["subject"] = {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size}
    return canonical_json(doc), [config, layer]


def apt_files() -> dict[str, bytes]:
    """A tiny apt repository's files, paths as the distribution has them (a ``+`` included)."""
    packages = b"Package: libstdc++6\nVersion: 12.2.0-14\nArchitecture: amd64\n" \
               b"Filename: pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb\n"
    return {
        "dists/bookworm/InRelease": b"-----BEGIN PGP SIGNED MESSAGE-----\nOrigin: Debian\n",
        "dists/bookworm/main/binary-amd64/Packages.gz": gzip.compress(packages, mtime=0),
        "pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb": hashlib.sha256(b"deb").digest() * 2048,
    }


def chart_archive() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("gpu-operator/Chart.yaml", CHART_YAML.encode()),
                           ("gpu-operator/values.yaml", b"operator:\n  image: gpu-operator\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def make_bundle(work: Path, output: Path, *, images: dict[str, Image | Index] | None = None,
                split: int | None = None, registry: str | None = REGISTRY, extras: bool = True,
                bundle_id: str = "serve-test", apt: dict[str, bytes] | None = None,
                compress: str | None = None) -> Built:
    """Write a bundle at ``output`` (``split``: volumes of at most that many bytes); returns what it holds.

    ``apt``: the carried apt repository's files (path -> bytes) instead of ``apt_files()``."""
    images = images if images is not None else default_images()
    store = BlobStore(work)
    built = Built([], images)
    lock_images, plan_images = [], []
    blobs: dict[str, bytes] = {}
    sizes: dict[str, int] = {}

    def keep(data: bytes) -> str:
        digest = store.add_bytes(data)
        blobs[digest] = data
        sizes[digest] = len(data)
        return digest

    def keep_blob(blob: Blob) -> None:
        """A blob whose bytes are not held in memory (a benchmark's 1 GiB layer) is already in the store."""
        if len(blob.data) != blob.size and store.has(blob.digest):
            sizes[blob.digest] = blob.size
        else:
            keep(blob.data)

    for source, content in images.items():
        keep(content.data if isinstance(content, Index) else content.manifest)
        children = list(content.images) if isinstance(content, Index) else []
        for child in children:
            keep(child.manifest)
        for blob in content.blobs():
            keep_blob(blob)
        repo = source.split("/", 1)[1].rsplit(":", 1)[0]
        destination = f"{registry}/{repo}:{source.rsplit(':', 1)[1]}" if registry else None
        plan_images.append(PlanImage(source=source, destination=destination, component="test", reason="test",
                                     digest=content.digest))
        lock_images.append(LockImage(source=source, destination=destination, digest=content.digest,
                                     media_type=content.media_type,
                                     manifests=[c.digest for c in children],
                                     blobs=[b.digest for b in content.blobs()]))
    artifacts: list[LockArtifact] = []
    lock_repos: list[LockPackageRepo] = []
    operator_source = "nvcr.io/nvidia/gpu-operator:v23.9.2"
    if extras and operator_source in images:     # its referrers and cosign-style signature
        subject = images[operator_source]
        for artifact_type, payload in ((SIGNATURE_TYPE, b"signature"), (SBOM_TYPE, b'{"spdxVersion":"SPDX-2.3"}')):
            manifest, parts = _artifact(subject, artifact_type, payload, {"org.example.kind": artifact_type})
            digest = keep(manifest)
            for part in parts:
                keep(part.data)
            built.referrers.setdefault(subject.digest, []).append(digest)
            built.artifact_types[digest] = artifact_type
            artifacts.append(LockArtifact(subject.digest, digest, OCI_MANIFEST, artifact_type, None, operator_source,
                                          None))
        manifest, parts = _artifact(None, SIGNATURE_TYPE, b"cosign tag signature", {})
        digest = keep(manifest)
        for part in parts:
            keep(part.data)
        tag = subject.digest.replace(":", "-") + ".sig"
        built.fallback_tag = (tag, digest)
        artifacts.append(LockArtifact(subject.digest, digest, OCI_MANIFEST, SIGNATURE_TYPE, tag, operator_source,
                                      None))
    if extras:
        files = []
        for path, data in (apt if apt is not None else apt_files()).items():
            digest = keep(data)
            files.append(LockPackageFile(path, digest.removeprefix("sha256:"), len(data),
                                         "package" if path.endswith(".deb") else "metadata"))
            built.packages[f"debian12/bookworm/{path}"] = data
        lock_repos.append(LockPackageRepo(os="debian12", name="bookworm", family="apt",
                                          source="http://deb.debian.org/debian", repo_file="mirror.list",
                                          repo_text="deb @URL@ bookworm main\n", signed_by="", files=files))
    lock = Lock(id=bundle_id, created="2024-05-01T12:00:00Z", generator="test",
                plan=Plan(images=plan_images, registry=registry), images=lock_images,
                blobs=[LockBlob(d, n) for d, n in sorted(sizes.items())], artifacts=artifacts,
                package_repos=lock_repos)
    index = [{"mediaType": c.media_type, "digest": c.digest, "size": c.size} for c in images.values()]
    store.write_index(index)
    if extras:
        chart = charts.build_chart(chart_archive(), "gpu-operator-v23.9.2.tgz")
        charts.add_to_bundle(store, lock, [chart], registry)
        built.chart = chart
        blobs.update(dict(chart.blobs()))
    built.blobs = blobs
    built.volumes = write_bundle(work, lock, output, split=split, compress=compress)
    return built
