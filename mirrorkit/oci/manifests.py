"""Reading image manifests and indexes: children, platforms, blobs.

Pure functions over manifest bytes. They refuse documents a registry or a
bundle should never produce (both ``layers`` and ``manifests``, descriptors
with malformed digests), because everything downstream trusts these lists.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from mirrorkit.errors import OperationError
from mirrorkit.refs import is_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of some bytes: the one digest helper."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def media_type(doc: dict[str, Any], hint: str = "") -> str:
    """A manifest's media type: ``hint`` (a descriptor's or a header's) when given, else the body's own
    ``mediaType``, else an OCI index or manifest by shape."""
    if hint:
        return hint
    media = doc.get("mediaType")
    if isinstance(media, str) and media:
        return media
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


@dataclass(frozen=True)
class Child:
    digest: str
    media_type: str
    size: int
    platform: str


def parse(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise OperationError(f"{what}: manifest is not valid JSON") from None
    if not isinstance(doc, dict):
        raise OperationError(f"{what}: manifest is not a JSON object")
    if "manifests" in doc and "layers" in doc:
        raise OperationError(f"{what}: manifest declares both 'manifests' and 'layers'")
    return doc


def is_index(doc: dict[str, Any], media_type: str = "") -> bool:
    return media_type in INDEX_TYPES or doc.get("mediaType") in INDEX_TYPES or "manifests" in doc


def _descriptor(entry: Any, what: str) -> dict[str, Any]:
    if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str) \
            or not is_digest(entry["digest"]):
        raise OperationError(f"{what}: descriptor without a valid sha256 digest")
    size = entry.get("size", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise OperationError(f"{what}: descriptor {entry['digest']} has an invalid size")
    return entry


def platform_of(entry: dict[str, Any]) -> str:
    p = entry.get("platform") or {}
    text = f"{p.get('os', 'unknown')}/{p.get('architecture', 'unknown')}"
    return f"{text}/{p['variant']}" if p.get("variant") else text


def children(doc: dict[str, Any], what: str) -> list[Child]:
    out = []
    for entry in doc.get("manifests") or []:
        d = _descriptor(entry, what)
        out.append(Child(d["digest"], str(d.get("mediaType", "")), int(d.get("size", 0)), platform_of(d)))
    return out


def image_blobs(doc: dict[str, Any], what: str) -> list[tuple[str, int]]:
    """(digest, size) of the config and every layer of one image manifest."""
    out = []
    if doc.get("config") is not None:
        d = _descriptor(doc["config"], what)
        out.append((d["digest"], int(d.get("size", 0))))
    for layer in doc.get("layers") or []:
        d = _descriptor(layer, what)
        out.append((d["digest"], int(d.get("size", 0))))
    return out


def wanted(child: Child, platforms: list[str]) -> bool:
    """Does a platform restriction keep this child? ``linux/arm64`` matches ``linux/arm64/v8``."""
    if not platforms:
        return True
    return child.platform in platforms or child.platform.rsplit("/", 1)[0] in platforms


def restrict_index(data: bytes, platforms: list[str], what: str) -> bytes:
    """A new index holding only the wanted platforms; other fields kept as they were."""
    doc = parse(data, what)
    kept = [m for m, c in zip(doc.get("manifests") or [], children(doc, what), strict=True)
            if wanted(c, platforms)]
    if not kept:
        raise OperationError(f"{what}: none of the platforms {', '.join(platforms)} is in the index")
    doc["manifests"] = kept
    return json.dumps(doc, indent=3).encode()
