"""Reading image manifests and indexes: children, platforms, blobs.

Pure functions over manifest bytes. They refuse documents a registry or a
bundle should never produce (both ``layers`` and ``manifests``, descriptors
with malformed digests, sizes or media types), because everything downstream
trusts these lists. The rules are mirrorkit.oci.model's, the one place they live.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from mirrorkit.errors import OperationError
from mirrorkit.oci import model
from mirrorkit.oci.model import (  # noqa: F401 - the media types are imported from here too
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
)


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of some bytes: the one digest helper."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def media_type(doc: dict[str, Any], hint: str = "") -> str:
    """A manifest's media type: ``hint`` (a descriptor's or a header's) when given, else the body's own
    ``mediaType``, else an OCI index or manifest by shape."""
    return model.media_type_of(doc, hint)


@dataclass(frozen=True)
class Child:
    digest: str
    media_type: str
    size: int
    platform: str


def parse(data: bytes, what: str) -> dict[str, Any]:
    return model.load_object(data, what)


def is_index(doc: dict[str, Any], media_type: str = "") -> bool:
    return media_type in INDEX_TYPES or doc.get("mediaType") in INDEX_TYPES or "manifests" in doc


def platform_of(entry: dict[str, Any]) -> str:
    p = entry.get("platform") or {}
    text = f"{p.get('os', 'unknown')}/{p.get('architecture', 'unknown')}"
    return f"{text}/{p['variant']}" if p.get("variant") else text


def children(doc: dict[str, Any], what: str) -> list[Child]:
    out = []
    for entry in doc.get("manifests") or []:
        d = model.Descriptor.parse(entry, what)
        out.append(Child(d.digest, d.media_type, d.size, d.platform or "unknown/unknown"))
    return out


def image_blobs(doc: dict[str, Any], what: str) -> list[tuple[str, int]]:
    """(digest, size) of the config and every layer of one image manifest."""
    entries = ([doc["config"]] if doc.get("config") is not None else []) + list(doc.get("layers") or [])
    return [(d.digest, d.size) for d in (model.Descriptor.parse(e, what) for e in entries)]


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
