"""The bundle an earlier pull-bundle run left: where its lock and work folder lie, and whether this run
would write that same bundle again.

Two up-to-date checks: before the walk, by the digests the plan pins (only the signatures are
asked again), and after it, by the digests the registries gave. Either way the volumes on disk
must be the ones this run would write, with the same extras (installer, packages, charts, the
lock's signature).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mirrorkit.errors import InputError
from mirrorkit.lock import Lock, LockImage
from mirrorkit.oci.client import RegistryClient
from mirrorkit.plan import Plan, PlanImage
from mirrorkit.transfer.artifacts import (
    CarriedArtifacts,
    SignatureOptions,
    Subject,
    discover,
)
from mirrorkit.transfer.engine import Graph
from mirrorkit.trust.bundlesig import signature_beside

if TYPE_CHECKING:
    from mirrorkit.transfer.pull import PullOptions
    from mirrorkit.transfer.pull_inputs import Inputs


def bundle_stem(output: Path) -> Path:
    name = output.name
    for suffix in (".tar.zst", ".tar"):
        if name.endswith(suffix):
            return output.with_name(name[: -len(suffix)])
    return output


def lock_path_for(output: Path) -> Path:
    stem = bundle_stem(output)
    return stem.with_name(stem.name + ".lock.yaml")


def work_dir_for(output: Path, parent: Path | None = None) -> Path:
    """The work folder: ``.STEM.work`` beside the bundle, or inside ``parent`` (--work-dir)."""
    stem = bundle_stem(output)
    return (parent / f".{stem.name}.work") if parent is not None else stem.with_name(f".{stem.name}.work")


def previous_lock(path: Path) -> Lock | None:
    from mirrorkit.lock import loads_lock

    if not path.is_file():
        return None
    try:
        return loads_lock(path.read_text(), str(path))
    except (InputError, OSError):
        return None


def pins_unchanged(previous: Lock, plan: Plan, opts: PullOptions, inputs: Inputs, signatures: SignatureOptions,
                   client: RegistryClient) -> bool:
    """Up to date before the walk: every image pinned to the digest the lock beside the bundle was written from.

    Its manifests and blobs are what they were (content addressed), so only the signatures
    are asked again (with --verify-key the full path runs: the keys may not be the ones the
    lock was checked with)."""
    same = _pinned_as_before(previous, plan, opts) if not inputs.remote else None
    if same is None or signatures.keys or not _same_extras(previous, opts, inputs, plan.registry):
        return False
    found = {art.digest for _, art in discover(client, [
        Subject.of(img.source, img.destination, img.source_ref, li.digest, li.planned_digest or li.digest,
                   li.manifests) for img, li in same if not img.local], opts.jobs)} \
        if signatures.carry else set()
    return {a.digest for a in previous.artifacts} == found


def digests_unchanged(previous: Lock, plan: Plan, opts: PullOptions, graphs: list[Graph], inputs: Inputs,
                      carried: CarriedArtifacts) -> bool:
    """Up to date after the walk: the same digests, blobs and artifacts as the bundle on disk
    (a re-sign, of an image or of the lock, is a change)."""
    return (_unchanged(previous, plan, graphs, opts) and _same_extras(previous, opts, inputs, plan.registry)
            and {a.digest for a in previous.artifacts} == carried.digests())


def _same_extras(previous: Lock, opts: PullOptions, inputs: Inputs, registry: str | None) -> bool:
    """Is everything but the images and their signatures as the bundle on disk has it (volumes, installer,
    packages, charts, the lock's signature)?"""
    from mirrorkit.transfer.charts import lock_entries

    return (_volumes_present(opts) and not inputs.installing and previous.installer is None
            and not opts.package_sources and previous.charts == lock_entries(inputs.charts, registry)
            and _signed_as_asked(previous, opts))


def _signed_as_asked(previous: Lock, opts: PullOptions) -> bool:
    """With --sign-key the bundle on disk counts as up to date only if that key signed it already."""
    if opts.sign_key is None:
        return True
    return (previous.signing is not None and previous.signing.key_fingerprint == opts.sign_key.fingerprint
            and signature_beside(lock_path_for(opts.output)).is_file())


def _volumes_present(opts: PullOptions) -> bool:
    """Are the volumes on disk the ones this run would write: the same names, the same ``--split``?"""
    from mirrorkit.bundle.media import written_as

    return written_as(opts.output, opts.split, opts.compress)


def _unchanged(old: Lock, plan: Plan, graphs: list[Graph], opts: PullOptions) -> bool:
    """Would this run write the same bundle as the one already on disk?"""
    images = sorted((img.source, img.destination or "", g.digest) for img, g in zip(plan.images, graphs, strict=True))
    needed = {d for g in graphs for d, _ in g.blobs} | {d for g in graphs for d in [g.digest, *g.children]}
    carried = {d for d in needed if d not in opts.omit or d in {g.digest for g in graphs}}
    return (images == sorted((i.source, i.destination or "", i.digest) for i in old.images)
            and carried <= {b.digest for b in old.blobs}
            and sorted(old.depends_on) == sorted(opts.depends_on))


def _pinned_as_before(old: Lock, plan: Plan, opts: PullOptions) -> list[tuple[PlanImage, LockImage]] | None:
    """Each plan image with its lock entry, when the plan pins every image (no local sources) to the digest
    the lock was written from, with the same platforms, omissions and dependencies; else None."""
    if any(img.local or not img.digest for img in plan.images) or len(old.images) != len(plan.images) \
            or list(old.plan.platforms) != list(plan.platforms) or sorted(old.depends_on) != sorted(opts.depends_on):
        return None
    entries = {(i.source, i.destination or "", i.planned_digest or i.digest): i for i in old.images}
    pairs = []
    for img in plan.images:
        li = entries.get((img.source, img.destination or "", img.digest or ""))
        if li is None:
            return None
        pairs.append((img, li))
    needed = {d for _, li in pairs for d in [*li.blobs, *li.manifests] if d not in opts.omit} | \
        {li.digest for _, li in pairs}
    return pairs if needed <= {b.digest for b in old.blobs} else None
