"""Signatures, attestations, SBOMs and referrers carried beside the images, and checked on both sides.

The copy paths call this at three points: after reading the source manifests
(``carry_from_registry``: discover, fetch the small artifact graphs into the bundle
store and, with ``--verify-key``, judge every signature before any image bytes or
bundle are written), when the lock is built (``CarriedArtifacts.apply``), and on the
air-gapped side (``verify_lock`` from the bundle alone, then ``push_artifacts``).
Every manifest travels byte for byte, so cosign-style checks against the mirror
find the very signatures NVIDIA made.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mirrorkit.errors import InputError, NotFoundError, OperationError
from mirrorkit.lock import Lock, LockArtifact, LockBlob, LockVerification
from mirrorkit.oci import manifests
from mirrorkit.oci.client import INDEX_TYPES, RegistryClient
from mirrorkit.oci.layout import BlobStore
from mirrorkit.refs import Ref
from mirrorkit.trust.discover import Artifact, Discovery, fetch_small_blob
from mirrorkit.trust.keys import PublicKey
from mirrorkit.trust.verify import VerificationResult, verify_signatures

MAX_ARTIFACT_BLOB = 64 << 20
RESTRICTED_NOTE = ("the index's own signature does not cover the rewritten index; "
                   "its platform manifests keep theirs")


@dataclass
class SignatureOptions:
    """``--no-signatures`` turns carrying off; ``--verify-key`` makes every image prove its signature."""

    carry: bool = True
    keys: list[PublicKey] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.carry or bool(self.keys)


@dataclass(frozen=True)
class Subject:
    """One planned image as signatures see it."""

    source: str
    destination: str | None
    ref: Ref                       # the repository its artifacts are read from
    signed: tuple[str, ...]        # digests --verify-key demands a signature for
    carried: tuple[str, ...]       # digests whose artifacts travel

    @classmethod
    def of(cls, source: str, destination: str | None, ref: Ref, digest: str, planned: str | None,
           children: list[str]) -> Subject:
        """A platform-restricted image has a rewritten index nobody signed: its platform manifests
        (which keep their signatures) stand in for it."""
        if planned and planned != digest:
            return cls(source, destination, ref, tuple(children), tuple(children))
        return cls(source, destination, ref, (digest,), (digest, *children))


def subjects_of_lock(lock: Lock, where: Callable[[str], Ref] | None = None) -> list[Subject]:
    return [Subject.of(i.source, i.destination, where(i.source) if where else Ref.parse(i.source), i.digest,
                       i.planned_digest, i.manifests) for i in lock.images]


@dataclass
class CarriedArtifacts:
    """What carry_from_registry put in the store, ready to join the lock."""

    artifacts: list[LockArtifact] = field(default_factory=list)
    blobs: dict[str, int] = field(default_factory=dict)
    verification: VerificationResult | None = None
    notes: list[str] = field(default_factory=list)

    def apply(self, lock: Lock) -> None:
        have = {b.digest for b in lock.blobs}
        lock.blobs = sorted([*lock.blobs, *(LockBlob(d, s) for d, s in self.blobs.items() if d not in have)],
                            key=lambda b: b.digest)
        lock.artifacts = list(self.artifacts)
        lock.verifications = lock_verifications(self.verification)

    def digests(self) -> set[str]:
        return {a.digest for a in self.artifacts}


def lock_verifications(result: VerificationResult | None) -> list[LockVerification]:
    if result is None:
        return []
    return [LockVerification(v.digest, v.key_fingerprint, v.identity, result.verified_at)
            for v in result.verdicts if v.verified]


def _discover(client: RegistryClient, subjects: list[Subject], jobs: int) -> dict[str, list[Artifact]]:
    """source -> artifacts; one Discovery (one tag list, one referrers probe) per repository."""
    groups: dict[str, list[Subject]] = {}
    for s in subjects:
        groups.setdefault(s.ref.name, []).append(s)

    def one(group: list[Subject]) -> list[tuple[str, list[Artifact]]]:
        d = Discovery(client, group[0].ref)
        return [(s.source, [a for digest in s.carried for a in d.find(digest)]) for s in group]

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return {src: found for pairs in pool.map(one, groups.values()) for src, found in pairs}


def _fetch_graph(client: RegistryClient, store: BlobStore, ref: Ref, artifact: Artifact,
                 sizes: dict[str, int]) -> None:
    m = client.get_manifest(ref, artifact.digest)
    store.add_bytes(m.data)
    sizes[m.digest] = len(m.data)
    what = f"{ref.name}@{artifact.digest}"
    doc = manifests.parse(m.data, what)
    if manifests.is_index(doc, m.media_type):
        return   # a fallback tag index: the referrers it lists are artifacts of their own
    for digest, _ in manifests.image_blobs(doc, what):
        if not store.has(digest):
            store.add_bytes(fetch_small_blob(client, ref, digest, MAX_ARTIFACT_BLOB))
        sizes[digest] = store.size(digest)


def carry_from_registry(client: RegistryClient, store: BlobStore, subjects: list[Subject],
                        options: SignatureOptions, jobs: int = 4) -> CarriedArtifacts:
    """Discover and fetch every artifact into ``store``; with keys, refuse unsigned or invalid images.

    Raises OperationError (exit 1) listing every image that fails, before the caller
    copies image bytes or writes anything.
    """
    out = CarriedArtifacts()
    if not options.active or not subjects:
        return out
    found = _discover(client, subjects, jobs)
    refs = {s.source: s for s in subjects}
    for source, arts in found.items():
        s = refs[source]
        for art in arts:
            _fetch_graph(client, store, s.ref, art, out.blobs)
            out.artifacts.append(LockArtifact(art.subject, art.digest, art.media_type, art.artifact_type,
                                              art.tag, s.source, s.destination))
    if options.keys:
        out.verification = verify_artifacts(out.artifacts, subjects, options.keys, store.read)
        raise_on_failures(out.verification)
    if not options.carry:
        out.artifacts, out.blobs = [], {}
    return out


def verify_artifacts(artifacts: list[LockArtifact], subjects: list[Subject], keys: list[PublicKey],
                     read: Callable[[str], bytes]) -> VerificationResult:
    """Judge signatures from carried bytes alone (a bundle store, or a bundle on the air-gapped side)."""
    by_tag = {(a.source, a.tag): a.digest for a in artifacts if a.tag}

    def fetch_manifest(name: str, reference: str) -> bytes | None:
        digest = by_tag.get((name, reference))
        return read(digest) if digest else None

    return verify_signatures(fetch_manifest, lambda _name, digest: read(digest),
                             [(s.source, d) for s in subjects for d in s.signed], keys)


def verify_lock(lock: Lock, keys: list[PublicKey], read: Callable[[str], bytes]) -> VerificationResult:
    """Offline: every image of a bundle checked against its carried signatures; raises on any failure."""
    result = verify_artifacts(lock.artifacts, subjects_of_lock(lock), keys, read)
    raise_on_failures(result)
    return result


def verify_online(client: RegistryClient, subjects: list[tuple[Ref, str]], keys: list[PublicKey]) -> VerificationResult:
    """Against a registry (the mirror, for ``verify``): signatures where cosign would look for them."""
    def fetch_manifest(name: str, reference: str) -> bytes | None:
        try:
            return client.get_manifest(Ref.parse(name), reference).data
        except NotFoundError:
            return None

    def fetch_blob(name: str, digest: str) -> bytes:
        return fetch_small_blob(client, Ref.parse(name), digest)

    return verify_signatures(fetch_manifest, fetch_blob, [(ref.name, d) for ref, d in subjects], keys)


def raise_on_failures(result: VerificationResult) -> None:
    if not result.passed:
        lines = [v.describe() for v in result.failures]
        raise OperationError(f"signature verification failed for {len(lines)} of {len(result.verdicts)} image "
                             "digests: " + "; ".join(lines))


@dataclass
class PushedArtifacts:
    manifests: int = 0
    blobs: int = 0


def push_artifacts(client: RegistryClient, artifacts: list[LockArtifact], dest: dict[str, Ref],
                   read: Callable[[str], bytes], opener: Callable[[str], Callable[[], Any]],
                   sizes: dict[str, int]) -> PushedArtifacts:
    """Each artifact's blobs, then its manifest byte for byte: tag-schema ones under their tag,
    referrers by digest, fallback tag indexes last (the registry wants their children first)."""
    out = PushedArtifacts()
    data = {a.digest: read(a.digest) for a in artifacts}
    ordered = sorted(artifacts, key=lambda a: a.media_type in INDEX_TYPES or "manifests" in
                     manifests.parse(data[a.digest], a.digest))
    for art in ordered:
        target = dest[art.source]
        doc = manifests.parse(data[art.digest], f"artifact {art.digest} of {art.source}")
        if not manifests.is_index(doc, art.media_type):
            for digest, _ in manifests.image_blobs(doc, art.digest):
                if digest not in sizes:
                    raise InputError(f"artifact {art.digest} of {art.source} needs blob {digest}, which the "
                                     "bundle does not carry")
                if client.blob_exists(target, digest):
                    continue
                client.upload_blob(target.registry, target.repository, digest, sizes[digest], opener(digest))
                out.blobs += 1
        media_type = art.media_type or str(doc.get("mediaType") or "application/vnd.oci.image.manifest.v1+json")
        client.put_manifest(target.registry, target.repository, art.tag or art.digest, data[art.digest], media_type)
        out.manifests += 1
    return out


def bytes_opener(read: Callable[[str], bytes]) -> Callable[[str], Callable[[], Any]]:
    return lambda digest: (lambda: io.BytesIO(read(digest)))


def signed_at_destination(client: RegistryClient, plan: Any, lock: Lock | None, dest: dict[str, Ref],
                          keys: list[PublicKey]) -> VerificationResult:
    """``verify --verify-key``: each image's signature read from the mirror itself, as a cluster would."""
    pairs: list[tuple[Ref, str]] = []
    if lock is not None:
        pairs = [(s.ref, d) for s in subjects_of_lock(lock, lambda src: dest[src]) for d in s.signed]
    else:
        for img in plan.images:
            digest = img.digest or client.manifest_digest(dest[img.source])
            if digest:                       # a missing image is reported by the digest check already
                pairs.append((dest[img.source], digest))
    return verify_online(client, pairs, keys)


@dataclass
class MirrorCarry:
    """Registry to registry: artifacts staged in a scratch store between the source check and the push."""

    store: BlobStore
    carried: CarriedArtifacts

    def push(self, client: RegistryClient, dest: dict[str, Ref]) -> PushedArtifacts:
        return push_artifacts(client, self.carried.artifacts, dest, self.store.read, bytes_opener(self.store.read),
                              self.carried.blobs)


def stage_for_mirror(client: RegistryClient, store: BlobStore, images: list[tuple[str, str | None, Ref, str]],
                     options: SignatureOptions, jobs: int = 4) -> MirrorCarry:
    """(source, destination, source ref, digest) per image: children listed, artifacts fetched, keys checked."""
    subjects = []
    for source, destination, ref, digest in images:
        top = client.get_manifest(ref, digest)
        doc = manifests.parse(top.data, f"{source}@{digest}")
        kids = [c.digest for c in manifests.children(doc, source)] if manifests.is_index(doc, top.media_type) else []
        subjects.append(Subject.of(source, destination, ref, digest, None, kids))
    return MirrorCarry(store, carry_from_registry(client, store, subjects, options, jobs))
