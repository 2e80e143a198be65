"""What pull-bundle writes once the store is full: the lock for what the store holds (the images, then
the charts and the installer joining it), signed with --sign-key, then the volumes and the lock beside them.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from mirrorkit import __version__
from mirrorkit.files import write_atomic
from mirrorkit.lock import Lock, LockBlob, LockImage
from mirrorkit.oci.layout import BlobStore
from mirrorkit.plan import Plan
from mirrorkit.transfer.engine import Graph
from mirrorkit.transfer.pull_state import lock_path_for
from mirrorkit.trust.bundlesig import sign_lock, signature_beside

if TYPE_CHECKING:
    from mirrorkit.installer.build import Installer
    from mirrorkit.transfer.charts import HelmChart
    from mirrorkit.transfer.pull import PullOptions, PullReport


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


def add_charts(store: BlobStore, lock: Lock, charts: list[HelmChart], registry: str | None,
               report: PullReport) -> None:
    """The charts' blobs join the store, the lock and index.json."""
    from mirrorkit.transfer.charts import add_to_bundle

    chart_bytes = add_to_bundle(store, lock, charts, registry)
    report.unique_bytes += chart_bytes
    report.total_bytes += chart_bytes
    report.charts = len(charts)


def add_installer(store: BlobStore, lock: Lock, prebuilt: Installer | None, report: PullReport) -> None:
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


def sign_and_write(lock: Lock, opts: PullOptions, store: BlobStore, earlier: set[str] | None, report: PullReport,
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
