"""push-bundle: verify an untrusted bundle, then load it into the private registry.

Order matters for an air-gapped site: the whole bundle is checked (every blob
hashed against the lock) before a single byte is pushed; blobs the registry
already has are skipped, so a rerun after an interruption uploads only what is
missing; manifests go last and are uploaded as the exact bytes the lock names;
and afterwards every destination manifest is fetched and hashed. Blobs are read
straight from the tar (or bundle folder): no scratch copy of the bundle.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirrorkit import interrupt
from mirrorkit.bundle.reader import BundleReader
from mirrorkit.destinations import destination_map
from mirrorkit.errors import AuthError, NotFoundError, OperationError, RegistryError
from mirrorkit.lock import Lock
from mirrorkit.oci import manifests
from mirrorkit.oci.client import RegistryClient
from mirrorkit.refs import Ref, RegistryTarget


@dataclass
class PushReport:
    images_pushed: int = 0
    images_skipped: int = 0
    blobs_uploaded: int = 0
    bytes_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    bytes_skipped: int = 0
    verified: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    charts_pushed: int = 0
    charts_skipped: int = 0
    signatures: Any = None        # signatures: PushedArtifacts, when the bundle carried any
    verifications: list[Any] = field(default_factory=list)  # signatures: LockVerification per digest


@dataclass
class VerifyResult:
    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    unreadable: set[tuple[str, str, str]] = field(default_factory=set)   # (registry, repository, blob digest)

    @property
    def passed(self) -> bool:
        return not self.missing and not self.different


def verify_registry(client: RegistryClient, expected: list[tuple[Ref, str | None, list[str]]],
                    jobs: int = 4, children: bool = True, blobs: bool = False) -> VerifyResult:
    """Fetch and hash every destination manifest, and fetch each child by digest.

    ``children=False`` checks only the top-level manifests: a registry accepts an
    index only when the manifests it lists are there, so this is the cheap
    "is there anything to do?" question a rerun asks first. ``blobs=True`` also
    asks for every config and layer of every platform (HEAD): a registry that lost
    a blob, or whose link to it a crash left broken, still serves the manifest, and
    nodes would find out only when they pull.
    """
    result = VerifyResult()

    def one(item: tuple[Ref, str | None, list[str]]) -> tuple[str, str, str]:
        dest, digest, children_of = item
        try:
            got = client.get_manifest(dest)
        except NotFoundError:
            return "missing", str(dest), "not in the registry"
        if digest and got.digest != digest:
            return "different", str(dest), f"registry has {got.digest}, expected {digest}"
        for child in children_of if children and not blobs else []:
            try:
                client.get_manifest(dest, child)
            except NotFoundError:
                return "missing", str(dest), f"child manifest {child} is missing"
        problem = _unreadable_blob(client, dest, got.data, got.media_type) if blobs else None
        if problem:
            result.unreadable.add((dest.registry, dest.repository, problem[0]))
            return "blob", str(dest), problem[1]
        return "ok", str(dest), got.digest

    # verification is many small GETs: twice the copy's parallelism keeps the round trips overlapped
    with ThreadPoolExecutor(max_workers=max(2, 2 * jobs)) as pool:
        for state, name, detail in pool.map(one, expected):
            result.states.append(state)
            if state == "ok":
                result.ok.append(f"{name}@{detail}")
            elif state in ("missing", "blob"):       # "blob": the manifest is there, a blob of it is not
                result.missing.append(f"{name}: {detail}")
            else:
                result.different.append(f"{name}: {detail}")
    return result


def _unreadable_blob(client: RegistryClient, dest: Ref, data: bytes, media_type: str) -> tuple[str, str] | None:
    """The first child manifest or blob of the image the registry cannot serve (digest, description)."""
    what = str(dest)
    doc = manifests.parse(data, what)
    docs = [doc]
    if manifests.is_index(doc, media_type):
        docs = []
        for child in manifests.children(doc, what):
            try:
                docs.append(manifests.parse(client.get_manifest(dest, child.digest).data, f"{what}@{child.digest}"))
            except NotFoundError:
                return child.digest, f"child manifest {child.digest} is missing"
    for image in docs:
        for digest, _ in manifests.image_blobs(image, what):
            try:
                if not client.blob_exists(dest, digest):
                    return digest, f"blob {digest} is missing"
            except (AuthError, NotFoundError):
                raise
            except RegistryError as exc:
                return digest, f"blob {digest} cannot be read: {exc}"
    return None


class Pusher:
    def __init__(self, reader: BundleReader, client: RegistryClient, registry: RegistryTarget | None,
                 mapping: str | None, jobs: int = 4,
                 progress: Callable[[str, int], None] | None = None, check_blobs: bool = False) -> None:
        self.reader = reader
        self.check_blobs = check_blobs
        self.unreadable: set[tuple[str, str, str]] = set()
        self.lock: Lock = reader.lock
        self.client = client
        self.jobs = max(1, jobs)
        self.progress = progress or (lambda what, n: None)
        self.dest = destination_map(self.lock.plan, [(i.source, i.destination) for i in self.lock.images],
                                    registry, mapping)
        self.registry = registry
        self.report = PushReport()
        self.sizes = self.lock.blob_sizes()
        self.manifest_digests = self.lock.manifest_digests()
        self._lock = threading.Lock()

    # -- plan of work ---------------------------------------------------------------
    def needs(self) -> dict[str, list[Ref]]:
        """blob digest -> destination repositories (as Refs) that must hold it."""
        needs: dict[str, list[Ref]] = {}
        for img in self.lock.images:
            dest = self.dest[img.source]
            for digest in img.blobs:
                repos = needs.setdefault(digest, [])
                if all(r.name != dest.name for r in repos):
                    repos.append(dest)
        return needs

    def check_omitted(self, needs: dict[str, list[Ref]]) -> None:
        """A differential bundle's left-out blobs must already be in the registry, or nothing is pushed."""
        omitted = {b.digest for b in self.lock.omitted}
        lacking = []
        for digest in sorted(omitted & set(needs)):
            holders = [r for r in needs[digest] if self._blob_there(r, digest)]
            for repo in needs[digest]:
                if repo in holders:
                    continue
                if holders and self.client.mount_blob(repo.registry, repo.repository, digest,
                                                      holders[0].repository):
                    continue
                lacking.append(f"{digest} (for {repo.name})")
        if lacking:
            dep = ", ".join(self.lock.depends_on) or "an earlier bundle"
            raise OperationError(f"this differential bundle depends on {dep}, but the registry lacks "
                                 f"{len(lacking)} blob(s) it left out, e.g. {lacking[0]}; push that first")

    def missing_pairs(self, needs: dict[str, list[Ref]]) -> dict[str, list[Ref]]:
        todo = [(d, r) for d, repos in needs.items() for r in repos]

        def has(pair: tuple[str, Ref]) -> bool:
            return self._blob_there(pair[1], pair[0])

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            present = list(pool.map(has, todo))
        missing: dict[str, list[Ref]] = {}
        holders: dict[str, list[Ref]] = {}
        for (digest, repo), there in zip(todo, present, strict=True):
            if there:
                self.report.blobs_skipped += 1
                self.report.bytes_skipped += self.sizes[digest]
                holders.setdefault(digest, []).append(repo)
            else:
                missing.setdefault(digest, []).append(repo)
        for digest in list(missing):
            missing[digest] = self._mount_from_holders(digest, missing[digest], holders.get(digest, []))
            if not missing[digest]:
                del missing[digest]
        return missing

    def _mount_from_holders(self, digest: str, missing: list[Ref], holders: list[Ref]) -> list[Ref]:
        """Mount into each repository lacking the blob from one that has it; returns those still lacking.

        After an interrupted push a shared layer is often in one repository but not yet in
        the others: it is mounted there, not uploaded again.
        """
        still = []
        for repo in missing:
            interrupt.check()
            source = next((h for h in holders if h.registry == repo.registry), None)
            if source and self.client.mount_blob(repo.registry, repo.repository, digest, source.repository):
                self._count(mounted=1)
            else:
                still.append(repo)
        return still

    # -- bytes --------------------------------------------------------------------
    def _deliver(self, digest: str, repos: list[Ref], opener: Callable[[], Any]) -> None:
        size = self.sizes[digest]
        first, rest = repos[0], repos[1:]
        self.client.upload_blob(first.registry, first.repository, digest, size, opener)
        self._count(uploaded=size)
        self.progress("bytes", size)
        for repo in rest:
            interrupt.check()
            if self.client.mount_blob(repo.registry, repo.repository, digest, first.repository):
                self._count(mounted=1)
            else:
                self.client.upload_blob(repo.registry, repo.repository, digest, size, opener)
                self._count(uploaded=size)

    def _count(self, uploaded: int | None = None, mounted: int = 0) -> None:
        with self._lock:
            if uploaded is not None:
                self.report.blobs_uploaded += 1
                self.report.bytes_uploaded += uploaded
            self.report.blobs_mounted += mounted

    def _blob_there(self, repo: Ref, digest: str) -> bool:
        """HEAD the blob; a registry that keeps failing on it has a broken link there (distribution
        killed while writing it answers 500 for that blob in that repository, forever), and
        uploading the blob again is what repairs it."""
        if (repo.registry, repo.repository, digest) in self.unreadable:
            return False                     # the first check found it unreadable: do not ask (and wait) again
        try:
            return self.client.blob_exists(repo, digest)
        except (AuthError, NotFoundError):
            raise
        except RegistryError:
            return False

    def _blob_task(self, digest: str, repos: list[Ref]) -> None:
        """HEAD each repository that needs the blob, then upload or mount where it is missing."""
        interrupt.check()
        missing, holders = [], []
        for repo in repos:
            interrupt.check()
            if self._blob_there(repo, digest):
                holders.append(repo)
                with self._lock:
                    self.report.blobs_skipped += 1
                    self.report.bytes_skipped += self.sizes[digest]
            else:
                missing.append(repo)
        missing = self._mount_from_holders(digest, missing, holders)
        if missing:
            self._deliver(digest, missing, lambda: self.reader.open_blob(digest))

    def push_blobs(self, needs: dict[str, list[Ref]]) -> None:
        carried = {d: repos for d, repos in needs.items() if d in self.sizes and d not in self.manifest_digests}
        if self.reader.random_access:
            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                list(pool.map(lambda d: self._blob_task(d, carried[d]),
                              sorted(carried, key=lambda d: -self.sizes[d])))
            return
        missing = self.missing_pairs(carried)
        scratch = Path(tempfile.mkdtemp(prefix="mirrorkit-push-"))
        try:
            for digest, _, stream in self.reader.iter_blobs():
                repos = missing.get(digest)
                if not repos:
                    continue
                if len(repos) == 1:
                    used: list[int] = []

                    def once(stream: Any = stream, used: list[int] = used) -> Any:
                        if used:
                            raise OSError("a compressed bundle's blob stream cannot be re-read")
                        used.append(1)
                        return contextlib.nullcontext(stream)
                    self._deliver(digest, repos, once)
                    continue
                # a blob several repositories need is spooled once, so a declined mount can re-read it
                spool = scratch / digest[7:]
                with spool.open("wb") as fh:
                    shutil.copyfileobj(stream, fh, 1 << 20)
                self._deliver(digest, repos, lambda spool=spool: spool.open("rb"))
                spool.unlink()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # -- manifests -------------------------------------------------------------------
    def push_manifests(self, done: set[str]) -> None:
        def one(img: Any) -> bool:
            interrupt.check()
            if img.source in done:
                return False
            dest = self.dest[img.source]
            reference = dest.tag or img.digest
            top = self.reader.read_small(img.digest)
            kinds = {c.digest: c.media_type for c in manifests.children(manifests.parse(top, img.source),
                                                                         img.source)}
            for child in img.manifests:
                data = self.reader.read_small(child)
                self.client.put_manifest(dest.registry, dest.repository, child, data,
                                         kinds.get(child) or _media_type(data))
            self.client.put_manifest(dest.registry, dest.repository, reference, top, img.media_type)
            return True

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            pushed = list(pool.map(one, self.lock.images))
        self.report.images_pushed = sum(pushed)
        self.report.images_skipped = len(pushed) - self.report.images_pushed

    def expected(self) -> list[tuple[Ref, str | None, list[str]]]:
        return [(self.dest[i.source], i.digest, i.manifests) for i in self.lock.images]

    def run(self) -> PushReport:
        """Check the registry first: what it already holds digest for digest needs no bytes at all."""
        start = time.monotonic()
        before = verify_registry(self.client, self.expected(), self.jobs, children=False, blobs=self.check_blobs)
        done = {i.source for i, ok in zip(self.lock.images, before.states, strict=True) if ok == "ok"}
        self.unreadable = before.unreadable
        chart_todo = self._charts_pending()
        chart_blobs: dict[str, bytes] = {}
        # -- preflight (issue 11): every repository about to receive images must take them, before a byte moves --
        from mirrorkit.copy.preflight import require_writable
        require_writable(self.client, [self.dest[i.source] for i in self.lock.images if i.source not in done],
                         self.jobs)
        # -- end preflight --
        if chart_todo or len(done) < len(self.lock.images):
            self.reader.verify(require_complete=True)
            if chart_todo:
                from mirrorkit.copy import charts

                chart_blobs = charts.read_checked(self.reader, chart_todo)
        if len(done) < len(self.lock.images):
            needs = self.needs()
            self.check_omitted(needs)
            self.push_blobs(needs)
            self.push_manifests(done)
            after = verify_registry(self.client, self.expected(), self.jobs, blobs=True)
        else:
            self.report.images_skipped = len(done)
            after = before
        self.report.verified = len(after.ok)
        self.report.problems = after.missing + after.different
        self._charts_push(chart_todo, chart_blobs)
        self.report.seconds = time.monotonic() - start
        return self.report

    def _charts_pending(self) -> list[Any]:
        """The bundle's Helm charts the registry lacks (none to ask about for most bundles)."""
        if not self.lock.charts:
            return []
        from mirrorkit.copy import charts

        return charts.pending(self.client, charts.lock_charts(self.lock), self.registry)

    def _charts_push(self, todo: list[Any], blobs: dict[str, bytes]) -> None:
        """After the images: push each missing chart, then check every chart by tag."""
        if not self.lock.charts:
            return
        from mirrorkit.copy import charts

        all_charts = charts.lock_charts(self.lock)
        pushed = charts.push_charts(self.client, todo, blobs, self.registry)
        charts.verify_charts(self.client, all_charts, self.registry, pushed)
        self.report.charts_pushed = pushed.pushed
        self.report.charts_skipped = len(all_charts) - len(todo)
        self.report.blobs_uploaded += pushed.blobs_uploaded
        self.report.bytes_uploaded += pushed.bytes_uploaded
        self.report.blobs_skipped += pushed.blobs_skipped
        self.report.bytes_skipped += pushed.bytes_skipped
        self.report.problems += pushed.problems


def _media_type(data: bytes) -> str:
    media = manifests.parse(data, "manifest").get("mediaType")
    if isinstance(media, str):
        return media
    return "application/vnd.oci.image.manifest.v1+json"


def push_bundle(paths: list[Path], client: RegistryClient, registry: RegistryTarget | None = None,
                mapping: str | None = None, jobs: int = 4,
                progress: Callable[[str, int], None] | None = None, check_blobs: bool = False,
                signatures: Any = None) -> PushReport:  # signatures: a SignatureOptions
    """Verify (unless the registry already holds every image), push, verify the registry.

    ``check_blobs``: an image counts as already there only if every blob of it can be read,
    so one whose blob the registry lost (or cannot serve) is pushed again, which repairs it.
    """
    with BundleReader(paths) as reader:
        pusher = Pusher(reader, client, registry, mapping, jobs, progress, check_blobs)
        # signatures: verified offline from the bundle alone before anything is pushed; artifacts after the images
        from mirrorkit.copy import artifacts
        opts = signatures or artifacts.SignatureOptions()
        lock = reader.lock

        def read(digest: str) -> bytes:
            return reader.read_small(digest, limit=artifacts.MAX_ARTIFACT_BLOB)
        checked = artifacts.verify_lock(lock, opts.keys, read) if opts.keys else None
        report = pusher.run()
        if opts.carry and lock.artifacts:
            report.signatures = artifacts.push_artifacts(client, lock.artifacts, pusher.dest, read,
                                                         artifacts.bytes_opener(read), lock.blob_sizes())
        report.verifications = artifacts.lock_verifications(checked)
        # signatures: end
        return report
