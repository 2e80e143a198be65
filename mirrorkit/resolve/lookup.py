"""``plan --resolve``: each planned image's digest, platforms and size, from the registry API.

Pinning digests on the connected side is what lets the air-gapped side prove
that what arrived is what was planned. Lookups run in parallel (one thread per
image, bounded) through one RegistryClient, so auth tokens are shared.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mirrorkit.errors import MirrorkitError
from mirrorkit.oci import manifests
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.transport import Endpoints
from mirrorkit.plan import Plan, PlanImage
from mirrorkit.refs import Ref


@dataclass(frozen=True)
class ImageFacts:
    digest: str
    media_type: str
    platforms: list[str]
    size: int


def inspect(client: RegistryClient, ref: Ref, platforms: list[str] | None = None) -> ImageFacts:
    """Digest of what ref names now, the platforms it holds, and the bytes a copy would move.

    A single-platform image reports no platforms: telling them would need its
    config blob, and nothing downstream restricts a single-platform image.
    """
    top = client.get_manifest(ref)
    doc = manifests.parse(top.data, str(ref))
    if not manifests.is_index(doc, top.media_type):
        return ImageFacts(top.digest, top.media_type, [], _size(doc, ref) + len(top.data))
    kids = manifests.children(doc, str(ref))
    size = len(top.data)
    seen: set[str] = set()
    for child in kids:
        if child.digest in seen or not manifests.wanted(child, platforms or []):
            continue
        seen.add(child.digest)
        manifest = client.get_manifest(ref, child.digest)
        size += len(manifest.data) + _size(manifests.parse(manifest.data, str(ref)), ref)
    return ImageFacts(top.digest, top.media_type, [c.platform for c in kids if c.platform != "unknown/unknown"],
                      size)


def _size(doc: dict, ref: Ref) -> int:
    return sum(size for _, size in manifests.image_blobs(doc, str(ref)))


def resolve_plan(plan: Plan, endpoints: Endpoints, credentials: CredentialStore | None = None,
                 jobs: int = 4, client: RegistryClient | None = None) -> Plan:
    """Fill in digest, platforms and size for every image of the plan, in place."""
    own = client is None
    client = client or RegistryClient(endpoints, credentials)

    def one(img: PlanImage) -> None:
        if img.local:                  # bundle branch hook: a local image is pinned when pull-bundle imports it
            return
        ref = img.source_ref
        try:
            facts = inspect(client, ref, plan.platforms)
        except MirrorkitError as exc:
            raise type(exc)(f"resolving {img.source}: {exc}") from None
        img.digest = facts.digest
        img.platforms = facts.platforms
        img.size = facts.size

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(one, plan.images))
    finally:
        if own:
            client.close()
    plan.resolved = True
    return plan
