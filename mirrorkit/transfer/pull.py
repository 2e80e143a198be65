"""pull-bundle: copy every planned image into one blob store through the engine, then write the bundle.

Registry -> blob store: every manifest and blob moves through mirrorkit.transfer.engine
(one pool of blob downloads across all images, each blob fetched once, resumed
with Range after a cut in this run or the next, hashed as it streams). Blobs
already in the work folder are not fetched again: that is what makes an
interrupted or repeated pull cheap. Images from local sources (``docker-archive:``
and friends) are first imported into the same store by mirrorkit.transfer.local.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mirrorkit import __version__, interrupt
from mirrorkit.errors import InputError, OperationError
from mirrorkit.files import full_disk_reported, write_atomic, write_error
from mirrorkit.lock import Lock, LockBlob, LockImage
from mirrorkit.mapping import check_collisions
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.layout import BlobStore
from mirrorkit.oci.retry import RetryPolicy
from mirrorkit.oci.transport import Endpoints
from mirrorkit.plan import Plan, PlanImage
from mirrorkit.transfer.artifacts import (
    RESTRICTED_NOTE,
    CarriedArtifacts,
    SignatureOptions,
    Subject,
    carry_into_store,
    discover,
)
from mirrorkit.transfer.engine import Engine, Graph, Root
from mirrorkit.transfer.sinks import StoreSink
from mirrorkit.transfer.sources import LayoutSource, RegistrySource, Source


@dataclass
class PullOptions:
    output: Path
    jobs: int = 4
    split: int | None = None
    compress: str | None = None
    omit: set[str] = field(default_factory=set)
    depends_on: list[str] = field(default_factory=list)
    keep_work: bool = False
    charts: list[Path] = field(default_factory=list)  # Helm chart .tgz files (mirrorkit.charts)
    keep_going: bool = False     # copy everything that can be copied, then list every failure
    retry: RetryPolicy | None = None  # the retry policy (--retry-for); None: the default, from the environment


@dataclass
class PullReport:
    images: int = 0
    copied: int = 0
    reused: int = 0
    unique_bytes: int = 0
    total_bytes: int = 0
    omitted_bytes: int = 0
    volumes: list[Path] = field(default_factory=list)
    lock_path: Path | None = None
    seconds: float = 0.0
    up_to_date: bool = False
    charts: int = 0
    blobs_fetched: int = 0
    bytes_fetched: int = 0
    signatures: CarriedArtifacts | None = None  # what travelled with the images: signatures, SBOMs, referrers

    @property
    def saved_bytes(self) -> int:
        return self.total_bytes - self.unique_bytes - self.omitted_bytes


def bundle_stem(output: Path) -> Path:
    name = output.name
    for suffix in (".tar.zst", ".tar"):
        if name.endswith(suffix):
            return output.with_name(name[: -len(suffix)])
    return output


def lock_path_for(output: Path) -> Path:
    stem = bundle_stem(output)
    return stem.with_name(stem.name + ".lock.yaml")


def work_dir_for(output: Path) -> Path:
    stem = bundle_stem(output)
    return stem.with_name(f".{stem.name}.work")


def _source_for(img: PlanImage, client: RegistryClient, store: BlobStore) -> tuple[Source, str, str | None]:
    """The engine source of one plan image: its registry, or (local sources) the store skopeo imported it into.

    A local image (``docker-archive:`` and friends) is imported whole, every platform it has.
    """
    if img.local:
        from mirrorkit.transfer.local import import_image

        digest, _ = import_image(img.local, store)
        if img.digest and digest != img.digest:
            raise OperationError(f"{img.source}: {img.local} holds {digest}, the plan pins {img.digest}")
        return LayoutSource(store, img.local), digest, digest
    ref = img.source_ref
    return RegistrySource(client, ref), img.digest or ref.reference, img.digest


def _roots(plan: Plan, client: RegistryClient, store: BlobStore) -> list[Root]:
    sink = StoreSink(store)
    roots = []
    for img in plan.images:
        source, reference, pinned = _source_for(img, client, store)
        roots.append(Root(source, sink, reference, digest=pinned, platforms=tuple(plan.platforms),
                          label=img.source))
    return roots


def _failed(graphs: list[Graph], failures: list[str]) -> OperationError:
    lines = [f"{g.root.label}: {g.error}" for g in graphs if g.error] or failures
    return OperationError(f"{len(lines)} image(s) could not be copied:\n  " + "\n  ".join(lines))


def build_lock(plan: Plan, opts: PullOptions, store: BlobStore, graphs: list[Graph], report: PullReport) -> Lock:
    """The lock (and the store's index.json) for what the store now holds."""
    images: list[LockImage] = []
    carried: dict[str, int] = {}
    omitted: dict[str, int] = {}
    index_entries = []
    for img, g in zip(plan.images, graphs, strict=True):
        blob_digests = [d for d, _ in g.blobs]
        for digest in [*g.children, g.digest]:
            carried[digest] = store.size(digest)
        for digest, size in g.blobs:
            if digest in opts.omit:
                omitted[digest] = size
            else:
                carried[digest] = store.size(digest)
        report.total_bytes += g.manifest_bytes + sum(size for _, size in g.blobs)
        images.append(LockImage(
            source=img.source, destination=img.destination, digest=g.digest,
            media_type=g.top.media_type, platforms=g.platforms or _config_platform(store, g, opts.omit)
            or list(img.platforms or []), manifests=g.children, blobs=blob_digests,
            planned_digest=g.upstream_digest, note=g.note))
        index_entries.append({"mediaType": g.top.media_type, "digest": g.digest, "size": store.size(g.digest),
                              "annotations": {"org.opencontainers.image.ref.name": img.source,
                                              "dev.mirrorkit.destination": img.destination or ""}})
    for digest in list(omitted):
        if digest in carried:
            del omitted[digest]
    store.write_index(index_entries)
    report.images = len(images)
    report.unique_bytes = sum(carried.values())
    report.omitted_bytes = sum(omitted.values())
    return Lock(
        id=str(uuid.uuid4()),
        created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        generator=f"mirrorkit {__version__}", plan=plan, images=images,
        blobs=[LockBlob(d, s) for d, s in sorted(carried.items())],
        omitted=[LockBlob(d, s) for d, s in sorted(omitted.items())],
        depends_on=list(opts.depends_on),
    )


def _config_platform(store: BlobStore, g: Graph, omit: set[str]) -> list[str]:
    """A single image's platform, as its config says (what the bundle holds, not what was planned)."""
    if not g.blobs or g.blobs[0][0] in omit or not store.has(g.blobs[0][0]) or g.blobs[0][1] > 1 << 20:
        return []
    try:
        config = json.loads(store.read(g.blobs[0][0]))
    except (ValueError, OSError):
        return []
    if not isinstance(config, dict) or not isinstance(config.get("os"), str) \
            or not isinstance(config.get("architecture"), str):
        return []
    text = f"{config['os']}/{config['architecture']}"
    return [f"{text}/{config['variant']}" if isinstance(config.get("variant"), str) else text]


def pull_bundle(plan: Plan, opts: PullOptions, endpoints: Endpoints, credentials: CredentialStore,
                progress: Callable[[str, int], None] | None = None,
                signatures: SignatureOptions | None = None) -> PullReport:
    """Fetch, lock and write the bundle; up to date bundles are left alone.

    A full disk anywhere while fetching or writing gives one line naming the work
    folder, which a rerun resumes from.
    """
    work = work_dir_for(opts.output)
    with full_disk_reported(work, f"pulling {opts.output.name}", scratch=[work / "tmp", work / "partial"]):
        return _pull(plan, opts, endpoints, credentials, progress, signatures or SignatureOptions())


def _pull(plan: Plan, opts: PullOptions, endpoints: Endpoints, credentials: CredentialStore,
          progress: Callable[[str, int], None] | None, signatures: SignatureOptions) -> PullReport:
    from mirrorkit.bundle.writer import write_bundle
    from mirrorkit.transfer.charts import add_to_bundle, load_charts, lock_entries

    if not plan.images:
        raise InputError("the plan has no images")
    # a bundle that push-bundle would refuse must not be discovered on the far side of the air gap
    check_collisions((i.source_ref, dest) for i in plan.images if (dest := i.destination_ref) is not None)
    start = time.monotonic()
    lock_file = lock_path_for(opts.output)
    charts = load_charts(opts.charts)  # --chart: refused before anything is fetched
    try:
        store = BlobStore(work_dir_for(opts.output))
    except OSError as exc:
        raise write_error(exc, str(work_dir_for(opts.output))) from None
    previous = _previous_lock(lock_file)
    with RegistryClient(endpoints, credentials, retry=opts.retry) as client:
        same = _pinned_as_before(previous, plan, opts) if previous is not None else None
        if previous is not None and same is not None and not signatures.keys and _volumes_present(opts.output) \
                and previous.charts == lock_entries(charts, plan.registry):
            # every image pinned to the digest the lock beside the bundle was written from: its manifests
            # and blobs are what they were (content addressed), so only the signatures are asked again
            # (with --verify-key the full path runs: the keys may not be the ones the lock was checked with)
            found = {art.digest for _, art in discover(client, [
                Subject.of(img.source, img.destination, img.source_ref, li.digest, li.planned_digest or li.digest,
                           li.manifests) for img, li in same if not img.local], opts.jobs)} \
                if signatures.carry else set()
            if {a.digest for a in previous.artifacts} == found:
                shutil.rmtree(store.root, ignore_errors=True)
                return PullReport(images=len(same), reused=len(same), up_to_date=True, lock_path=lock_file,
                                  charts=len(charts), unique_bytes=sum(b.size for b in previous.blobs),
                                  seconds=time.monotonic() - start)
        engine = Engine(opts.jobs, client.retry, omit=opts.omit, keep_going=opts.keep_going, progress=progress)
        graphs = engine.walk(_roots(plan, client, store))
        # signatures, attestations, SBOMs and referrers: found and copied through the same engine (and,
        # with keys, verified) before any image bytes move; a local image has no upstream to ask
        carried = carry_into_store(engine, client, store, [
            Subject.of(img.source, img.destination, img.source_ref, g.digest, g.upstream_digest or g.digest,
                       g.children)
            for img, g in zip(plan.images, graphs, strict=True) if not img.local and not g.error],
            signatures, opts.jobs)
        for img, g in zip(plan.images, graphs, strict=True):
            if g.upstream_digest and g.upstream_digest != g.digest and carried.artifacts:
                g.note += "; " + RESTRICTED_NOTE
                carried.notes.append(f"{img.source}: {g.note}")
        if not engine.report.failures and previous is not None and _unchanged(previous, plan, graphs, opts) \
                and _volumes_present(opts.output) and previous.charts == lock_entries(charts, plan.registry) \
                and {a.digest for a in previous.artifacts} == carried.digests():   # a re-sign is a change
            shutil.rmtree(store.root, ignore_errors=True)
            return PullReport(images=len(graphs), reused=len(graphs), up_to_date=True, lock_path=lock_file,
                              charts=len(charts), unique_bytes=sum(b.size for b in previous.blobs),
                              seconds=time.monotonic() - start)
        fresh = [not _held(store, g, opts.omit) for g in graphs]
        earlier = _stored(store)
        engine.copy_blobs(graphs)
        engine.put_manifests(graphs)
        if engine.report.failures:
            raise _failed(graphs, engine.report.failures)
    report = PullReport(copied=sum(fresh), reused=len(fresh) - sum(fresh),
                        blobs_fetched=engine.report.blobs_copied, bytes_fetched=engine.report.bytes_copied)
    lock = build_lock(plan, opts, store, graphs, report)
    carried.apply(lock)
    report.signatures = carried
    # charts: their blobs join the store, the lock and index.json
    chart_bytes = add_to_bundle(store, lock, charts, plan.registry)
    report.unique_bytes += chart_bytes
    report.total_bytes += chart_bytes
    report.charts = len(charts)
    interrupt.check()
    # what entered the store from here on was hashed as it arrived (the store takes nothing else):
    # the writer hashes only what an earlier run, an import or the signature phase left there
    trusted = set() if earlier is None else \
        {b.digest for b in lock.blobs if b.digest.removeprefix("sha256:") not in earlier}
    volumes = write_bundle(store.root, lock, opts.output, split=opts.split, compress=opts.compress,
                           progress=(lambda n: progress("write", n)) if progress else None, trusted=trusted)
    write_atomic(lock_file, lock.dumps())
    report.volumes = volumes
    report.lock_path = lock_file
    report.seconds = time.monotonic() - start
    if not opts.keep_work:
        shutil.rmtree(store.root, ignore_errors=True)
    return report


def _stored(store: BlobStore) -> set[str] | None:
    """The hex names of every blob in the store now (None: unknown, so nothing is taken on trust)."""
    try:
        return set(os.listdir(store.blobs))
    except OSError:
        return None


def _held(store: BlobStore, g: Graph, omit: set[str]) -> bool:
    """Is every byte of this image in the work folder already (an earlier, interrupted run fetched it)?"""
    return all(store.has(n.digest) for n in g.nodes) and \
        all(store.has(d) for d, _ in g.blobs if d not in omit)


def _previous_lock(path: Path) -> Lock | None:
    from mirrorkit.lock import loads_lock

    if not path.is_file():
        return None
    try:
        return loads_lock(path.read_text(), str(path))
    except (InputError, OSError):
        return None


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


def _volumes_present(output: Path) -> bool:
    stem = bundle_stem(output)
    return output.exists() or any(stem.parent.glob(f"{stem.name}*.tar*"))
