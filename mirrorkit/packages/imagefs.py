"""Named files of an image's filesystem, read from its layers in a blob store (no container runtime).

The driver image's own package database (``var/lib/dpkg/status``, ``var/lib/rpm/*``) decides what its
package manager will still install, and its default repository files
(``etc/apt/sources.list.d/*``, ``etc/yum.repos.d/*.repo``) are what the far side's repoConfig must
replace. Both are read here from the layers the bundle already carries, as an overlay filesystem
would show them: later layers win, ``.wh.NAME`` deletes NAME, ``.wh..wh..opq`` empties its folder.

Layers are untrusted input: member names are normalised (no leading ``/`` or ``./``), any name with a
``..`` part is ignored, only regular files (and hard links to them) are read, each at most
``max_size`` bytes, and nothing is ever written to disk under a member's name.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import tarfile
from collections.abc import Callable, Sequence
from typing import Any

from mirrorkit.errors import InputError, OperationError

MAX_FILE = 512 << 20
OPAQUE = ".wh..wh..opq"
WHITEOUT = ".wh."
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")

OpenBlob = Callable[[str], Any]   # a context manager giving a binary stream (a file, a bundle BlobStream)


def _normal(name: str) -> str | None:
    """A member name as a relative posix path, or None when it is unsafe or empty."""
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _matches(path: str, patterns: Sequence[str]) -> bool:
    """Whole-path glob match where ``*`` never crosses a ``/``."""
    segments = path.split("/")
    for pattern in patterns:
        want = pattern.strip("/").split("/")
        if len(want) == len(segments) and all(fnmatch.fnmatchcase(s, w) for s, w in zip(segments, want, strict=True)):
            return True
    return False


def image_layers(manifest: bytes, open_blob: OpenBlob, arch: str = "amd64", what: str = "image") -> list[str]:
    """The layer digests of ``manifest`` (an index picks ``linux/<arch>``), in order, bottom first."""
    try:
        doc: Any = json.loads(manifest)
    except ValueError:
        raise InputError(f"{what}: manifest is not JSON") from None
    if not isinstance(doc, dict):
        raise InputError(f"{what}: manifest is not an object")
    if doc.get("mediaType") in _INDEX_TYPES or "manifests" in doc:
        chosen = [m for m in doc.get("manifests") or [] if isinstance(m, dict)
                  and (m.get("platform") or {}).get("architecture") == arch
                  and (m.get("platform") or {}).get("os", "linux") == "linux"]
        if not chosen:
            raise OperationError(f"{what}: no linux/{arch} image in its index")
        with open_blob(str(chosen[0].get("digest"))) as fh:
            return image_layers(fh.read(8 << 20), open_blob, arch, what)
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise InputError(f"{what}: manifest has no layers")
    return [str(layer.get("digest")) for layer in layers if isinstance(layer, dict)]


def read_paths(manifest: bytes, open_blob: OpenBlob, patterns: Sequence[str], arch: str = "amd64",
               what: str = "image", max_size: int = MAX_FILE) -> dict[str, bytes]:
    """The files of the image's final filesystem whose paths match ``patterns``, path -> content.

    ``patterns`` are relative paths, globs allowed per segment (``etc/yum.repos.d/*.repo``,
    ``var/lib/rpm/*``). ``open_blob(digest)`` opens a blob for reading (a bundle's store, a work
    folder): layers are read as tar streams, gzip/bzip2/xz detected; a zstd layer is refused in one line.
    """
    files: dict[str, bytes] = {}
    for digest in image_layers(manifest, open_blob, arch, what):
        with open_blob(digest) as raw:
            try:
                layer = tarfile.open(fileobj=raw, mode="r|*")  # noqa: SIM115 - closed below, after the check
            except tarfile.TarError:
                raise OperationError(f"{what}: layer {digest} is not a tar (gzip, bzip2 or xz); "
                                     "zstd layers are not read") from None
            with layer:
                _apply(layer, files, patterns, max_size, f"{what}: layer {digest}")
    return files


def _apply(layer: tarfile.TarFile, files: dict[str, bytes], patterns: Sequence[str], max_size: int,
           where: str) -> None:
    """One layer over ``files``: whiteouts first (they apply to lower layers only), then its files."""
    kept: dict[str, bytes] = {}
    try:
        for member in layer:
            path = _normal(member.name)
            if path is None:
                continue
            folder, base = posixpath.split(path)
            if base == OPAQUE:
                prefix = f"{folder}/" if folder else ""
                for old in [p for p in files if p.startswith(prefix)]:
                    del files[old]
                continue
            if base.startswith(WHITEOUT):
                gone = posixpath.join(folder, base[len(WHITEOUT):])
                files.pop(gone, None)
                for old in [p for p in files if p.startswith(gone + "/")]:
                    del files[old]
                continue
            if not _matches(path, patterns):
                if member.isdir() or member.issym():
                    # a folder or link replacing a matched path hides what lower layers had there
                    files.pop(path, None)
                continue
            if member.isfile():
                if member.size > max_size:
                    raise OperationError(f"{where}: {path} is larger than {max_size} bytes")
                fh = layer.extractfile(member)
                if fh is not None:
                    kept[path] = fh.read(max_size + 1)
            elif member.islnk():
                target = _normal(member.linkname)
                if target is not None and target in kept:
                    kept[path] = kept[target]
            else:
                files.pop(path, None)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise OperationError(f"{where}: cannot read the layer ({exc})") from None
    files.update(kept)
