"""``plan --resolve``: each planned image's digest, platforms and size, from the registry API.

Pinning digests on the connected side is what lets the air-gapped side prove
that what arrived is what was planned. Lookups run in parallel (one thread per
image, bounded) through one RegistryClient, so auth tokens are shared.
"""

from __future__ import annotations

import bisect
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mirrorkit.errors import MirrorkitError, NotFoundError, OperationError
from mirrorkit.oci import manifests
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.transport import Endpoints
from mirrorkit.plan import Plan, PlanImage
from mirrorkit.refs import Ref
from mirrorkit.resolve.nodes import split_os
from mirrorkit.resolve.ostag import os_tag


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
    """Fill in digest, platforms and size for every image of the plan, in place.

    Every image is tried before anything is reported: a user who fixes one missing tag
    per run needs as many runs as there are missing tags. A missing precompiled driver
    comes with the kernels the registry does have for that branch and OS.
    """
    own = client is None
    client = client or RegistryClient(endpoints, credentials)
    failures: list[tuple[PlanImage, MirrorkitError]] = []

    def one(img: PlanImage) -> None:
        if img.local:                  # a local image is pinned when pull-bundle imports it
            return
        try:
            facts = inspect(client, img.source_ref, plan.platforms)
        except MirrorkitError as exc:
            failures.append((img, exc))
            return
        img.digest = facts.digest
        img.platforms = facts.platforms
        img.size = facts.size

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(one, plan.images))
        if failures:
            order = {id(img): n for n, img in enumerate(plan.images)}
            failures.sort(key=lambda f: order[id(f[0])])
            other = [f for f in failures if not isinstance(f[1], NotFoundError)]
            if other:                # credentials, TLS, a dead registry: one problem, not one per image
                failures = other[:1]
            raise _combined([(img, _explain(client, img, exc)) for img, exc in failures], len(plan.images))
    finally:
        if own:
            client.close()
    plan.warnings.extend(arch_warnings(plan))
    plan.resolved = True
    return plan


def _combined(failures: list[tuple[PlanImage, MirrorkitError]], total: int) -> MirrorkitError:
    kinds = {type(exc) for _, exc in failures}
    cls = kinds.pop() if len(kinds) == 1 else OperationError
    if len(failures) == 1:
        img, exc = failures[0]
        return cls(f"resolving {img.source}: {exc}")
    lines = [f"{len(failures)} of {total} images cannot be resolved:"]
    lines += [f"  {img.source}: {exc}" for img, exc in failures]
    return cls("\n".join(lines))


def _explain(client: RegistryClient, img: PlanImage, exc: MirrorkitError) -> MirrorkitError:
    """For a precompiled driver that is not there, name the nearest kernels that have an image."""
    ref = img.source_ref
    branch = img.setting
    if not (isinstance(exc, NotFoundError) and img.kernel and branch and ref.tag
            and ref.tag.startswith(f"{branch}-{img.kernel}-")):
        return exc
    suffix = ref.tag[len(f"{branch}-{img.kernel}"):]
    try:
        tags = client.list_tags(ref.registry, ref.repository)
    except MirrorkitError:
        return exc
    kernels = [t[len(branch) + 1:-len(suffix)] for t in tags
               if t.startswith(f"{branch}-") and t.endswith(suffix) and len(t) > len(branch) + 1 + len(suffix)]
    near = nearest(img.kernel, kernels)
    found = f"nearest: {', '.join(near)}" if near else f"no kernel has an image for {branch} on {suffix[1:]}"
    return type(exc)(f"no {ref.tag}; {found}")


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p)


def nearest(kernel: str, kernels: list[str]) -> list[str]:
    """The kernel just below and just above ``kernel`` in version order (5.15.0-130 < 5.15.0-131)."""
    ordered = sorted(set(kernels), key=_natural)
    at = bisect.bisect_left([_natural(k) for k in ordered], _natural(kernel))
    return ordered[max(0, at - 1):at + 1]


def arch_warnings(plan: Plan) -> list[str]:
    """Per image and GPU node: the node's architecture is missing from the image's index."""
    out: list[str] = []
    for img in plan.images:
        if not img.platforms:
            continue                 # a single-platform image: its platform is not looked up
        archs = {p.split("/")[1] for p in img.platforms if "/" in p}
        for node in plan.nodes:
            arch = str(node.get("arch") or "amd64")
            if arch in archs or not _runs_on(plan, img, node):
                continue
            name = node.get("name") or node.get("os")
            out.append(f"{img.source}: its index has no linux/{arch} image, which GPU node {name} "
                       f"({node.get('os')}, {arch}) needs")
    return out


def _runs_on(plan: Plan, img: PlanImage, node: dict) -> bool:
    """An OS-tagged image serves only the nodes of its OS tag; every other image every node."""
    if not img.os_tag:
        return True
    try:
        os_id, version = split_os(str(node.get("os") or ""))
    except MirrorkitError:
        return True
    return os_tag(plan.release, os_id, version) == img.os_tag
