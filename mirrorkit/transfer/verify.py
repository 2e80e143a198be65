"""Is every image in the registry, digest for digest? Used by push-bundle, mirror and ``verify``.

Each destination manifest is fetched and hashed; children are fetched by digest;
with ``blobs=True`` every config and layer of every platform is asked for (HEAD),
since a registry that lost a blob still serves the manifest and nodes would find
out only when they pull.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mirrorkit.errors import AuthError, NotFoundError, RegistryError
from mirrorkit.oci import manifests
from mirrorkit.oci.client import RegistryClient
from mirrorkit.refs import Ref


class ImageState(enum.StrEnum):
    """One image at its destination. String-valued: the values are the words this result always used."""

    OK = "ok"                   # the manifest (and, when asked, every child and blob) is there, digest for digest
    MISSING = "missing"         # no manifest at the reference, or a child manifest is missing
    DIFFERENT = "different"     # a manifest with another digest
    BLOB = "blob"               # the manifest is there, a blob (or child) of it cannot be read


@dataclass
class VerifyResult:
    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    states: list[ImageState] = field(default_factory=list)     # one per expected image, in order
    unreadable: set[tuple[str, str, str]] = field(default_factory=set)   # (registry, repository, blob digest)

    @property
    def passed(self) -> bool:
        return not self.missing and not self.different


Confirmed = Callable[[Ref, str], bool]


def verify_registry(client: RegistryClient, expected: Sequence[tuple[Ref, str | None, list[str]]],
                    jobs: int = 4, children: bool = True, blobs: bool = False,
                    confirmed: Confirmed | None = None) -> VerifyResult:
    """Fetch and hash every destination manifest, and fetch each child by digest.

    ``children=False`` checks only the top-level manifests: a registry accepts an
    index only when the manifests it lists are there, so this is the cheap
    "is there anything to do?" question a rerun asks first. ``blobs=True`` also
    asks for every config and layer of every platform (HEAD): a registry that lost
    a blob, or whose link to it a crash left broken, still serves the manifest, and
    nodes would find out only when they pull.

    ``confirmed(dest, digest)``: the registry showed it holds this blob in that repository during
    this very run (a HEAD answered 200, an upload or a mount was acknowledged with 201), and the
    manifest naming it was then accepted: it is not asked for again.
    """
    result = VerifyResult()

    def one(item: tuple[Ref, str | None, list[str]]) -> tuple[ImageState, str, str]:
        dest, digest, children_of = item
        try:
            got = client.get_manifest(dest)
        except NotFoundError:
            return ImageState.MISSING, str(dest), "not in the registry"
        if digest and got.digest != digest:
            return ImageState.DIFFERENT, str(dest), f"registry has {got.digest}, expected {digest}"
        for child in children_of if children and not blobs else []:
            try:
                client.get_manifest(dest, child)
            except NotFoundError:
                return ImageState.MISSING, str(dest), f"child manifest {child} is missing"
        problem = _unreadable_blob(client, dest, got.data, got.media_type, confirmed) if blobs else None
        if problem:
            result.unreadable.add((dest.registry, dest.repository, problem[0]))
            return ImageState.BLOB, str(dest), problem[1]
        return ImageState.OK, str(dest), got.digest

    # verification is many small GETs: twice the copy's parallelism keeps the round trips overlapped
    with ThreadPoolExecutor(max_workers=max(2, 2 * jobs)) as pool:
        for state, name, detail in pool.map(one, expected):
            result.states.append(state)
            if state is ImageState.OK:
                result.ok.append(f"{name}@{detail}")
            elif state in (ImageState.MISSING, ImageState.BLOB):  # BLOB: the manifest is there, a blob is not
                result.missing.append(f"{name}: {detail}")
            else:
                result.different.append(f"{name}: {detail}")
    return result


def _unreadable_blob(client: RegistryClient, dest: Ref, data: bytes, media_type: str,
                     confirmed: Confirmed | None = None) -> tuple[str, str] | None:
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
            if confirmed is not None and confirmed(dest, digest):
                continue
            try:
                if not client.blob_exists(dest, digest):
                    return digest, f"blob {digest} is missing"
            except (AuthError, NotFoundError):
                raise
            except RegistryError as exc:
                return digest, f"blob {digest} cannot be read: {exc}"
    return None
