"""pull-bundle: copy every planned image into one blob store, then write the bundle.

Manifests are read with mirrorkit's own registry client (to know every blob an
image needs, and to pin the copy to a digest); the image bytes move through
skopeo into a per-image ``dir:`` folder and are then adopted into the shared
store, each blob kept once. skopeo 1.9's ``oci:`` destination cannot hold a
Docker manifest list without rewriting it (it refuses under
``--preserve-digests``), so ``dir:`` is the transport that keeps every digest.
An image whose blobs are all in the store already is not copied again: that is
what makes an interrupted or repeated pull cheap. Layers of OCI-typed images from
8 MiB up are fetched first by mirrorkit.download, which resumes a cut download
with Range (in this run or the next); skopeo then finds them in the shared store.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirrorkit import __version__, interrupt
from mirrorkit.copy.artifacts import RESTRICTED_NOTE, CarriedArtifacts, SignatureOptions  # signatures:
from mirrorkit.copy.download import fetch_blob
from mirrorkit.copy.skopeo import auth_file, cert_dirs, copy_argv, run_copy
from mirrorkit.errors import InputError, OperationError
from mirrorkit.files import full_disk_reported
from mirrorkit.lock import Lock, LockBlob, LockImage
from mirrorkit.mapping import check_collisions
from mirrorkit.oci import manifests
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.layout import BlobStore
from mirrorkit.oci.transport import Endpoints
from mirrorkit.plan import Plan, PlanImage
from mirrorkit.refs import Ref

RESUMABLE_MIN = 8 << 20
OCI_TYPES = frozenset({"application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json"})


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
    resumable_min: int = RESUMABLE_MIN  # layers this big are fetched by mirrorkit.download, resumably


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
    signatures: CarriedArtifacts | None = None  # signatures: what travelled with the images

    @property
    def saved_bytes(self) -> int:
        return self.total_bytes - self.unique_bytes - self.omitted_bytes


@dataclass
class _Fetched:
    img: PlanImage
    top_digest: str
    top_media_type: str
    digest: str
    media_type: str
    children: list[str]
    blobs: list[tuple[str, int]]
    manifest_bytes: int
    copy_refs: list[tuple[str, bool]]
    note: str = ""


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


class Puller:
    def __init__(self, plan: Plan, opts: PullOptions, endpoints: Endpoints,
                 credentials: CredentialStore, client: RegistryClient | None = None,
                 progress: Callable[[str, int], None] | None = None) -> None:
        self.plan = plan
        self.opts = opts
        self.endpoints = endpoints
        self.credentials = credentials
        self.client = client or RegistryClient(endpoints, credentials)
        self.progress = progress or (lambda what, n: None)
        self.store = BlobStore(work_dir_for(opts.output))
        self.cert_dirs: dict[str, str] = {}  # network host -> CA folder for skopeo (set by copy_all)
        self._blob_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def source_for_skopeo(self, ref: Ref, digest: str) -> tuple[str, bool]:
        base = self.client.base_url(ref.registry)
        host = base.split("://", 1)[1]
        insecure = base.startswith("http://") or self.endpoints.is_insecure(ref.registry)
        return f"docker://{host}/{ref.repository}@{digest}", insecure

    # -- manifests ------------------------------------------------------------
    def inspect(self, img: PlanImage) -> _Fetched:
        if img.local:
            return self.inspect_local(img)
        ref = img.source_ref
        top = self.client.get_manifest(ref, img.digest or ref.reference)
        if img.digest and top.digest != img.digest:
            raise OperationError(f"{img.source}: registry returned {top.digest}, plan pins {img.digest}")
        self.store.add_bytes(top.data)
        what = f"{img.source}@{top.digest}"
        doc = manifests.parse(top.data, what)
        if not manifests.is_index(doc, top.media_type):
            blobs = manifests.image_blobs(doc, what)
            return _Fetched(img, top.digest, top.media_type, top.digest, top.media_type, [], blobs,
                            len(top.data), [self.source_for_skopeo(ref, top.digest)])
        kids = manifests.children(doc, what)
        chosen = [c for c in kids if manifests.wanted(c, self.plan.platforms)]
        if not chosen:
            raise OperationError(f"{img.source}: none of the platforms {', '.join(self.plan.platforms)} "
                                 "is in its index")
        blobs: list[tuple[str, int]] = []
        size = len(top.data)
        for child in chosen:
            m = self.client.get_manifest(ref, child.digest)
            self.store.add_bytes(m.data)
            size += len(m.data)
            blobs.extend(manifests.image_blobs(manifests.parse(m.data, f"{img.source}@{child.digest}"),
                                               f"{img.source}@{child.digest}"))
        if len(chosen) == len(kids):
            return _Fetched(img, top.digest, top.media_type, top.digest, top.media_type,
                            [c.digest for c in chosen], blobs, size,
                            [self.source_for_skopeo(ref, top.digest)])
        new_index = manifests.restrict_index(top.data, self.plan.platforms, what)
        digest = self.store.add_bytes(new_index)
        note = (f"restricted to {', '.join(self.plan.platforms)}: index rewritten, digest changed "
                f"from {top.digest} to {digest}")
        return _Fetched(img, top.digest, top.media_type, digest, top.media_type,
                        [c.digest for c in chosen], blobs, size - len(top.data) + len(new_index),
                        [self.source_for_skopeo(ref, c.digest) for c in chosen], note)

    # --- bundle branch hook (local sources): the engine's pull should call import_image the same way
    def inspect_local(self, img: PlanImage) -> _Fetched:
        """A local image (docker-archive: and the like) is imported whole by skopeo into the store at once:
        every platform it has, nothing left to copy."""
        from mirrorkit.copy.local import import_image

        digest, media_type = import_image(str(img.local), self.store)
        if img.digest and digest != img.digest:
            raise OperationError(f"{img.source}: {img.local} holds {digest}, the plan pins {img.digest}")
        data = self.store.read(digest)
        doc = manifests.parse(data, img.source)
        kids = [c.digest for c in manifests.children(doc, img.source)] if manifests.is_index(doc, media_type) else []
        docs = [manifests.parse(self.store.read(k), f"{img.source}@{k}") for k in kids] or [doc]
        blobs = [b for d in docs for b in manifests.image_blobs(d, img.source)]
        size = len(data) + sum(self.store.size(k) for k in kids)
        return _Fetched(img, digest, media_type, digest, media_type, kids, blobs, size, [],
                        f"imported from {img.local}")

    # -- bytes ----------------------------------------------------------------
    def missing(self, f: _Fetched) -> list[str]:
        return [d for d, _ in f.blobs if d not in self.opts.omit and not self.store.has(d)]

    def copy(self, f: _Fetched, n: int, authfile: str | None) -> bool:
        if not self.missing(f):
            return False
        all_images = len(f.children) > 0 and len(f.copy_refs) == 1
        if f.media_type in OCI_TYPES:
            self._fetch_large(f)
        for k, (src, insecure) in enumerate(f.copy_refs):
            if f.media_type in OCI_TYPES and self._copy_oci(f, n, k, src, insecure, all_images, authfile):
                continue
            self._copy_dir(f, n, k, src, insecure, all_images, authfile)
        still = self.missing(f)
        if still:
            raise OperationError(f"{f.img.source}: skopeo did not deliver {still[0]}")
        return True

    def _fetch_large(self, f: _Fetched) -> None:
        """Big layers first, resumably (mirrorkit.download); skopeo's ``oci:`` copy then finds
        them in the shared blob folder. Only for OCI-typed images: ``dir:`` would fetch them again."""
        for digest, size in f.blobs:
            if size < self.opts.resumable_min or digest in self.opts.omit:
                continue
            interrupt.check()
            with self._locks_lock:
                lock = self._blob_locks.setdefault(digest, threading.Lock())
            with lock:                        # two images sharing a layer: one download, one file
                if not self.store.has(digest):
                    fetch_blob(self.client, f.img.source_ref, digest, size, self.store,
                               lambda n: self.progress("bytes", n))

    def _copy_oci(self, f: _Fetched, n: int, k: int, src: str, insecure: bool, all_images: bool,
                  authfile: str | None) -> bool:
        """OCI-typed images go through ``oci:`` with the store as shared blob folder: blobs
        already fetched for another image are not downloaded again. False when skopeo
        would have to convert a manifest (a Docker-typed child), which ``dir:`` then handles."""
        layout = self.store.tmp / f"oci-{n}-{k}"
        shutil.rmtree(layout, ignore_errors=True)
        argv = copy_argv(src, f"oci:{layout}:image", all_images=all_images, src_insecure=insecure,
                         src_cert_dir=self._cert_dir(src),
                         authfile=authfile, dest_shared_blob_dir=str(self.store.root / "blobs"))
        try:
            run_copy(argv, f"copying {f.img.source}", secrets=self.credentials.secrets())
        except OperationError as exc:
            if "convert" in str(exc) or "preserve digests" in str(exc).lower():
                return False
            raise
        finally:
            shutil.rmtree(layout, ignore_errors=True)
        self.progress("bytes", sum(size for d, size in f.blobs
                                   if d not in self.opts.omit and size < self.opts.resumable_min))
        return True

    def _copy_dir(self, f: _Fetched, n: int, k: int, src: str, insecure: bool, all_images: bool,
                  authfile: str | None) -> None:
        """``dir:`` keeps any manifest type byte for byte; its blobs are adopted into the store."""
        folder = self.store.tmp / f"img-{n}-{k}"
        shutil.rmtree(folder, ignore_errors=True)
        argv = copy_argv(src, f"dir:{folder}", all_images=all_images, src_insecure=insecure, authfile=authfile,
                         src_cert_dir=self._cert_dir(src))
        run_copy(argv, f"copying {f.img.source}", secrets=self.credentials.secrets())
        for path in sorted(folder.iterdir()):
            name = path.name
            if len(name) == 64 and all(ch in "0123456789abcdef" for ch in name):
                size = path.stat().st_size
                if self.store.adopt(path, f"sha256:{name}"):
                    self.progress("bytes", size)
        shutil.rmtree(folder, ignore_errors=True)

    def inspect_all(self) -> list[_Fetched]:
        with ThreadPoolExecutor(max_workers=max(1, self.opts.jobs)) as pool:
            return list(pool.map(self.inspect, self.plan.images))

    def copy_all(self, fetched: list[_Fetched]) -> tuple[Lock, PullReport]:
        report = PullReport()
        hosts = {}
        for f in fetched:
            ref = f.img.source_ref
            hosts[self.client.base_url(ref.registry).split("://", 1)[1]] = ref.registry
        # skopeo must verify TLS with the CAs the client trusts (--ca-cert, certs.d): without
        # them a TLS upstream trusted only through --ca-cert failed inside skopeo
        with auth_file(self.credentials, hosts) as authfile, cert_dirs(self.endpoints, hosts) as self.cert_dirs, \
                ThreadPoolExecutor(max_workers=max(1, self.opts.jobs)) as pool:
            done = list(pool.map(lambda a: self._copy_one(*a, authfile),
                                 [(f, n) for n, f in enumerate(fetched)]))
        report.copied = sum(done)
        report.reused = len(done) - report.copied
        return self.build_lock(fetched, report), report

    def _cert_dir(self, src: str) -> str | None:
        """The CA folder for a ``docker://HOST/REPO@DIGEST`` source, if its host has extra CAs."""
        return self.cert_dirs.get(src.split("://", 1)[-1].split("/", 1)[0])

    def _copy_one(self, f: _Fetched, n: int, authfile: str | None) -> bool:
        interrupt.check()
        copied = self.copy(f, n, authfile)
        self.progress("image", 1)
        return copied

    def build_lock(self, fetched: list[_Fetched], report: PullReport) -> Lock:
        images: list[LockImage] = []
        carried: dict[str, int] = {}
        omitted: dict[str, int] = {}
        index_entries = []
        for f in fetched:
            blob_digests = []
            for digest, _ in f.blobs:
                if digest not in blob_digests:
                    blob_digests.append(digest)
            for digest in [f.digest, *f.children]:
                carried[digest] = self.store.size(digest)
            for digest in blob_digests:
                if digest in self.opts.omit:
                    omitted[digest] = dict(f.blobs)[digest]
                else:
                    carried[digest] = self.store.size(digest)
            report.total_bytes += f.manifest_bytes + sum(size for _, size in f.blobs)
            images.append(LockImage(
                source=f.img.source, destination=f.img.destination, digest=f.digest,
                media_type=f.media_type, platforms=f.img.platforms or [], manifests=f.children,
                blobs=blob_digests, planned_digest=f.top_digest, note=f.note))
            index_entries.append({"mediaType": f.media_type, "digest": f.digest,
                                  "size": self.store.size(f.digest),
                                  "annotations": {"org.opencontainers.image.ref.name": f.img.source,
                                                  "dev.mirrorkit.destination": f.img.destination or ""}})
        for digest in list(omitted):
            if digest in carried:
                del omitted[digest]
        self.store.write_index(index_entries)
        report.images = len(images)
        report.unique_bytes = sum(carried.values())
        report.omitted_bytes = sum(omitted.values())
        return Lock(
            id=str(uuid.uuid4()),
            created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            generator=f"mirrorkit {__version__}", plan=self.plan, images=images,
            blobs=[LockBlob(d, s) for d, s in sorted(carried.items())],
            omitted=[LockBlob(d, s) for d, s in sorted(omitted.items())],
            depends_on=list(self.opts.depends_on),
        )


def pull_bundle(plan: Plan, opts: PullOptions, endpoints: Endpoints, credentials: CredentialStore,
                progress: Callable[[str, int], None] | None = None,
                signatures: SignatureOptions | None = None) -> PullReport:  # signatures: the last parameter
    """Fetch, lock and write the bundle; up to date bundles are left alone."""
    from mirrorkit.copy.charts import load_charts

    if not plan.images:
        raise InputError("the plan has no images")
    # a bundle that push-bundle would refuse must not be discovered on the far side of the air gap
    check_collisions((i.source_ref, i.destination_ref) for i in plan.images if i.destination)
    charts = load_charts(opts.charts)  # --chart: refused before anything is fetched
    work = work_dir_for(opts.output)
    # --- bundle branch hook (ENOSPC): a full disk anywhere while fetching or writing gives one line naming the
    # work folder; the engine's pull should wrap its phases the same way (mirrorkit.files.full_disk_reported)
    with full_disk_reported(work, f"pulling {opts.output.name}", scratch=[work / "tmp", work / "partial"]), \
            RegistryClient(endpoints, credentials) as client:
        return _pull(Puller(plan, opts, endpoints, credentials, client, progress), charts, progress,
                     signatures or SignatureOptions())


def _pull(puller: Puller, charts: list[Any], progress: Callable[[str, int], None] | None,
          signatures: SignatureOptions) -> PullReport:
    from mirrorkit.bundle.writer import write_bundle
    from mirrorkit.copy.charts import add_to_bundle, lock_entries

    plan, opts = puller.plan, puller.opts
    start = time.monotonic()
    lock_file = lock_path_for(opts.output)
    fetched = puller.inspect_all()
    # signatures: carry artifacts into the store and, with keys, verify before any image bytes move
    from mirrorkit.copy.artifacts import Subject, carry_from_registry
    carried = carry_from_registry(puller.client, puller.store, [
        Subject.of(f.img.source, f.img.destination, f.img.source_ref, f.digest, f.top_digest, f.children)
        for f in fetched if not f.img.local], signatures, opts.jobs)  # a local image has no upstream to ask
    for f in fetched:
        if f.top_digest != f.digest and carried.artifacts:
            f.note += "; " + RESTRICTED_NOTE
            carried.notes.append(f"{f.img.source}: {f.note}")
    # signatures: end
    previous = _previous_lock(lock_file)
    if previous is not None and _unchanged(previous, fetched, opts) and _volumes_present(opts.output) \
            and previous.charts == lock_entries(charts, plan.registry) \
            and {a.digest for a in previous.artifacts} == carried.digests():  # signatures: a re-sign is a change
        shutil.rmtree(puller.store.root, ignore_errors=True)
        return PullReport(images=len(fetched), reused=len(fetched), up_to_date=True, lock_path=lock_file,
                          charts=len(charts),
                          unique_bytes=sum(b.size for b in previous.blobs),
                          seconds=time.monotonic() - start)
    lock, report = puller.copy_all(fetched)
    carried.apply(lock)  # signatures: artifacts and their blobs join the lock
    report.signatures = carried  # signatures:
    # charts: their blobs join the store, the lock and index.json
    chart_bytes = add_to_bundle(puller.store, lock, charts, plan.registry)
    report.unique_bytes += chart_bytes
    report.total_bytes += chart_bytes
    report.charts = len(charts)
    interrupt.check()
    volumes = write_bundle(puller.store.root, lock, opts.output, split=opts.split, compress=opts.compress,
                           progress=(lambda n: progress("write", n)) if progress else None)
    tmp = lock_file.with_name(f".{lock_file.name}.partial")
    tmp.write_text(lock.dumps())
    tmp.replace(lock_file)
    report.volumes = volumes
    report.lock_path = lock_file
    report.seconds = time.monotonic() - start
    if not opts.keep_work:
        shutil.rmtree(puller.store.root, ignore_errors=True)
    return report


def _previous_lock(path: Path) -> Lock | None:
    from mirrorkit.lock import loads_lock

    if not path.is_file():
        return None
    try:
        return loads_lock(path.read_text(), str(path))
    except (InputError, OSError):
        return None


def _unchanged(old: Lock, fetched: list[_Fetched], opts: PullOptions) -> bool:
    """Would this run write the same bundle as the one already on disk?"""
    images = sorted((f.img.source, f.img.destination, f.digest) for f in fetched)
    needed = {d for f in fetched for d, _ in f.blobs} | {d for f in fetched for d in [f.digest, *f.children]}
    carried = {d for d in needed if d not in opts.omit or d in {f.digest for f in fetched}}
    return (images == sorted((i.source, i.destination, i.digest) for i in old.images)
            and carried <= {b.digest for b in old.blobs}
            and sorted(old.depends_on) == sorted(opts.depends_on))


def _volumes_present(output: Path) -> bool:
    stem = bundle_stem(output)
    return output.exists() or any(stem.parent.glob(f"{stem.name}*.tar*"))
