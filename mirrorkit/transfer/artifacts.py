"""Signatures, attestations, SBOMs and referrers carried beside the images, and checked on both sides.

Every artifact is one more engine root (``artifact_root``): its manifest graph moves
through the one copy engine like an image's, so its blobs are deduplicated, resumed
and retried by the one policy. The copy paths use this module at three points:
after reading the source manifests (``carry_into_store``: discover, copy the artifact
roots into the bundle store and, with ``--verify-key``, judge every signature before
any image bytes or bundle are written; ``discover`` and ``verify_at_source`` for
mirror), when the lock is built (``CarriedArtifacts.apply``), and on the air-gapped
side (``verify_lock`` from the bundle alone; push-bundle then adds the artifact roots
to its engine run). Every manifest travels byte for byte, so cosign-style checks
against the mirror find the very signatures NVIDIA made. A fallback tag index
(``sha256-<hex>``) is a root whose children are the referrers it lists: the engine
writes them before it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from mirrorkit.errors import NotFoundError, OperationError
from mirrorkit.lock import Lock, LockArtifact, LockBlob, LockVerification
from mirrorkit.oci import manifests
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.layout import BlobStore
from mirrorkit.refs import Ref
from mirrorkit.transfer.engine import Engine, Graph, Root, metadata_width
from mirrorkit.transfer.sinks import Sink, StoreSink
from mirrorkit.transfer.sources import RegistrySource, Source
from mirrorkit.trust.discover import Artifact, Discovery
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
        """An image restricted to several platforms has a rewritten index nobody signed: its platform
        manifests (which keep their signatures) stand in for it. Restricted to one platform, the image
        *is* that platform's manifest (no children), signed as published."""
        if planned and planned != digest and children:
            return cls(source, destination, ref, tuple(children), tuple(children))
        return cls(source, destination, ref, (digest,), (digest, *children))


def subjects_of_lock(lock: Lock, where: Callable[[str], Ref] | None = None) -> list[Subject]:
    return [Subject.of(i.source, i.destination, where(i.source) if where else Ref.parse(i.source), i.digest,
                       i.planned_digest, i.manifests) for i in lock.images]


def chart_subjects(lock: Lock) -> list[Subject]:
    """The bundle's charts fetched from a registry (``oci://``): their signatures travel, and are judged,
    as an image's do. A chart file or a Helm-repository chart has no cosign signature to ask for."""
    from mirrorkit.chartref import OCI, parse_chart_ref
    from mirrorkit.lock import lock_charts

    out = []
    for chart in lock_charts(lock):
        if chart.kind == OCI:
            ref = parse_chart_ref(chart.source).ref
            if ref is None:
                continue
            out.append(Subject(chart.source, chart.repository, ref, (chart.digest,), (chart.digest,)))
    return out


@dataclass
class CarriedArtifacts:
    """What carry_into_store put in the store, ready to join the lock."""

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

    without_api: set[str] = set()     # registries that answered they have no referrers API

    def one(group: list[Subject]) -> list[tuple[str, list[Artifact]]]:
        d = Discovery(client, group[0].ref, without_api)
        return [(s.source, [a for digest in s.carried for a in d.find(digest)]) for s in group]

    # tag lists and referrers probes are round trips: as many in flight as the walk's manifests
    with ThreadPoolExecutor(max_workers=metadata_width(jobs)) as pool:
        return {src: found for pairs in pool.map(one, groups.values()) for src, found in pairs}


def discover(client: RegistryClient, subjects: list[Subject], jobs: int = 4) -> list[tuple[Subject, Artifact]]:
    """Every artifact of every subject, once per source image (two destinations of one source share them)."""
    found = _discover(client, subjects, jobs)
    first: dict[str, Subject] = {}
    for s in subjects:
        first.setdefault(s.source, s)
    return [(first[source], art) for source, arts in found.items() for art in arts]


def artifact_root(source: Source, sink: Sink, artifact: Artifact | LockArtifact, label: str) -> Root:
    """An artifact as an engine root: by digest, under its tag when it has one (cosign's tag schema)."""
    return Root(source, sink, artifact.digest, tags=(artifact.tag,) if artifact.tag else (), digest=artifact.digest,
                label=f"{label} (artifact {artifact.digest})", artifact=True)


def copy_roots(engine: Engine, roots: list[Root]) -> list[Graph]:
    """Artifact roots through the engine on their own (before the images: they must be judged first)."""
    graphs = engine.walk(roots)
    check_graphs(graphs)
    engine.copy_blobs(graphs)
    engine.put_manifests(graphs)
    check_graphs(graphs)
    return graphs


def check_graphs(graphs: list[Graph]) -> None:
    """An artifact that could not be copied fails the run (``--keep-going`` or not); so does an outsize blob."""
    failed = [f"{g.root.label}: {g.error}" for g in graphs if g.error]
    if failed:
        raise OperationError(f"{len(failed)} artifact(s) could not be copied: " + "; ".join(failed))
    for g in graphs:
        for digest, size in g.blobs:
            if size > MAX_ARTIFACT_BLOB:
                raise OperationError(f"{g.root.label}: blob {digest} of {size} bytes exceeds the "
                                     f"{MAX_ARTIFACT_BLOB} byte limit for artifacts")


def carry_into_store(engine: Engine, client: RegistryClient, store: BlobStore, subjects: list[Subject],
                     options: SignatureOptions, jobs: int = 4) -> CarriedArtifacts:
    """Discover every artifact and copy it into ``store`` through ``engine``; with keys, refuse unsigned
    or invalid images.

    Raises OperationError (exit 1) listing every image that fails, before the caller
    copies image bytes or writes anything.
    """
    out = CarriedArtifacts()
    if not options.active or not subjects:
        return out
    pairs = discover(client, subjects, jobs)
    sink = StoreSink(store)
    graphs = copy_roots(engine, [artifact_root(RegistrySource(client, s.ref), sink, art, s.source)
                                 for s, art in pairs])
    for (s, art), g in zip(pairs, graphs, strict=True):
        out.artifacts.append(LockArtifact(art.subject, art.digest, art.media_type, art.artifact_type,
                                          art.tag, s.source, s.destination))
        for node in g.nodes:
            out.blobs[node.digest] = len(node.data)
        for digest, _ in g.blobs:
            out.blobs[digest] = store.size(digest)
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
    """Offline: every image (and chart from a registry) of a bundle checked against its carried signatures;
    raises on any failure."""
    result = verify_artifacts(lock.artifacts, subjects_of_lock(lock) + chart_subjects(lock), keys, read)
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
        return client.get_small_blob(Ref.parse(name), digest)

    return verify_signatures(fetch_manifest, fetch_blob, [(ref.name, d) for ref, d in subjects], keys)


def verify_at_source(client: RegistryClient, pairs: list[tuple[Subject, Artifact]], subjects: list[Subject],
                     keys: list[PublicKey]) -> VerificationResult:
    """mirror, before a byte moves: the discovered signatures (by the digests discovery found) read from
    the source registry and judged; raises on any failure."""
    ref_of = {s.source: s.ref for s in subjects}
    by_tag = {(s.source, a.tag): a.digest for s, a in pairs if a.tag}

    def fetch_manifest(name: str, reference: str) -> bytes | None:
        digest = by_tag.get((name, reference))
        return client.get_manifest(ref_of[name], digest).data if digest else None

    def fetch_blob(name: str, digest: str) -> bytes:
        return client.get_small_blob(ref_of[name], digest, MAX_ARTIFACT_BLOB)

    result = verify_signatures(fetch_manifest, fetch_blob, [(s.source, d) for s in subjects for d in s.signed],
                               keys)
    raise_on_failures(result)
    return result


def raise_on_failures(result: VerificationResult) -> None:
    if not result.passed:
        lines = [v.describe() for v in result.failures]
        raise OperationError(f"signature verification failed for {len(lines)} of {len(result.verdicts)} image "
                             "digests: " + "; ".join(lines))


@dataclass
class PushedArtifacts:
    manifests: int = 0
    blobs: int = 0


REWRITTEN_INDEX = ("a --platform restriction to several platforms rewrote this index: nobody signed its digest, "
                   "and admission checks the digest the tag resolves to (plan with one --platform instead)")


def rewritten_indexes(lock: Lock | None) -> dict[str, str]:
    """source -> digest of each image whose top is an index --platform rewrote (no signature can cover it)."""
    if lock is None:
        return {}
    return {i.source: i.digest for i in lock.images if i.rewritten_index}


def signed_at_destination(client: RegistryClient, plan: Any, lock: Lock | None,
                          dest: dict[tuple[str, str | None], Ref], keys: list[PublicKey],
                          charts: list[tuple[Ref, str]] | None = None) -> VerificationResult:
    """``verify --verify-key``: what admission (Kyverno, CRI-O) checks, read from the mirror itself.

    Each destination reference the rewritten configuration names is resolved at the mirror,
    and the digest it resolves to must carry a valid signature; so must the digest the lock
    (or plan) pins, which ``--pin-digests`` values name. A platform manifest signed inside an
    index the tag no longer names proves nothing to admission, so it is not what is checked.
    ``charts``: (destination, digest) of charts fetched from a registry, judged the same way.
    """
    items = ([(i.source, i.destination, i.digest) for i in lock.images] if lock is not None
             else [(i.source, i.destination, i.digest) for i in plan.images])
    pairs: list[tuple[Ref, str]] = list(charts or [])
    for source, destination, pinned in items:
        ref = dest[(source, destination)]
        resolved = client.manifest_digest(ref) if ref.tag or not ref.digest else None
        for digest in dict.fromkeys(d for d in (resolved, pinned) if d):   # a missing image: the digest check says so
            if (ref, digest) not in pairs:
                pairs.append((ref, digest))
    result = verify_online(client, pairs, keys)
    rewritten = set(rewritten_indexes(lock).values())
    result.verdicts = [replace(v, detail=REWRITTEN_INDEX) if not v.verified and v.digest in rewritten else v
                       for v in result.verdicts]
    return result


def subject_children(client: RegistryClient, ref: Ref, digest: str, what: str) -> list[str]:
    """The platform manifests of an image at the source (none for a single image)."""
    top = client.get_manifest(ref, digest)
    doc = manifests.parse(top.data, what)
    return [c.digest for c in manifests.children(doc, what)] if manifests.is_index(doc, top.media_type) else []
