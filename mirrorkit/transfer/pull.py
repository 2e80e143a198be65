"""pull-bundle: copy every planned image into one blob store through the engine, then write the bundle.

Registry -> blob store: every manifest and blob moves through mirrorkit.transfer.engine
(one pool of blob downloads across all images, each blob fetched once, resumed
with Range after a cut in this run or the next, hashed as it streams). Blobs
already in the work folder are not fetched again: that is what makes an
interrupted or repeated pull cheap. Images from local sources (``docker-archive:``
and friends) are first imported into the same store by mirrorkit.transfer.local.

This module holds the options, the report and the order of the phases (``_pull``); the
phases themselves live beside it: pull_inputs (the plan, --chart and --installer, checked
before anything is fetched), pull_state (the bundle an earlier run left, and whether it is
up to date), pull_store (the work folder's roots, what it holds, the room the rest needs),
pull_packages (--package-source) and pull_write (the lock, its signature and the volumes).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirrorkit import interrupt
from mirrorkit.errors import InputError, OperationError
from mirrorkit.files import full_disk_reported, write_error
from mirrorkit.lock import Lock, LockInstaller, LockSigning
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.layout import BlobStore
from mirrorkit.oci.retry import RetryPolicy
from mirrorkit.oci.transport import Endpoints
from mirrorkit.plan import Plan
from mirrorkit.transfer.artifacts import (
    RESTRICTED_NOTE,
    CarriedArtifacts,
    SignatureOptions,
    Subject,
    carry_into_store,
)
from mirrorkit.transfer.engine import CopyReport, Engine, Graph
from mirrorkit.transfer.pull_inputs import Inputs, check_plan, read_inputs, repo_charts
from mirrorkit.transfer.pull_packages import add_packages, carry_packages
from mirrorkit.transfer.pull_state import digests_unchanged, lock_path_for, pins_unchanged, previous_lock, work_dir_for
from mirrorkit.transfer.pull_store import check_room, held, image_roots, stored
from mirrorkit.transfer.pull_write import add_charts, add_installer, build_lock, sign_and_write
from mirrorkit.trust.bundlesig import SigningKey


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


def _failed(graphs: list[Graph], failures: list[str]) -> OperationError:
    lines = [f"{g.root.label}: {g.error}" for g in graphs if g.error] or failures
    return OperationError(f"{len(lines)} image(s) could not be copied:\n  " + "\n  ".join(lines))


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


def _pull(plan: Plan, opts: PullOptions, endpoints: Endpoints, credentials: CredentialStore,
          progress: Callable[[str, int], None] | None, signatures: SignatureOptions) -> PullReport:
    """The phases, in order: check the inputs, fetch repository charts, the up-to-date check by pins, walk,
    carry oci:// charts and signatures, the up-to-date check by digests, check space, fetch, packages,
    then the lock and the bundle."""
    check_plan(plan)
    start = time.monotonic()
    lock_file = lock_path_for(opts.output)
    inputs = read_inputs(opts)
    work = work_dir_for(opts.output, opts.work_dir)
    new_work = not work.exists()
    try:
        store = BlobStore(work)
    except OSError as exc:
        raise write_error(exc, str(work)) from None
    previous = previous_lock(lock_file)
    with RegistryClient(endpoints, credentials, retry=opts.retry) as client:
        inputs.charts += repo_charts(inputs.remote, endpoints, credentials, client, store)
        if previous is not None and pins_unchanged(previous, plan, opts, inputs, signatures, client):
            return _up_to_date(store, previous, len(plan.images), inputs, lock_file, start)
        engine = Engine(opts.jobs, client.retry, omit=opts.omit, keep_going=opts.keep_going, progress=progress)
        graphs = engine.walk(image_roots(plan, client, store))
        carried = _carry_signatures(plan, opts, engine, client, store, graphs, inputs, signatures)
        if not engine.report.failures and previous is not None \
                and digests_unchanged(previous, plan, opts, graphs, inputs, carried):
            return _up_to_date(store, previous, len(graphs), inputs, lock_file, start)
        try:
            fetch = check_room(store, graphs, opts, len(inputs.charts))
        except InputError:
            if new_work:
                shutil.rmtree(store.root, ignore_errors=True)      # nothing of this run stays behind
            raise
        if progress:
            progress("total", fetch)        # the bytes to fetch, each shared blob once
        fresh = [not held(store, g, opts.omit) for g in graphs]
        earlier = stored(store)
        engine.copy_blobs(graphs)
        engine.put_manifests(graphs)
        packages = _packages_or_failures(plan, opts, endpoints, store, graphs, engine.report.failures)
    report = PullReport(copied=sum(fresh), reused=len(fresh) - sum(fresh), transfer=engine.report)
    lock = build_lock(plan, opts, store, graphs, report)
    if packages is not None:
        add_packages(packages, store, lock, report)
    carried.apply(lock)
    report.signatures = carried
    add_charts(store, lock, inputs.charts, plan.registry, report)
    if inputs.installing:
        add_installer(store, lock, inputs.prebuilt, report)
    interrupt.check()
    sign_and_write(lock, opts, store, earlier, report, progress)
    report.seconds = time.monotonic() - start
    if not opts.keep_work:
        shutil.rmtree(store.root, ignore_errors=True)
    return report


def _up_to_date(store: BlobStore, previous: Lock, images: int, inputs: Inputs, lock_file: Path,
                start: float) -> PullReport:
    """The bundle on disk is what this run would write: it is left alone, and the work folder goes."""
    shutil.rmtree(store.root, ignore_errors=True)
    return PullReport(images=images, reused=images, up_to_date=True, lock_path=lock_file,
                      charts=len(inputs.charts), unique_bytes=sum(b.size for b in previous.blobs),
                      seconds=time.monotonic() - start, signing=previous.signing)


def _carry_signatures(plan: Plan, opts: PullOptions, engine: Engine, client: RegistryClient, store: BlobStore,
                      graphs: list[Graph], inputs: Inputs, signatures: SignatureOptions) -> CarriedArtifacts:
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
            packages = carry_packages(plan, opts, endpoints, store, graphs)
        except OperationError as exc:
            if not failures:
                raise
            raise OperationError(f"{_failed(graphs, failures)}\n{exc}") from None
    if failures:
        raise _failed(graphs, failures)
    return packages
