"""The work folder's blob store during pull-bundle: the engine roots that fill it, what it already
holds (blobs an earlier, interrupted run fetched are not fetched again), and the room the rest needs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mirrorkit.errors import OperationError
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.layout import BlobStore
from mirrorkit.plan import Plan, PlanImage
from mirrorkit.transfer.engine import Graph, Root
from mirrorkit.transfer.sinks import StoreSink
from mirrorkit.transfer.sources import LayoutSource, RegistrySource, Source

if TYPE_CHECKING:
    from mirrorkit.transfer.pull import PullOptions


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


def image_roots(plan: Plan, client: RegistryClient, store: BlobStore) -> list[Root]:
    sink = StoreSink(store)
    roots = []
    for img in plan.images:
        source, reference, pinned = _source_for(img, client, store)
        roots.append(Root(source, sink, reference, digest=pinned, platforms=tuple(plan.platforms),
                          label=img.source))
    return roots


def stored(store: BlobStore) -> set[str] | None:
    """The hex names of every blob in the store now (None: unknown, so nothing is taken on trust)."""
    try:
        return set(os.listdir(store.blobs))
    except OSError:
        return None


def held(store: BlobStore, g: Graph, omit: set[str]) -> bool:
    """Is every byte of this image in the work folder already (an earlier, interrupted run fetched it)?"""
    return all(store.has(n.digest) for n in g.nodes) and \
        all(store.has(d) for d, _ in g.blobs if d not in omit)


VOLUME_HEAD = 64 << 10         # what each volume repeats beside the lock: layout files, tar records
PER_IMAGE = 4 << 10            # the lock's and index.json's lines for one image


def check_room(store: BlobStore, graphs: list[Graph], opts: PullOptions, charts: int) -> int:
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
