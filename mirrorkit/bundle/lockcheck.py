"""What the carried manifests reference, checked against the lock before a registry sees them.

A lock and its manifests travel together but nobody vouches for either: a
manifest naming a blob the lock neither carries nor omits would otherwise be
found only half-way through a push.
"""
from __future__ import annotations

import json
from typing import Any

from mirrorkit.errors import InputError
from mirrorkit.lock import Lock
from mirrorkit.refs import is_digest


def check_manifests(lock: Lock, manifests: dict[str, bytes]) -> None:
    """Check what the carried manifests reference against the lock, before a registry ever sees them."""
    sizes = {b.digest: b.size for b in lock.omitted} | lock.blob_sizes()
    for img in lock.images:
        for digest in [img.digest, *img.manifests]:
            data = manifests.get(digest)
            if data is None:
                continue  # left out of a differential bundle
            where = f"manifest {digest} of {img.source}"
            try:
                doc = json.loads(data)
            except (ValueError, RecursionError):
                raise InputError(f"{where}: not valid JSON") from None
            if not isinstance(doc, dict):
                raise InputError(f"{where}: not a JSON object")
            if "layers" in doc and "manifests" in doc:
                raise InputError(f"{where}: declares both 'layers' and 'manifests'")
            if "manifests" in doc:
                for child, size in _descriptors(doc.get("manifests"), where):
                    if child not in img.manifests:
                        raise InputError(f"{where}: lists child manifest {child}, which the lock does not name")
                    _check_size(where, child, size, sizes)
                continue
            refs = _descriptors(doc.get("layers", []), where)
            if "config" in doc:
                refs += _descriptors([doc["config"]], where)
            for ref, size in refs:
                if ref not in sizes:
                    raise InputError(f"{where}: references blob {ref}, which the lock neither carries nor omits")
                _check_size(where, ref, size, sizes)


def _descriptors(value: Any, where: str) -> list[tuple[str, Any]]:
    if not isinstance(value, list):
        raise InputError(f"{where}: malformed descriptor list")
    out = []
    for desc in value:
        digest = desc.get("digest") if isinstance(desc, dict) else None
        if not isinstance(digest, str) or not is_digest(digest):
            raise InputError(f"{where}: malformed descriptor (digest must be sha256:<64 hex>)")
        out.append((digest, desc.get("size")))
    return out


def _check_size(where: str, digest: str, size: Any, sizes: dict[str, int]) -> None:
    if digest in sizes and size != sizes[digest]:
        raise InputError(f"{where}: descriptor gives {digest} size {size!r} but the lock says {sizes[digest]}")

