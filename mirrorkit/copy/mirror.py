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

from mirrorkit.copy import artifacts
from mirrorkit.copy.artifacts import SignatureOptions
from mirrorkit.copy.engine import Engine, Root
from mirrorkit.copy.preflight import require_writable
from mirrorkit.copy.sinks import Holders, RegistrySink
from mirrorkit.copy.sources import RegistrySource
from mirrorkit.copy.verify import verify_registry
from mirrorkit.destinations import destination_pairs, first_by_source
from mirrorkit.errors import InputError, OperationError
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.layout import BlobStore
from mirrorkit.plan import Plan, PlanImage
from mirrorkit.refs import Ref, RegistryTarget


@dataclass
class MirrorReport:
    copied: int = 0
    skipped: int = 0
    verified: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    blobs_copied: int = 0
    bytes_copied: int = 0
    blobs_mounted: int = 0
    artifacts: int = 0            # signature, attestation, SBOM and referrer manifests pushed beside the images


def mirror(plan: Plan, client: RegistryClient, credentials: CredentialStore | None, registry: RegistryTarget | None,
           mapping: str | None, jobs: int = 4, progress: Callable[[str, int], None] | None = None,
           signatures: SignatureOptions | None = None) -> MirrorReport:
    """Copy every planned image to its destination(s); ``credentials`` live in ``client`` (kept for callers).

    Before a byte moves: every destination repository is probed (preflight), and with
    ``--verify-key`` every signature is checked at the source. Artifacts (signatures,
    attestations, SBOMs, referrers) are pushed beside the images, byte for byte.
    """
    opts = signatures or SignatureOptions()
    if plan.platforms:
        raise InputError("mirror copies whole multi-arch images; for a platform-restricted plan use "
                         "pull-bundle and push-bundle")
    start = time.monotonic()
    dest = destination_pairs(plan, [(i.source, i.destination) for i in plan.images], registry, mapping)
    report = MirrorReport()
    holders = Holders()
    with tempfile.TemporaryDirectory(prefix="mirrorkit-mirror-") as scratch:
        spool = Path(scratch)
        sinks: dict[str, RegistrySink] = {}
        roots: list[Root] = []
        digests: list[str] = []
        def state(img: PlanImage) -> tuple[str, bool]:
            """The image's digest, and whether its destination holds it already (a rerun copies nothing)."""
            digest = img.digest or client.get_manifest(img.source_ref).digest
            return digest, client.manifest_digest(dest[(img.source, img.destination)]) == digest

        def stage(digests: list[str]) -> artifacts.MirrorCarry:
            return artifacts.stage_for_mirror(
                client, BlobStore(spool / "artifacts"),
                [(i.source, i.destination, i.source_ref, digest) for i, digest in zip(plan.images, digests,
                                                                                       strict=True)], opts, jobs)

        with ThreadPoolExecutor(max_workers=max(2, 2 * jobs)) as pool:
            # a plan pinning every digest lets the artifacts be found (and checked) while the destination is
            # asked what it holds; nothing is copied before both are done, the preflight's verdict first
            pinned = [i.digest for i in plan.images if i.digest]
            early = pool.submit(stage, pinned) if opts.active and len(pinned) == len(plan.images) else None
            states = list(pool.map(state, plan.images))
            require_writable(client, [dest[(i.source, i.destination)]
                                      for i, (_, there) in zip(plan.images, states, strict=True) if not there], jobs)
            staged = early.result() if early is not None else \
                stage([digest for digest, _ in states]) if opts.active else None
        for img, (digest, there) in zip(plan.images, states, strict=True):
            src, target = img.source_ref, dest[(img.source, img.destination)]
            digests.append(digest)
            if there:
                report.skipped += 1
                continue
            key = f"{target.registry}/{target.repository}"
            sink = sinks.setdefault(key, RegistrySink(client, target, holders, spool))
            # the source repository holds every blob: on the same registry, mount from it
            for_mount = src.registry == target.registry
            roots.append(Root(RegistrySource(client, src), sink, digest, tags=(target.tag,) if target.tag else (),
                              digest=digest, label=img.source))
            if for_mount:
                holders.add_repository(src.registry, src.repository)
        engine = Engine(jobs, client.retry, progress=progress)
        engine.copy(roots)
        if engine.report.failures:
            raise OperationError("; ".join(engine.report.failures))
        if staged is not None and staged.carried.artifacts:
            by_source = first_by_source(dest)
            report.artifacts = staged.push(client, by_source).manifests
    report.copied = len(roots)
    report.blobs_copied = engine.report.blobs_copied
    report.bytes_copied = engine.report.bytes_copied
    report.blobs_mounted = engine.report.blobs_mounted
    # an image found at its destination digest for digest is verified already (as push-bundle's rerun
    # check: `verify` asks for every blob); each copied one is fetched and hashed, and every blob of it
    # asked for that this run did not see there, upload or mount (HEAD)
    sources = {(i.source_ref.registry, i.source_ref.repository) for i in plan.images}

    def confirmed(ref: Ref, digest: str) -> bool:
        return (ref.registry, ref.repository) not in sources and \
            ref.repository in holders.get(ref.registry, digest, but="")

    expected: list[tuple[Ref, str | None, list[str]]] = [
        (dest[(img.source, img.destination)], digest, [])
        for img, digest, (_, there) in zip(plan.images, digests, states, strict=True) if not there]
    result = verify_registry(client, expected, jobs, blobs=True, confirmed=confirmed)
    report.verified = len(result.ok) + report.skipped
    report.problems = result.missing + result.different
    report.seconds = time.monotonic() - start
    return report
