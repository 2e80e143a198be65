"""Image sources outside registries, read through skopeo: what mirrorkit should not reimplement.

A driver image built for a kernel NVIDIA does not publish lives in a
``docker-archive:`` tar, an ``oci-archive:``, an ``oci:`` folder or a Docker
daemon. skopeo reads any of them into a private ``dir:`` folder, which keeps
every manifest byte for byte (skopeo's ``oci:`` destination would have to
rewrite a Docker-typed manifest); each file then enters the blob store only
after it hashes to its digest, and from there the image travels like any other.
No credentials are involved: skopeo reads local files or the daemon's socket.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from mirrorkit.errors import InputError, OperationError
from mirrorkit.oci import manifests
from mirrorkit.oci.layout import BlobStore
from mirrorkit.plan import is_local_source
from mirrorkit.transfer.skopeo import copy_argv, run_copy

_BLOB = re.compile(r"[0-9a-f]{64}")
_CHILD = re.compile(r"([0-9a-f]{64})\.manifest\.json")


def is_local(source: str) -> bool:
    """``docker-daemon:``, ``docker-archive:``, ``oci-archive:`` or ``oci:`` (see mirrorkit.plan)."""
    return is_local_source(source)


def import_image(source: str, store: BlobStore) -> tuple[str, str]:
    """Copy a local image (every platform of it) into ``store``; return (manifest digest, media type).

    Every blob and child manifest is hashed on its way into the store; the top
    manifest's digest is that of the bytes skopeo wrote, which is the digest
    the image will have in the registry it is pushed to.
    """
    if not is_local(source):
        raise InputError(f"{source!r} is not a local image source (docker-daemon:, docker-archive:, oci-archive:, "
                         "oci:)")
    _check_exists(source)
    folder = Path(tempfile.mkdtemp(prefix="local-", dir=store.tmp))
    try:
        run_copy(copy_argv(source, f"dir:{folder}", all_images=True), f"reading {source}")
        top = _read(folder / "manifest.json", source)
        digest = store.add_bytes(top)
        for path in sorted(folder.iterdir()):
            if _BLOB.fullmatch(path.name):
                store.adopt(path, f"sha256:{path.name}")       # refuses bytes that do not hash to the name
            elif match := _CHILD.fullmatch(path.name):
                data = _read(path, source)
                if manifests.sha256_digest(data) != f"sha256:{match.group(1)}":
                    raise OperationError(f"{source}: child manifest {path.name} does not hash to its name")
                store.add_bytes(data)
        doc = manifests.parse(top, source)
        _check_complete(store, doc, source)
        return digest, manifests.media_type(doc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_exists(source: str) -> None:
    transport, _, rest = source.partition(":")
    if transport == "docker-daemon":
        return
    path = Path(rest.partition(":")[0] if transport == "oci" else rest)
    if not path.exists():
        raise InputError(f"{source}: {path} does not exist")


def _read(path: Path, source: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise OperationError(f"{source}: skopeo left no {path.name}: {exc.strerror or exc}") from None


def _check_complete(store: BlobStore, doc: dict[str, object], source: str) -> None:
    """Every manifest and blob the image names is now in the store: nothing is fetched later."""
    docs = [doc]
    if manifests.is_index(doc):
        docs = []
        for child in manifests.children(doc, source):
            if not store.has(child.digest):
                raise OperationError(f"{source}: skopeo did not deliver child manifest {child.digest}")
            docs.append(manifests.parse(store.read(child.digest), f"{source}@{child.digest}"))
    for image in docs:
        for blob, _ in manifests.image_blobs(image, source):
            if not store.has(blob):
                raise OperationError(f"{source}: skopeo did not deliver blob {blob}")
