"""What a bundle serves, worked out once from its verified lock: names, tags, manifests, blob pieces.

The server answers every request from this index and never parses a manifest while
serving: the manifests (small, hash-checked as they are read) are held in memory with the
media type they are served under; blobs stay in the volumes and are known by their pieces
on disk. A repository only serves the manifests and blobs its own images reference, as a
registry would. Names are the destination paths push-bundle would write without the
host, under the plan's registry prefix or the one given, so ``rewrite-config --registry
HOST:PORT/PREFIX`` output points at them unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mirrorkit.bundle.reader import BlobPiece, BundleReader
from mirrorkit.destinations import CHARTS_DIR, destination_pairs, first_by_source
from mirrorkit.errors import InputError
from mirrorkit.lock import Lock, lock_charts
from mirrorkit.oci.manifests import INDEX_TYPES, media_type
from mirrorkit.refs import RegistryTarget, is_digest

SERVE_HOST = "localhost"   # names are computed as for a registry at this host, which is then dropped
MAX_DEPTH = 4              # an index of indexes of ...: deeper nesting than any image tool writes


@dataclass(frozen=True)
class Manifest:
    """A manifest as stored in the bundle: served byte for byte under ``media_type``."""

    digest: str
    media_type: str
    data: bytes
    children: tuple[str, ...]   # an index's manifests
    blobs: tuple[str, ...]      # a manifest's config and layers
    subject: str | None
    descriptor: dict[str, Any]  # how the referrers API lists it

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass
class Repository:
    name: str
    tags: dict[str, str] = field(default_factory=dict)
    manifests: set[str] = field(default_factory=set)
    blobs: set[str] = field(default_factory=set)
    referrers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class PackageFile:
    digest: str
    size: int


@dataclass
class ServeIndex:
    bundle_id: str
    prefix: str
    repositories: dict[str, Repository] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    pieces: dict[str, list[BlobPiece]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    packages: dict[str, PackageFile] = field(default_factory=dict)   # "<os>/<name>/<path>" -> file
    images: int = 0
    charts: int = 0

    def blob_size(self, digest: str) -> int:
        return self.sizes[digest]


def default_prefix(lock: Lock) -> str:
    """The plan's ``--registry`` path prefix: where push-bundle would have put the images."""
    return RegistryTarget.parse(lock.plan.registry).prefix if lock.plan.registry else ""


def check_prefix(prefix: str) -> str:
    """``--prefix``: lowercase path components, slashes at the ends ignored; "" or "/" for none."""
    clean = prefix.strip().strip("/")
    if clean:
        try:
            RegistryTarget.parse(f"{SERVE_HOST}/{clean}")
        except InputError:
            raise InputError(f"--prefix {prefix!r}: expected lowercase path components such as 'mirror/gpu'") \
                from None
    return clean


def build_index(reader: BundleReader, prefix: str) -> ServeIndex:
    """Everything a verified bundle serves, under ``prefix``; raises InputError on a name clash."""
    return _Builder(reader, prefix).build()


class _Builder:
    def __init__(self, reader: BundleReader, prefix: str) -> None:
        self.reader = reader
        self.lock = reader.lock
        self.target = RegistryTarget(SERVE_HOST, prefix)
        self.index = ServeIndex(self.lock.id, prefix, sizes=dict(reader.blobs))
        self.hints = {img.digest: img.media_type for img in self.lock.images}

    def build(self) -> ServeIndex:
        lock = self.lock
        dest = destination_pairs(lock.plan, [(i.source, i.destination) for i in lock.images], self.target, None)
        for img in lock.images:
            ref = dest[(img.source, img.destination)]
            self.add(ref.repository, img.digest, ref.tag)
        self.index.images = len(lock.images)
        by_source = first_by_source(dest)
        for art in lock.artifacts:
            self.add(by_source[art.source].repository, art.digest, art.tag)
        for chart in lock_charts(lock):
            self.add(self.target.join(f"{CHARTS_DIR}/{chart.name}"), chart.digest, chart.tag)
            self.index.charts += 1
        for repo in lock.package_repos:
            for f in repo.files:
                self.index.packages[f"{repo.os}/{repo.name}/{f.path}"] = PackageFile("sha256:" + f.sha256, f.size)
        for digest in self.index.sizes:
            self.index.pieces[digest] = self.reader.locate(digest)
        return self.index

    def add(self, name: str, digest: str, tag: str | None) -> None:
        repo = self.index.repositories.setdefault(name, Repository(name))
        if tag is not None:
            other = repo.tags.setdefault(tag, digest)
            if other != digest:
                raise InputError(f"bundle {self.lock.id}: {name}:{tag} would serve two manifests, {other} and "
                                 f"{digest}; serve under another --prefix or mapping")
        self.walk(repo, digest, 0)

    def walk(self, repo: Repository, digest: str, depth: int) -> None:
        if digest in repo.manifests or digest not in self.index.sizes or depth > MAX_DEPTH:
            return          # seen, or a platform the bundle did not carry: asking for it gets a 404
        manifest = self.manifest(digest)
        repo.manifests.add(digest)
        repo.blobs.add(digest)
        repo.blobs.update(b for b in manifest.blobs if b in self.index.sizes)
        if manifest.subject is not None:
            listed = repo.referrers.setdefault(manifest.subject, [])
            if manifest.descriptor not in listed:
                listed.append(manifest.descriptor)
        for child in manifest.children:
            self.walk(repo, child, depth + 1)

    def manifest(self, digest: str) -> Manifest:
        known = self.index.manifests.get(digest)
        if known is not None:
            return known
        data = self.reader.read_small(digest)       # hash-checked as it is read
        where = f"bundle {self.lock.id}: manifest {digest}"
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            raise InputError(f"{where} is not valid JSON") from None
        if not isinstance(doc, dict):
            raise InputError(f"{where} is not a JSON object")
        kind = media_type(doc) if isinstance(doc.get("mediaType"), str) else media_type(doc, self.hints.get(digest, ""))
        children = _digests(doc.get("manifests"), where)
        blobs = _digests([doc["config"]] if "config" in doc else [], where) + _digests(doc.get("layers"), where)
        subject = doc.get("subject")
        subject_digest = _digests([subject], where)[0] if subject is not None else None
        config: dict[str, Any] = doc["config"] if isinstance(doc.get("config"), dict) else {}
        artifact_type = doc.get("artifactType") or config.get("mediaType") or ""
        descriptor: dict[str, Any] = {"mediaType": kind, "digest": digest, "size": len(data)}
        if isinstance(artifact_type, str) and artifact_type:
            descriptor["artifactType"] = artifact_type
        if isinstance(doc.get("annotations"), dict) and doc["annotations"]:
            descriptor["annotations"] = doc["annotations"]
        manifest = Manifest(digest, kind, data, tuple(children), tuple(blobs), subject_digest, descriptor)
        self.index.manifests[digest] = manifest
        return manifest


def _digests(value: Any, where: str) -> list[str]:
    """The digests of a descriptor list (absent: none); a malformed one is refused, not skipped."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{where}: a descriptor list is not a list")
    out = []
    for entry in value:
        digest = entry.get("digest") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not is_digest(digest):
            raise InputError(f"{where}: a descriptor has no valid sha256 digest")
        out.append(digest)
    return out
