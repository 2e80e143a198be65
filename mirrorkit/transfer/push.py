"""push-bundle: verify an untrusted bundle, then load it into the private registry through the engine.

Order matters for an air-gapped site: the whole bundle is checked (every blob
hashed against the lock) before a single byte is pushed; blobs the registry
already has are skipped, so a rerun after an interruption uploads only what is
missing; manifests go last and are uploaded as the exact bytes the lock names;
and afterwards every destination manifest is fetched and hashed. Blobs are read
straight from the tar (or bundle folder): no scratch copy of the bundle.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from mirrorkit import interrupt
from mirrorkit.bundle.reader import BundleReader
from mirrorkit.destinations import destination_pairs, first_by_source
from mirrorkit.errors import InputError, OperationError
from mirrorkit.lock import Lock, LockArtifact, LockImage
from mirrorkit.oci.client import Manifest, RegistryClient
from mirrorkit.oci.layout import BlobStore
from mirrorkit.refs import Ref, RegistryTarget
from mirrorkit.transfer import artifacts
from mirrorkit.transfer.artifacts import SignatureOptions
from mirrorkit.transfer.engine import CopyReport, Engine, Graph, Root
from mirrorkit.transfer.sinks import BlobResult, Holders, RegistrySink, Sink
from mirrorkit.transfer.sources import BlobAccess, BundleSource, Stream
from mirrorkit.transfer.verify import ImageState, VerifyResult, verify_registry

__all__ = ["PushReport", "VerifyResult", "push_bundle", "verify_registry"]


@dataclass
class PushReport:
    images_pushed: int = 0
    images_skipped: int = 0
    transfer: CopyReport = field(default_factory=CopyReport)   # the engine's blob counts, the charts' added
    verified: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    charts_pushed: int = 0
    charts_skipped: int = 0
    signatures: Any = None        # PushedArtifacts, when the bundle carried any
    verifications: list[Any] = field(default_factory=list)  # LockVerification per digest checked offline

    # the names push-bundle's output uses (an upload is the engine's copy into a registry)
    @property
    def blobs_uploaded(self) -> int:
        return self.transfer.blobs_copied

    @property
    def bytes_uploaded(self) -> int:
        return self.transfer.bytes_copied

    @property
    def blobs_mounted(self) -> int:
        return self.transfer.blobs_mounted

    @property
    def blobs_skipped(self) -> int:
        return self.transfer.blobs_skipped

    @property
    def bytes_skipped(self) -> int:
        return self.transfer.bytes_skipped


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
        self.dest = destination_pairs(self.lock.plan, [(i.source, i.destination) for i in self.lock.images],
                                      registry, mapping)
        self.registry = registry
        self.report = PushReport()
        self.sizes = self.lock.blob_sizes()
        self._holders = Holders()
        self._sinks: dict[str, RegistrySink] = {}
        self._spool = Path(tempfile.gettempdir())   # set to this run's scratch folder by run()
        self.artifacts: list[LockArtifact] = []     # carried signatures, SBOMs, referrers: pushed beside the images
        self.chart_artifacts: list[LockArtifact] = []   # those of charts fetched from a registry (oci://)

    def target(self, img: LockImage) -> Ref:
        return self.dest[(img.source, img.destination)]

    # -- plan of work ---------------------------------------------------------------
    def needs(self) -> dict[str, list[Ref]]:
        """blob digest -> destination repositories (as Refs) that must hold it."""
        needs: dict[str, list[Ref]] = {}
        for img in self.lock.images:
            dest = self.target(img)
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
            holders = [r for r in needs[digest] if self.sink(r).has_blob(digest)]
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

    def sink(self, dest: Ref) -> RegistrySink:
        """One sink per destination repository, so each blob is copied there once."""
        key = f"{dest.registry}/{dest.repository}"
        if key not in self._sinks:
            distrust = {d for r, repo, d in self.unreadable if (r, repo) == (dest.registry, dest.repository)}
            self._sinks[key] = RegistrySink(self.client, dest, self._holders, self._spool, distrust)
        return self._sinks[key]

    # -- the copy ------------------------------------------------------------------------
    def push(self, images: list[LockImage]) -> None:
        """Bundle -> registry through the engine: blobs (skipped, mounted or uploaded), then manifests.

        The carried artifacts are roots of the same run, each into its image's destination repository."""
        source = BundleSource(self.reader, self.lock)
        roots = []
        for img in images:
            dest = self.target(img)
            roots.append(Root(source, self.sink(dest), img.digest, tags=(dest.tag,) if dest.tag else (),
                              digest=img.digest, label=img.source))
        by_source = first_by_source(self.dest)
        for art in self.artifacts:
            if art.source not in by_source:
                raise InputError(f"artifact {art.digest} belongs to {art.source}, which the lock does not list")
            roots.append(artifacts.artifact_root(source, self.sink(by_source[art.source]), art, art.source))
        omitted = {b.digest for b in self.lock.omitted}
        engine = Engine(self.jobs, self.client.retry, omit=omitted, progress=self.progress)
        graphs = engine.walk(roots)
        carried = [g for g in graphs if g.root.artifact]
        artifacts.check_graphs(carried)
        for g in carried:
            for digest, _ in g.blobs:
                if digest not in self.sizes:
                    raise InputError(f"{g.root.label} needs blob {digest}, which the bundle does not carry")
        if self.reader.random_access:
            engine.copy_blobs(graphs)
        else:
            self._stream_blobs(engine, graphs)
        engine.put_manifests(graphs)
        self.report.transfer.add(engine.report)
        self.report.images_pushed = len(images)
        if carried:
            self.report.signatures = artifacts.PushedArtifacts(len(carried),
                                                               len({d for g in carried for d, _ in g.blobs}))

    def _stream_blobs(self, engine: Engine, graphs: list[Graph]) -> None:
        """Compressed volumes are read once, in order: each blob some repository lacks goes to the
        first such repository from the stream (spooled when several need it), the rest mount it.

        This is the one blob copy beside the engine's pool: a zstd stream cannot be read at
        two places at once, so the blobs go one after another, each through ``engine.blob``."""
        wanted: dict[str, list[Sink]] = {}
        for g in graphs:
            sink = g.root.sink
            for digest, _ in g.blobs:
                if not engine.omitted(g, digest) and sink not in wanted.setdefault(digest, []):
                    wanted[digest].append(sink)
        for digest in list(wanted):
            lacking = [s for s in wanted[digest] if not s.has_blob(digest)]
            skipped = len(wanted[digest]) - len(lacking)
            engine.counted(BlobResult.SKIPPED, self.sizes.get(digest, 0), skipped)
            wanted[digest] = lacking
        if not any(wanted.values()):
            return                  # every repository holds every blob (a rerun): no need to read the volumes
        for digest, _, stream in self.reader.iter_blobs():
            sinks = wanted.get(digest)
            if not sinks:
                continue
            interrupt.check()
            spool = BlobStore(self._spool / "stream") if len(sinks) > 1 else None
            once = _StreamSource(stream, spool, digest)
            for sink in sinks:
                engine.blob(once, sink, digest, self.sizes[digest])
            if spool is not None:
                spool.path(digest).unlink(missing_ok=True)

    def expected(self) -> list[tuple[Ref, str | None, list[str]]]:
        return [(self.target(i), i.digest, i.manifests) for i in self.lock.images]

    def run(self) -> PushReport:
        """Check the registry first: what it already holds digest for digest needs no bytes at all."""
        start = time.monotonic()
        before = verify_registry(self.client, self.expected(), self.jobs, children=False, blobs=self.check_blobs)
        todo = [i for i, state in zip(self.lock.images, before.states, strict=True) if state is not ImageState.OK]
        self.unreadable = before.unreadable
        chart_todo = self._charts_pending()
        chart_blobs: dict[str, bytes] = {}
        # every repository about to receive images must take them, before a byte moves (Quay's path depth,
        # Harbor's projects): all refusals at once, with the registry's own codes
        from mirrorkit.transfer.preflight import require_writable
        require_writable(self.client, [self.target(i) for i in todo], self.jobs)
        if chart_todo or todo:
            self.reader.verify(require_complete=True)
        if chart_todo:
            from mirrorkit.transfer import charts

            chart_blobs = charts.read_checked(self.reader, chart_todo)
        if todo or self.artifacts:
            # artifacts go even when every image is there already: a run cut after the images left them out
            with tempfile.TemporaryDirectory(prefix="mirrorkit-push-") as scratch:
                self._spool = Path(scratch)
                if todo:
                    self.check_omitted(self.needs())
                self.push(todo)
        # a blob this run saw in the repository, or uploaded or mounted there, is not asked for again
        after = verify_registry(self.client, self.expected(), self.jobs, blobs=True,
                                confirmed=self._confirmed) if todo else before
        self.report.images_skipped = len(self.lock.images) - len(todo)
        self.report.verified = len(after.ok)
        self.report.problems = after.missing + after.different
        self._charts_push(chart_todo, chart_blobs)
        self.report.seconds = time.monotonic() - start
        return self.report

    def _confirmed(self, dest: Ref, digest: str) -> bool:
        return dest.repository in self._holders.get(dest.registry, digest, but="")

    def _charts_pending(self) -> list[Any]:
        """The bundle's Helm charts the registry lacks (none to ask about for most bundles)."""
        if not self.lock.charts:
            return []
        from mirrorkit.transfer import charts

        return charts.pending(self.client, charts.lock_charts(self.lock), self.registry)

    def _charts_push(self, todo: list[Any], blobs: dict[str, bytes]) -> None:
        """After the images: push each missing chart, then check every chart by tag."""
        if not self.lock.charts:
            return
        from mirrorkit.transfer import charts

        all_charts = charts.lock_charts(self.lock)
        pushed = charts.push_charts(self.client, todo, blobs, self.registry)
        charts.verify_charts(self.client, all_charts, self.registry, pushed)
        if self.chart_artifacts:
            manifests, blob_count = charts.push_chart_artifacts(self.client, BundleSource(self.reader, self.lock),
                                                                all_charts, self.chart_artifacts, self.registry)
            done = self.report.signatures or artifacts.PushedArtifacts()
            done.manifests += manifests
            done.blobs += blob_count
            self.report.signatures = done
        self.report.charts_pushed = pushed.pushed
        self.report.charts_skipped = len(all_charts) - len(todo)
        self.report.transfer.add(pushed.transfer)
        self.report.problems += pushed.problems


class _StreamSource:
    """One blob of a compressed bundle as the stream reached it: read once, or spooled for several repositories."""

    access = BlobAccess.REOPEN      # each sink opens it again: the first takes the stream, or all share the spool
    name = "bundle"

    def __init__(self, stream: Stream, spool: BlobStore | None, digest: str) -> None:
        self.stream: Stream | None = stream
        self.spool = spool
        self.digest = digest

    def get_manifest(self, reference: str, media_type: str = "") -> Manifest:
        raise OperationError("a blob stream holds no manifests")

    def open_blob(self, digest: str, size: int) -> Stream | None:
        if self.spool is not None:
            if not self.spool.has(digest):
                self.save_blob(digest, size, self.spool)
            return self.spool.path(digest).open("rb")
        if self.stream is None:
            raise OperationError(f"bundle: blob {digest} of a compressed volume cannot be read twice")
        stream, self.stream = self.stream, None
        return _Unclosed(stream)

    def save_blob(self, digest: str, size: int, store: BlobStore,
                  progress: Callable[[int], None] | None = None) -> None:
        if self.stream is None:
            raise OperationError(f"bundle: blob {digest} of a compressed volume cannot be read twice")
        partial = store.partial_path(digest)
        with partial.open("wb") as fh:
            shutil.copyfileobj(self.stream, fh, 1 << 20)
        self.stream = None
        store.adopt(partial, digest)

    def tee_blob(self, digest: str, size: int, store: BlobStore) -> Stream | None:
        return None


class _Unclosed:
    """The reader owns the stream of a compressed volume: an upload must not close it."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def read(self, n: int = -1) -> bytes:
        return self.stream.read(n)

    def seekable(self) -> bool:
        return False

    def __enter__(self) -> _Unclosed:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None, /) -> None:
        pass


def push_bundle(paths: list[Path], client: RegistryClient, registry: RegistryTarget | None = None,
                mapping: str | None = None, jobs: int = 4,
                progress: Callable[[str, int], None] | None = None, check_blobs: bool = False,
                signatures: SignatureOptions | None = None, lock_sha256: str | None = None) -> PushReport:
    """Verify (unless the registry already holds every image), push, verify the registry.

    ``check_blobs``: an image counts as already there only if every blob of it can be read,
    so one whose blob the registry lost (or cannot serve) is pushed again, which repairs it.
    Signatures are verified offline, from the bundle alone, before anything is pushed;
    the artifacts (signatures, attestations, SBOMs, referrers) follow the images.
    """
    opts = signatures or SignatureOptions()
    with BundleReader(paths) as reader:
        reader.require_checksums()
        missing = reader.missing()
        if missing:
            raise InputError(missing)     # every missing volume named before the registry is asked anything
        # --bundle-key checked the lock's signature first: push only the very lock that was checked
        if lock_sha256 is not None and hashlib.sha256(reader.lock_bytes).hexdigest() != lock_sha256:
            raise OperationError(f"{paths[0]}: the lock changed after its signature was checked")
        pusher = Pusher(reader, client, registry, mapping, jobs, progress, check_blobs)
        lock = reader.lock

        def read(digest: str) -> bytes:
            return reader.read_small(digest, limit=artifacts.MAX_ARTIFACT_BLOB)
        checked = artifacts.verify_lock(lock, opts.keys, read) if opts.keys else None
        if opts.carry:
            from mirrorkit.lock import lock_charts

            from_registry = {c.source for c in lock_charts(lock) if c.kind == "oci"}
            pusher.artifacts = [a for a in lock.artifacts if a.source not in from_registry]
            pusher.chart_artifacts = [a for a in lock.artifacts if a.source in from_registry]
        report = pusher.run()
        report.verifications = artifacts.lock_verifications(checked)
        return report
