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
from typing import TYPE_CHECKING, Any

from mirrorkit import __version__, interrupt
from mirrorkit.errors import InputError, OperationError
from mirrorkit.files import full_disk_reported, write_atomic, write_error
from mirrorkit.lock import Lock, LockBlob, LockImage, LockInstaller, LockSigning
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
from mirrorkit.transfer.engine import CopyReport, Engine, Graph, Root
from mirrorkit.transfer.sinks import StoreSink
from mirrorkit.transfer.sources import LayoutSource, RegistrySource, Source
from mirrorkit.trust.bundlesig import SigningKey, sign_lock, signature_beside

if TYPE_CHECKING:
    from mirrorkit.chartref import ChartRef
    from mirrorkit.installer.build import Installer
    from mirrorkit.transfer.charts import HelmChart


@dataclass
class PullOptions:
    output: Path
    jobs: int = 4
    split: int | None = None
    compress: str | None = None
    omit: set[str] = field(default_factory=set)
    depends_on: list[str] = field(default_factory=list)
    keep_work: bool = False
    # --chart: Helm chart .tgz files, oci://REGISTRY/REPO/CHART:VERSION or REPO_URL/CHART:VERSION (strings:
    # a Path would fold the scheme's '//')
    charts: list[str | Path] = field(default_factory=list)
    keep_going: bool = False     # copy everything that can be copied, then list every failure
    work_dir: Path | None = None  # --work-dir: the folder that holds the work folder (default: beside the bundle)
    sign_key: SigningKey | None = None   # --sign-key: the lock is signed (mirrorkit.trust.bundlesig)
    with_installer: bool = False  # carry mirrorkit's offline installer (built now, every platform and Python)
    installer: Path | None = None  # ... or this one, built before with `mirrorkit offline-installer -o DIR`
    package_sources: list[str] = field(default_factory=list)   # --package-source OS=FILE (mirrorkit.packages)
    allow_unsigned_repo: bool = False
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
    transfer: CopyReport = field(default_factory=CopyReport)   # the engine's blob counts (fetched: copied)
    signatures: CarriedArtifacts | None = None  # what travelled with the images: signatures, SBOMs, referrers
    signing: LockSigning | None = None           # --sign-key: who signed the lock, and when
    signature_path: Path | None = None           # NAME.lock.yaml.sig beside the bundle
    installer: LockInstaller | None = None   # the lock's installer entry, when one was carried
    package_repos: int = 0
    package_files: int = 0
    package_bytes: int = 0
    package_warnings: list[str] = field(default_factory=list)

    @property
    def saved_bytes(self) -> int:
        return self.total_bytes - self.unique_bytes - self.omitted_bytes

    @property
    def blobs_fetched(self) -> int:
        return self.transfer.blobs_copied

    @property
    def bytes_fetched(self) -> int:
        return self.transfer.bytes_copied


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
    from mirrorkit.bundle.media import holding

    work = work_dir_for(opts.output, opts.work_dir)
    with holding(opts.output, work if opts.work_dir is not None else None), \
            full_disk_reported(work, f"pulling {opts.output.name}", scratch=[work / "tmp", work / "partial"]):
        return _pull(plan, opts, endpoints, credentials, progress, signatures or SignatureOptions())


@dataclass
class _Inputs:
    """What the command line names besides the plan, read and checked before anything is fetched."""

    charts: list[HelmChart]         # --chart files (and, once fetched, charts from Helm repositories)
    remote: list[ChartRef]          # --chart oci://... and REPO_URL/CHART:VERSION
    prebuilt: Installer | None      # --installer DIR, checked against its SHA256SUMS
    installing: bool                # an installer travels (--with-installer or --installer)


def _pull(plan: Plan, opts: PullOptions, endpoints: Endpoints, credentials: CredentialStore,
          progress: Callable[[str, int], None] | None, signatures: SignatureOptions) -> PullReport:
    """The phases, in order: check the inputs, fetch repository charts, the up-to-date check by pins, walk,
    carry oci:// charts and signatures, the up-to-date check by digests, check space, fetch, packages,
    then the lock and the bundle."""
    _check_plan(plan)
    start = time.monotonic()
    lock_file = lock_path_for(opts.output)
    inputs = _read_inputs(opts)
    work = work_dir_for(opts.output, opts.work_dir)
    new_work = not work.exists()
    try:
        store = BlobStore(work)
    except OSError as exc:
        raise write_error(exc, str(work)) from None
    previous = _previous_lock(lock_file)
    with RegistryClient(endpoints, credentials, retry=opts.retry) as client:
        inputs.charts += _repo_charts(inputs.remote, endpoints, credentials, client, store)
        if previous is not None and _pins_unchanged(previous, plan, opts, inputs, signatures, client):
            return _up_to_date(store, previous, len(plan.images), inputs, lock_file, start)
        engine = Engine(opts.jobs, client.retry, omit=opts.omit, keep_going=opts.keep_going, progress=progress)
        graphs = engine.walk(_roots(plan, client, store))
        carried = _carry_signatures(plan, opts, engine, client, store, graphs, inputs, signatures)
        if not engine.report.failures and previous is not None \
                and _digests_unchanged(previous, plan, opts, graphs, inputs, carried):
            return _up_to_date(store, previous, len(graphs), inputs, lock_file, start)
        try:
            fetch = _check_space(store, graphs, opts, len(inputs.charts))
        except InputError:
            if new_work:
                shutil.rmtree(store.root, ignore_errors=True)      # nothing of this run stays behind
            raise
        if progress:
            progress("total", fetch)        # the bytes to fetch, each shared blob once
        fresh = [not _held(store, g, opts.omit) for g in graphs]
        earlier = _stored(store)
        engine.copy_blobs(graphs)
        engine.put_manifests(graphs)
        packages = _packages_or_failures(plan, opts, endpoints, store, graphs, engine.report.failures)
    report = PullReport(copied=sum(fresh), reused=len(fresh) - sum(fresh), transfer=engine.report)
    lock = build_lock(plan, opts, store, graphs, report)
    if packages is not None:
        _add_packages(packages, store, lock, report)
    carried.apply(lock)
    report.signatures = carried
    _add_charts(store, lock, inputs.charts, plan.registry, report)
    if inputs.installing:
        _add_installer(store, lock, inputs.prebuilt, report)
    interrupt.check()
    _write(lock, opts, store, earlier, report, progress)
    report.seconds = time.monotonic() - start
    if not opts.keep_work:
        shutil.rmtree(store.root, ignore_errors=True)
    return report


def _check_plan(plan: Plan) -> None:
    """A plan pull-bundle can carry: images, and no two sources for one destination."""
    if not plan.images:
        raise InputError("the plan has no images")
    # a bundle that push-bundle would refuse must not be discovered on the far side of the air gap
    check_collisions((i.source_ref, dest) for i in plan.images if (dest := i.destination_ref) is not None)


def _read_inputs(opts: PullOptions) -> _Inputs:
    """--chart and --installer, refused at once (exit 2) when malformed: before anything is fetched."""
    from mirrorkit.chartref import parse_chart_ref
    from mirrorkit.transfer.charts import load_charts

    specs = list({str(c): parse_chart_ref(str(c)) for c in opts.charts}.values())  # malformed: exit 2, at once
    charts = load_charts([s.path for s in specs if not s.remote])  # --chart files: refused before anything is fetched
    remote = [s for s in specs if s.remote]
    prebuilt = None
    if opts.installer is not None:
        from mirrorkit.installer.carry import load

        prebuilt = load(opts.installer)  # checked against its SHA256SUMS before anything is fetched
    return _Inputs(charts, remote, prebuilt, prebuilt is not None or opts.with_installer)


def _repo_charts(remote: list[ChartRef], endpoints: Endpoints, credentials: CredentialStore,
                 client: RegistryClient, store: BlobStore) -> list[HelmChart]:
    """The --chart REPO_URL/CHART:VERSION archives, downloaded into the work folder."""
    from mirrorkit.chartref import REPO

    if not remote:
        return []
    from mirrorkit.oci.httpfile import HttpFiles
    from mirrorkit.transfer.remotecharts import fetch_repo_chart

    with HttpFiles(endpoints, credentials, client.retry) as files:
        return [fetch_repo_chart(files, s, store.root / "tmp") for s in remote if s.kind == REPO]


def _same_extras(previous: Lock, opts: PullOptions, inputs: _Inputs, registry: str | None) -> bool:
    """Is everything but the images and their signatures as the bundle on disk has it (volumes, installer,
    packages, charts, the lock's signature)?"""
    from mirrorkit.transfer.charts import lock_entries

    return (_volumes_present(opts) and not inputs.installing and previous.installer is None
            and not opts.package_sources and previous.charts == lock_entries(inputs.charts, registry)
            and _signed_as_asked(previous, opts))


def _pins_unchanged(previous: Lock, plan: Plan, opts: PullOptions, inputs: _Inputs, signatures: SignatureOptions,
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


def _digests_unchanged(previous: Lock, plan: Plan, opts: PullOptions, graphs: list[Graph], inputs: _Inputs,
                       carried: CarriedArtifacts) -> bool:
    """Up to date after the walk: the same digests, blobs and artifacts as the bundle on disk
    (a re-sign, of an image or of the lock, is a change)."""
    return (_unchanged(previous, plan, graphs, opts) and _same_extras(previous, opts, inputs, plan.registry)
            and {a.digest for a in previous.artifacts} == carried.digests())


def _up_to_date(store: BlobStore, previous: Lock, images: int, inputs: _Inputs, lock_file: Path,
                start: float) -> PullReport:
    """The bundle on disk is what this run would write: it is left alone, and the work folder goes."""
    shutil.rmtree(store.root, ignore_errors=True)
    return PullReport(images=images, reused=images, up_to_date=True, lock_path=lock_file,
                      charts=len(inputs.charts), unique_bytes=sum(b.size for b in previous.blobs),
                      seconds=time.monotonic() - start, signing=previous.signing)


def _carry_signatures(plan: Plan, opts: PullOptions, engine: Engine, client: RegistryClient, store: BlobStore,
                      graphs: list[Graph], inputs: _Inputs, signatures: SignatureOptions) -> CarriedArtifacts:
    """oci:// charts, then every image's and chart's signatures, attestations, SBOMs and referrers.

    The charts are small and copied whole first (their bytes are what the signatures are judged
    on); the artifacts are found and copied through the same engine (and, with keys, verified)
    before any image bytes move; a local image has no upstream to ask. ``inputs.charts`` gains
    the oci:// charts."""
    from mirrorkit.chartref import OCI
    from mirrorkit.transfer.charts import unique_charts
    from mirrorkit.transfer.remotecharts import chart_subject, copy_oci_charts

    oci_specs = [s for s in inputs.remote if s.kind == OCI]
    oci_charts, _ = copy_oci_charts(engine, client, store, oci_specs)
    inputs.charts = unique_charts(inputs.charts + oci_charts)
    carried = carry_into_store(engine, client, store, [
        Subject.of(img.source, img.destination, img.source_ref, g.digest, g.upstream_digest or g.digest,
                   g.children)
        for img, g in zip(plan.images, graphs, strict=True) if not img.local and not g.error]
        + [chart_subject(c, s, plan.registry) for c, s in zip(oci_charts, oci_specs, strict=True)],
        signatures, opts.jobs)
    for img, g in zip(plan.images, graphs, strict=True):
        if g.upstream_digest and g.upstream_digest != g.digest and g.children and carried.artifacts:
            g.note += "; " + RESTRICTED_NOTE
            carried.notes.append(f"{img.source}: {g.note}")
    return carried


def _packages_or_failures(plan: Plan, opts: PullOptions, endpoints: Endpoints, store: BlobStore,
                          graphs: list[Graph], failures: list[str]) -> Any:
    """The driver packages (None without --package-source); raises the images' failures, if any.

    Packages are resolved against the driver images just fetched; every missing kernel is
    listed at once and nothing is written (as for images); --keep-going lists them with the
    images that failed."""
    packages = None
    if opts.package_sources and (not failures or opts.keep_going):
        try:
            packages = _carry_packages(plan, opts, endpoints, store, graphs)
        except OperationError as exc:
            if not failures:
                raise
            raise OperationError(f"{_failed(graphs, failures)}\n{exc}") from None
    if failures:
        raise _failed(graphs, failures)
    return packages


def _add_charts(store: BlobStore, lock: Lock, charts: list[HelmChart], registry: str | None,
                report: PullReport) -> None:
    """The charts' blobs join the store, the lock and index.json."""
    from mirrorkit.transfer.charts import add_to_bundle

    chart_bytes = add_to_bundle(store, lock, charts, registry)
    report.unique_bytes += chart_bytes
    report.total_bytes += chart_bytes
    report.charts = len(charts)


def _add_installer(store: BlobStore, lock: Lock, prebuilt: Installer | None, report: PullReport) -> None:
    """mirrorkit's offline installer (the --installer one, or built now) as one blob of the bundle."""
    from mirrorkit.installer.build import build_installer
    from mirrorkit.installer.carry import pack

    built = prebuilt or build_installer(store.root / "tmp" / "installer")
    lock.installer = pack(built, store)
    if all(b.digest != lock.installer.digest for b in lock.blobs):
        lock.blobs = sorted([*lock.blobs, LockBlob(lock.installer.digest, lock.installer.size)],
                            key=lambda b: b.digest)
        report.unique_bytes += lock.installer.size
        report.total_bytes += lock.installer.size
    report.installer = lock.installer


def _write(lock: Lock, opts: PullOptions, store: BlobStore, earlier: set[str] | None, report: PullReport,
           progress: Callable[[str, int], None] | None) -> None:
    """Sign the lock (--sign-key), write the volumes, then the lock and its signature beside them."""
    from mirrorkit.bundle.writer import write_bundle

    # what entered the store from here on was hashed as it arrived (the store takes nothing else):
    # the writer hashes only what an earlier run, an import or the signature phase left there
    trusted = set() if earlier is None else \
        {b.digest for b in lock.blobs if b.digest.removeprefix("sha256:") not in earlier}
    signature = None
    if opts.sign_key is not None:
        # who and when go into the lock first, so the signature covers them too
        lock.signing = opts.sign_key.record()
        signature = sign_lock(lock.dumps().encode(), opts.sign_key)
    volumes = write_bundle(store.root, lock, opts.output, split=opts.split, compress=opts.compress,
                           progress=(lambda n: progress("write", n)) if progress else None, trusted=trusted,
                           consume=not opts.keep_work, lock_signature=signature)
    lock_file = lock_path_for(opts.output)
    write_atomic(lock_file, lock.dumps())
    sig_file = signature_beside(lock_file)
    if signature is not None:
        write_atomic(sig_file, signature)      # for cosign verify-blob: the same text as bundle.yaml.sig
        report.signing, report.signature_path = lock.signing, sig_file
    else:
        sig_file.unlink(missing_ok=True)       # an older signature would not match the new lock
    report.volumes = volumes
    report.lock_path = lock_file


def _signed_as_asked(previous: Lock, opts: PullOptions) -> bool:
    """With --sign-key the bundle on disk counts as up to date only if that key signed it already."""
    if opts.sign_key is None:
        return True
    return (previous.signing is not None and previous.signing.key_fingerprint == opts.sign_key.fingerprint
            and signature_beside(lock_path_for(opts.output)).is_file())
def _carry_packages(plan: Plan, opts: PullOptions, endpoints: Endpoints, store: BlobStore,
                    graphs: list[Graph]) -> Any:
    """The packages of every runtime-compiled node's driver (plan ``packages:``), through --package-source."""
    from mirrorkit.oci.httpfile import HttpFiles
    from mirrorkit.packages.carry import carry, missing_message, parse_package_source
    from mirrorkit.packages.needs import needs_from_plan

    sources = [parse_package_source(text) for text in opts.package_sources]
    needs = needs_from_plan(plan.packages, "plan")
    if not needs:
        raise InputError("--package-source: the plan lists no driver packages (no runtime-compiled node "
                         "with a kernel; plan again without --no-driver-packages)")
    manifests = {img.source: store.read(g.digest) for img, g in zip(plan.images, graphs, strict=True)
                 if not g.error and store.has(g.digest)}
    with HttpFiles(endpoints) as files:
        carried = carry(needs, sources, manifests, lambda d: store.path(d).open("rb"), files,
                        store.root / "packages", opts.allow_unsigned_repo)
    if carried.missing:
        raise OperationError(missing_message(carried.missing))
    return carried


def _add_packages(carried: Any, store: BlobStore, lock: Lock, report: PullReport) -> None:
    """Package files join the blob store (under their sha256) and the lock (blobs and package_repos)."""
    from mirrorkit.lockpackages import LockPackageFile, LockPackageRepo

    have = {b.digest for b in lock.blobs}
    for hexdigest, path in carried.files.items():
        digest = f"sha256:{hexdigest}"
        if not store.has(digest):
            store.adopt(path, digest)          # hashed again on the way in: the store takes nothing else
        if digest not in have:
            size = store.size(digest)
            lock.blobs.append(LockBlob(digest, size))
            have.add(digest)
            report.unique_bytes += size
            report.total_bytes += size
            report.package_bytes += size
    lock.blobs.sort(key=lambda b: b.digest)
    lock.package_repos = [LockPackageRepo(os=r.os, name=r.name, family=r.family, source=r.source,
                                          repo_file=r.repo_file, repo_text=r.repo_text, signed_by=r.signed_by,
                                          files=[LockPackageFile(f.path, f.sha256, f.size, f.kind) for f in r.files])
                          for r in carried.repos]
    report.package_repos = len(lock.package_repos)
    report.package_files = sum(len(r.files) for r in lock.package_repos)
    for need in carried.uncovered:
        report.package_warnings.append(f"{need.os_tag} kernel {need.kernel}: no --package-source matches "
                                       f"{need.os_tag}; its driver will need a package repository")


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


def _volumes_present(opts: PullOptions) -> bool:
    """Are the volumes on disk the ones this run would write: the same names, the same ``--split``?"""
    from mirrorkit.bundle.media import written_as

    return written_as(opts.output, opts.split, opts.compress)


VOLUME_HEAD = 64 << 10         # what each volume repeats beside the lock: layout files, tar records
PER_IMAGE = 4 << 10            # the lock's and index.json's lines for one image


def _check_space(store: BlobStore, graphs: list[Graph], opts: PullOptions, charts: int) -> int:
    """Refuse to start (exit 2) when the work folder's or the bundle's filesystem lacks the room this run needs.

    The work folder needs the blobs not in it yet. The bundle needs its blobs again,
    unless it shares the work folder's filesystem and the work folder is not kept: the
    writer then hands each blob's space over as it goes, so only the volumes' repeated
    heads and the largest blob (hashed after it is copied) come on top. Returns the bytes to fetch.
    """
    from mirrorkit.bundle.media import check_space, existing_folder

    sizes = {d: s for g in graphs for d, s in g.blobs if d not in opts.omit}
    fetch = sum(s for d, s in sizes.items() if not store.has(d))
    carried = sum(sizes.values())
    volumes = -(-carried // opts.split) if opts.split else 1
    heads = volumes * (VOLUME_HEAD + PER_IMAGE * (len(graphs) + charts))
    out_dir = opts.output.parent
    same = os.stat(existing_folder(out_dir)).st_dev == os.stat(store.root).st_dev
    # consumed: the copy of one blob plus at most one more the volume hash is still reading
    out_need = heads + (2 * max(sizes.values(), default=0) if same and not opts.keep_work else carried)
    check_space([(store.root, fetch), (out_dir, out_need)])
    return fetch

