"""mirror: registry to registry through the engine, for a host that sees both networks.

Same guarantees as a bundle: by digest where the plan has one, digests
preserved, images already present (same digest at the destination tag) skipped,
blobs copied once per destination repository (mounted where the registry holds
them already), and every destination manifest fetched and hashed afterwards.
Blobs pass through a work folder on this host, so a download cut midway resumes
with Range and an upload can be re-sent without fetching the blob again.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mirrorkit.destinations import destination_pairs, first_by_source
from mirrorkit.errors import InputError, OperationError
from mirrorkit.oci.client import RegistryClient
from mirrorkit.plan import Plan, PlanImage
from mirrorkit.refs import Ref, RegistryTarget
from mirrorkit.transfer import artifacts
from mirrorkit.transfer.artifacts import SignatureOptions
from mirrorkit.transfer.engine import CopyReport, Engine, Root
from mirrorkit.transfer.preflight import require_writable
from mirrorkit.transfer.sinks import Holders, RegistrySink
from mirrorkit.transfer.sources import RegistrySource
from mirrorkit.transfer.verify import VerifyResult, verify_registry
from mirrorkit.trust.discover import Artifact


@dataclass
class MirrorReport:
    copied: int = 0
    skipped: int = 0
    verified: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    transfer: CopyReport = field(default_factory=CopyReport)   # the engine's blob counts
    artifacts: int = 0            # signature, attestation, SBOM and referrer manifests pushed beside the images

    @property
    def blobs_copied(self) -> int:
        return self.transfer.blobs_copied

    @property
    def bytes_copied(self) -> int:
        return self.transfer.bytes_copied

    @property
    def blobs_mounted(self) -> int:
        return self.transfer.blobs_mounted


def mirror(plan: Plan, client: RegistryClient, registry: RegistryTarget | None,
           mapping: str | None, jobs: int = 4, progress: Callable[[str, int], None] | None = None,
           signatures: SignatureOptions | None = None) -> MirrorReport:
    """Copy every planned image to its destination(s); credentials live in ``client``.

    Before a byte moves: every destination repository is probed (preflight), and with
    ``--verify-key`` every signature is checked at the source. Artifacts (signatures,
    attestations, SBOMs, referrers) are roots of the same engine run as the images,
    registry to registry, byte for byte. The phases: resolve, preflight, artifacts,
    roots, copy, verify.
    """
    opts = signatures or SignatureOptions()
    if plan.platforms:
        raise InputError("mirror copies whole multi-arch images; for a platform-restricted plan use "
                         "pull-bundle and push-bundle")
    start = time.monotonic()
    dest = destination_pairs(plan, [(i.source, i.destination) for i in plan.images], registry, mapping)
    targets = [dest[(i.source, i.destination)] for i in plan.images]
    report = MirrorReport()
    holders = Holders()
    with tempfile.TemporaryDirectory(prefix="mirrorkit-mirror-") as scratch:
        states = _resolve(client, plan, targets, jobs)
        require_writable(client, [t for t, (_, there) in zip(targets, states, strict=True) if not there], jobs)
        carried = _artifacts(client, plan, [digest for digest, _ in states], opts, jobs)
        sinks = _Sinks(client, holders, Path(scratch))
        roots = _image_roots(client, plan, targets, states, sinks, holders)
        by_source = first_by_source(dest)     # a source's artifacts go to its first destination repository
        art_roots = [artifacts.artifact_root(RegistrySource(client, s.ref), sinks.get(by_source[s.source]), art,
                                             s.source) for s, art in carried]
        report.transfer = _copy(client, roots + art_roots, jobs, progress)
        report.artifacts = len(art_roots)
    report.copied = len(roots)
    report.skipped = sum(there for _, there in states)
    result = _verify(client, plan, targets, states, holders, jobs)
    report.verified = len(result.ok) + report.skipped
    report.problems = result.missing + result.different
    report.seconds = time.monotonic() - start
    return report


def _resolve(client: RegistryClient, plan: Plan, targets: list[Ref], jobs: int) -> list[tuple[str, bool]]:
    """Each image's digest, and whether its destination holds it already (a rerun copies nothing)."""
    def state(item: tuple[PlanImage, Ref]) -> tuple[str, bool]:
        img, target = item
        digest = img.digest or client.get_manifest(img.source_ref).digest
        return digest, client.manifest_digest(target) == digest

    with ThreadPoolExecutor(max_workers=max(2, 2 * jobs)) as pool:
        return list(pool.map(state, zip(plan.images, targets, strict=True)))


class _Sinks:
    """One sink per destination repository, all sharing the mount holders and the spool folder."""

    def __init__(self, client: RegistryClient, holders: Holders, spool: Path) -> None:
        self.client, self.holders, self.spool = client, holders, spool
        self._sinks: dict[str, RegistrySink] = {}

    def get(self, target: Ref) -> RegistrySink:
        key = f"{target.registry}/{target.repository}"
        if key not in self._sinks:
            self._sinks[key] = RegistrySink(self.client, target, self.holders, self.spool)
        return self._sinks[key]


def _image_roots(client: RegistryClient, plan: Plan, targets: list[Ref], states: list[tuple[str, bool]],
                 sinks: _Sinks, holders: Holders) -> list[Root]:
    """An engine root per image its destination lacks, pinned to the digest resolved for it."""
    roots = []
    for img, target, (digest, there) in zip(plan.images, targets, states, strict=True):
        if there:
            continue
        src = img.source_ref
        roots.append(Root(RegistrySource(client, src), sinks.get(target), digest,
                          tags=(target.tag,) if target.tag else (), digest=digest, label=img.source))
        if src.registry == target.registry:
            # the source repository holds every blob: on the same registry, mount from it
            holders.add_repository(src.registry, src.repository)
    return roots


def _copy(client: RegistryClient, roots: list[Root], jobs: int,
          progress: Callable[[str, int], None] | None) -> CopyReport:
    """The engine's three phases, with the artifacts' graphs checked before any blob moves."""
    engine = Engine(jobs, client.retry, progress=progress)
    graphs = engine.walk(roots)
    artifacts.check_graphs([g for g in graphs if g.root.artifact])
    engine.copy_blobs(graphs)
    engine.put_manifests(graphs)
    if engine.report.failures:
        raise OperationError("; ".join(engine.report.failures))
    return engine.report


def _verify(client: RegistryClient, plan: Plan, targets: list[Ref], states: list[tuple[str, bool]],
            holders: Holders, jobs: int) -> VerifyResult:
    """Each copied image fetched and hashed at its destination, with every blob this run did not see there.

    An image found at its destination digest for digest is verified already (as push-bundle's rerun
    check: `verify` asks for every blob); each copied one is fetched and hashed, and every blob of it
    asked for that this run did not see there, upload or mount (HEAD)."""
    sources = {(i.source_ref.registry, i.source_ref.repository) for i in plan.images}

    def confirmed(ref: Ref, digest: str) -> bool:
        return (ref.registry, ref.repository) not in sources and \
            ref.repository in holders.get(ref.registry, digest, but="")

    expected: list[tuple[Ref, str | None, list[str]]] = [
        (target, digest, []) for target, (digest, there) in zip(targets, states, strict=True) if not there]
    return verify_registry(client, expected, jobs, blobs=True, confirmed=confirmed)


def _artifacts(client: RegistryClient, plan: Plan, digests: list[str], opts: SignatureOptions,
               jobs: int) -> list[tuple[artifacts.Subject, Artifact]]:
    """Every image's artifacts at the source, judged there with ``--verify-key`` before a byte moves;
    an empty list with ``--no-signatures`` (the check still runs when keys are given)."""
    if not opts.active:
        return []
    subjects = [artifacts.Subject.of(i.source, i.destination, i.source_ref, digest, None,
                                     artifacts.subject_children(client, i.source_ref, digest, i.source))
                for i, digest in zip(plan.images, digests, strict=True)]
    found = artifacts.discover(client, subjects, jobs)
    if opts.keys:
        artifacts.verify_at_source(client, found, subjects, opts.keys)
    return found if opts.carry else []
