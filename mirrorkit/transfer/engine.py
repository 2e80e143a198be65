"""The one graph copy: every byte pull-bundle, push-bundle, mirror and the charts move goes through here.

A copy is a list of roots, each a manifest (index, image manifest, signature or
any other artifact manifest, whatever its media type) at a source, with the tags
to set at a sink. It runs in three phases, as oras-go's CopyGraph does:

1. walk: read each root's manifests (index -> children -> ...), restricting an
   index to the wanted platforms (the index is then rewritten, and a note says so);
   manifests are round trips, so ``metadata_width(jobs)`` of them are in flight;
2. blobs: one pool over the blobs of ALL roots, one task per (registry, digest),
   largest first: it copies the blob into the first repository lacking it and
   mounts it into the others; a sink that has a blob skips it, everything else is
   copied verified; ``jobs`` blobs move at once (``--jobs``: blobs in flight);
3. manifests: exact bytes, children before parents, the tags last. A registry
   that refuses a manifest because something it names is not there yet (another
   run still writing it) gets the children, and the missing blobs, again.

Failures stop the copy at the next unit of work, or, with ``keep_going``, are
collected per root while everything else is copied.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from mirrorkit import interrupt
from mirrorkit.errors import MirrorkitError, OperationError, RegistryError
from mirrorkit.oci import manifests, retry
from mirrorkit.oci.client import Manifest, sha256_digest
from mirrorkit.oci.retry import RetryPolicy, TransientError
from mirrorkit.transfer import workers
from mirrorkit.transfer.sinks import BlobResult, Sink
from mirrorkit.transfer.sources import Source

MAX_DEPTH = 4


def metadata_width(jobs: int) -> int:
    """Requests in flight for manifests, index children, tag lists and referrers: round trips, not bytes.

    Against an upstream 50 ms away a plan of many small images is bound by round trips;
    these run many more at once than the ``jobs`` blob transfers sharing the link."""
    return min(64, max(16, 4 * jobs))
# a registry's words for "a manifest names something I do not have (yet)"
# (distribution also answers DIGEST_INVALID when a blob it checks is being linked by another run)
RETRY_CODES = frozenset({"MANIFEST_BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "MANIFEST_INVALID",
                         "DIGEST_INVALID"})
BLOB_CODES = frozenset({"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "DIGEST_INVALID"})   # the blobs go again too
Progress = Callable[[str, int], None]
T = TypeVar("T")
BlobTask = tuple[Source, Sink, str, int]


@dataclass(frozen=True)
class Root:
    source: Source
    sink: Sink
    reference: str                      # tag or digest at the source
    tags: tuple[str, ...] = ()          # references to set at the sink; none: by digest only
    digest: str | None = None           # pinned: the source must answer with this digest
    platforms: tuple[str, ...] = ()     # restrict an index to these platforms
    label: str = ""                     # the name messages use (a plan's source reference)
    artifact: bool = False              # a signature, attestation, SBOM or referrer: not counted as an image


class _Missing(RegistryError):
    """A manifest names something the registry does not hold (yet): raised out of the retry policy,
    so the engine copies what it names again before the next round of manifest PUTs."""


@dataclass
class Graph:
    root: Root
    upstream_digest: str = ""
    nodes: list[Manifest] = field(default_factory=list)     # children first, the root last
    blobs: list[tuple[str, int]] = field(default_factory=list)
    platforms: list[str] = field(default_factory=list)
    note: str = ""
    error: str = ""

    @property
    def top(self) -> Manifest:
        return self.nodes[-1]

    @property
    def digest(self) -> str:
        return self.top.digest

    @property
    def children(self) -> list[str]:
        return [n.digest for n in self.nodes[:-1]]

    @property
    def manifest_bytes(self) -> int:
        return sum(len(n.data) for n in self.nodes)


@dataclass
class CopyReport:
    """What a copy did to blobs, and what failed: pull-bundle, push-bundle and mirror each embed one."""

    blobs_copied: int = 0
    bytes_copied: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    bytes_skipped: int = 0
    failures: list[str] = field(default_factory=list)

    def count(self, result: BlobResult, size: int, blobs: int = 1) -> None:
        """Count ``blobs`` blobs of ``size`` bytes each that ended as ``result`` (callers hold any lock)."""
        if result is BlobResult.SKIPPED:
            self.blobs_skipped += blobs
            self.bytes_skipped += blobs * size
        elif result is BlobResult.MOUNTED:
            self.blobs_mounted += blobs
        else:
            self.blobs_copied += blobs
            self.bytes_copied += blobs * size

    def add(self, other: CopyReport) -> None:
        """Fold another copy's counts (and failures) into this one: push-bundle's charts run their own engine."""
        self.blobs_copied += other.blobs_copied
        self.bytes_copied += other.bytes_copied
        self.blobs_mounted += other.blobs_mounted
        self.blobs_skipped += other.blobs_skipped
        self.bytes_skipped += other.bytes_skipped
        self.failures += [f for f in other.failures if f not in self.failures]


class Engine:
    def __init__(self, jobs: int = 4, policy: RetryPolicy | None = None, omit: set[str] | None = None,
                 keep_going: bool = False, progress: Progress | None = None) -> None:
        self.jobs = max(1, jobs)
        self.policy = policy or RetryPolicy.from_env()
        self.omit = omit or set()
        self.keep_going = keep_going
        self.progress = progress or (lambda what, n: None)
        self.report = CopyReport()
        self._lock = threading.Lock()
        self._children: ThreadPoolExecutor | None = None     # the walk's pool for index children

    # -- the whole copy ---------------------------------------------------------------
    def copy(self, roots: list[Root]) -> list[Graph]:
        graphs = self.walk(roots)
        self.copy_blobs(graphs)
        self.put_manifests(graphs)
        return graphs

    def _pool(self, items: list[T], work: Callable[[T], None], on_error: Callable[[T, str], None],
              width: int | None = None) -> None:
        """Run ``work`` over items; stop at the first failure unless keep_going (then ``on_error``)."""
        if not items:
            return
        stop = threading.Event()

        def guarded(item: T) -> None:
            if stop.is_set():
                return
            interrupt.check()
            try:
                work(item)
            except interrupt.Interrupted:
                stop.set()
                raise
            except MirrorkitError as exc:
                if not self.keep_going:
                    stop.set()
                    raise
                on_error(item, str(exc))

        workers.run_all(items, guarded, width or self.jobs, stop)

    # -- 1. walk ----------------------------------------------------------------------
    def walk(self, roots: list[Root]) -> list[Graph]:
        graphs = [Graph(root) for root in roots]

        def one(item: Graph) -> None:
            self._walk(item)

        def failed(item: Graph, message: str) -> None:
            item.error = message
            self._fail(message)

        # manifests are small round trips: many more in flight than blob transfers; the children of
        # every index share one more pool (see _fetch_children)
        width = metadata_width(self.jobs)
        self._children = ThreadPoolExecutor(max_workers=width, thread_name_prefix="mirrorkit-walk")
        try:
            self._pool(graphs, one, failed, width=width)
        finally:
            self._children.shutdown(wait=False, cancel_futures=True)
            self._children = None
        return graphs

    def _walk(self, g: Graph) -> None:
        root = g.root
        label = root.label or f"{root.source.name}:{root.reference}"
        top = root.source.get_manifest(root.digest or root.reference)
        if root.digest and top.digest != root.digest:
            raise OperationError(f"{label}: the source answered with {top.digest}, the plan pins {root.digest}")
        g.upstream_digest = top.digest
        what = f"{label}@{top.digest}"
        doc = manifests.parse(top.data, what)
        if manifests.is_index(doc, top.media_type) and root.platforms:
            kids = manifests.children(doc, what)
            chosen = [c for c in kids if manifests.wanted(c, list(root.platforms))]
            if not chosen:
                raise OperationError(f"{label}: none of the platforms {', '.join(root.platforms)} is in its index")
            if len(chosen) == 1 < len(kids):
                # one platform: the tag names that platform's manifest itself, which keeps the signature
                # its publisher made for it; a one-entry index would be a new digest nobody signed, and
                # admission (Kyverno, CRI-O) checks the digest the tag resolves to
                [only] = chosen
                top = root.source.get_manifest(only.digest, only.media_type)
                if top.digest != only.digest:
                    raise OperationError(f"{what}: child {only.digest} hashes to {top.digest}")
                g.note = (f"restricted to {only.platform}: the tag names that platform's manifest {top.digest} "
                          f"(signed as published) instead of the index {g.upstream_digest}")
                g.platforms = [only.platform]
                self._visit(g, top, label, 0)
                return
            if len(chosen) < len(kids):
                data = manifests.restrict_index(top.data, list(root.platforms), what)
                top = Manifest(data, top.media_type, sha256_digest(data))
                g.note = (f"restricted to {', '.join(root.platforms)}: index rewritten, digest changed "
                          f"from {g.upstream_digest} to {top.digest}")
        self._visit(g, top, label, 0)
        if manifests.is_index(doc, top.media_type):
            g.platforms = sorted({c.platform for c in manifests.children(manifests.parse(top.data, what), what)
                                  if c.platform != "unknown/unknown"})

    def _visit(self, g: Graph, node: Manifest, label: str, depth: int) -> None:
        what = f"{label}@{node.digest}"
        if depth > MAX_DEPTH:
            raise OperationError(f"{what}: manifests nested more than {MAX_DEPTH} deep")
        doc = manifests.parse(node.data, what)
        if manifests.is_index(doc, node.media_type):
            kids = [c for c in manifests.children(doc, what) if all(n.digest != c.digest for n in g.nodes)]
            for child, sub in zip(kids, self._fetch_children(g.root.source, kids), strict=True):
                if sub.digest != child.digest:
                    raise OperationError(f"{what}: child {child.digest} hashes to {sub.digest}")
                if any(n.digest == child.digest for n in g.nodes):
                    continue                # an index naming one child twice
                self._visit(g, sub, label, depth + 1)
        else:
            for digest, size in manifests.image_blobs(doc, what):
                if all(d != digest for d, _ in g.blobs):
                    g.blobs.append((digest, size))
        g.nodes.append(node)

    def _fetch_children(self, source: Source, kids: list[manifests.Child]) -> list[Manifest]:
        """An index's child manifests, fetched side by side, in the index's order.

        Each GET runs under its own retry policy, so with the children fetched one after
        another every backoff (0.25 s and up) lay on the image's path: on the bench's
        25 %-faults row the walk took 2.0 s instead of 0.12 s. One pool of threads for
        all the walk's indexes (its tasks fetch and never wait on the pool, so a walker waiting on
        it cannot deadlock) keeps the backoffs side by side with the threads bounded: a pool per
        index reached 2 x jobs x jobs threads.
        """
        def fetch(child: manifests.Child) -> Manifest:
            interrupt.check()
            return source.get_manifest(child.digest, child.media_type)

        pool = self._children
        if len(kids) <= 1 or pool is None:
            return [fetch(c) for c in kids]
        return list(pool.map(fetch, kids))     # the first failure is raised, in order

    # -- 2. blobs ---------------------------------------------------------------------
    def copy_blobs(self, graphs: list[Graph]) -> None:
        """One pool over every blob of every root: one task per (registry, digest).

        A task copies its blob into the first repository that lacks it, then mounts it into
        the others (or finds it there), so a CUDA base layer shared by ten images is uploaded
        once while the other workers move other blobs. No worker ever waits for another's
        transfer (a lock per digest parked every worker on a shared layer: 2.0 s where 1.4 s was
        possible with four repositories sharing one blob)."""
        tasks: dict[tuple[str, str], list[BlobTask]] = {}
        users: dict[tuple[str, str], list[Graph]] = {}
        for g in graphs:
            if g.error:
                continue
            sink = g.root.sink
            for digest, size in g.blobs:
                if self.omitted(g, digest):
                    continue
                key = (sink.key, digest)
                if key not in users:
                    tasks.setdefault((sink.group, digest), []).append((g.root.source, sink, digest, size))
                users.setdefault(key, []).append(g)

        def one(group: list[BlobTask]) -> None:
            for item in group:          # the first copies (or finds it there); the others then mount it
                interrupt.check()
                self.blob(*item)

        def failed(group: list[BlobTask], message: str) -> None:
            for _, sink, digest, _ in group:
                for g in users[(sink.key, digest)]:
                    g.error = g.error or message
            self._fail(message)

        self._pool(sorted(tasks.values(), key=lambda group: -group[0][3]), one, failed)

    def blob(self, source: Source, sink: Sink, digest: str, size: int) -> BlobResult:
        """One blob into one sink: skipped if the sink has it, else mounted or copied; counted in the report."""
        if sink.has_blob(digest):
            result = BlobResult.SKIPPED
        else:
            result = sink.put_blob(source, digest, size, lambda n: self.progress("bytes", n))
        self.counted(result, size)
        return result

    def counted(self, result: BlobResult, size: int, blobs: int = 1) -> None:
        """Count blobs in the report, thread-safely (push-bundle's in-order stream counts its own skips)."""
        with self._lock:
            self.report.count(result, size, blobs)

    def omitted(self, g: Graph, digest: str) -> bool:
        """Left out of a differential bundle: an image's blob may be; an artifact's always travels."""
        return digest in self.omit and not g.root.artifact

    # -- 3. manifests -----------------------------------------------------------------
    def put_manifests(self, graphs: list[Graph]) -> None:
        def one(item: Graph) -> None:
            if not item.error:
                self._put_graph(item)
                if not item.root.artifact:
                    self.progress("image", 1)

        def failed(item: Graph, message: str) -> None:
            item.error = message
            self._fail(message)

        self._pool(list(graphs), one, failed)

    def _put_graph(self, g: Graph) -> None:
        """The image's manifests under the policy; what they name re-copied outside it, a bounded number of times.

        Only the manifest PUTs run inside the retry policy. A registry that answers one
        of RETRY_CODES (another run still writing what the manifest names) ends that
        operation with :class:`_Missing`; the blobs (for a blob code) are then copied
        again, each blob operation under its own policy, and the manifests are tried
        once more, at most ``policy.attempts`` rounds in all, with the policy's backoff
        between rounds. No retry runs inside another.
        """
        rounds = max(1, self.policy.attempts)
        for round_ in range(1, rounds + 1):
            try:
                retry.run(self.policy, lambda: self._put_nodes(g))
                return
            except _Missing as exc:
                if round_ == rounds:
                    raise RegistryError(f"{exc} (the manifest was refused {rounds} times; gave up)",
                                        code=exc.code) from None
                self.policy.sleep(self.policy.delay(round_))
                if exc.code in BLOB_CODES:
                    for digest, size in g.blobs:
                        if not self.omitted(g, digest):
                            self.blob(g.root.source, g.root.sink, digest, size)

    def _put_nodes(self, g: Graph) -> None:
        """One attempt at the manifest PUTs: children first, then the root under each tag."""
        sink = g.root.sink
        try:
            for node in g.nodes[:-1]:
                sink.put_manifest(node.digest, node.data, node.media_type)
            for reference in g.root.tags or (g.digest,):
                sink.put_manifest(reference, g.top.data, g.top.media_type)
        except RegistryError as exc:
            if isinstance(exc, TransientError) or exc.code not in RETRY_CODES:
                raise
            raise _Missing(str(exc), code=exc.code) from None

    def _fail(self, message: str) -> None:
        with self._lock:
            if message not in self.report.failures:
                self.report.failures.append(message)
