"""What a registry already holds: tags, manifests and blobs, for differential bundles.

Run on the air-gapped side (``mirrorkit inventory --registry R -o inv.json``),
carried back to the connected side, and given to ``pull-bundle --have``: blobs
the registry already has are left out of the next bundle.
"""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mirrorkit.errors import InputError, NotFoundError
from mirrorkit.oci import manifests
from mirrorkit.oci.client import RegistryClient
from mirrorkit.refs import Ref, RegistryTarget, check_digest
from mirrorkit.yamlio import load_json

KIND = "Inventory"
API_VERSION = "mirrorkit.dev/v1alpha1"


def take_inventory(client: RegistryClient, target: RegistryTarget, repos: list[str] | None = None,
                   jobs: int = 4) -> dict[str, Any]:
    host = target.host
    names = repos or [r for r in client.catalog(host) if not target.prefix or r.startswith(target.prefix + "/")
                      or r == target.prefix]
    blobs: dict[str, int] = {}
    manifest_digests: set[str] = set()
    repositories: dict[str, Any] = {}

    def one(repo: str) -> tuple[str, dict[str, str], set[str], dict[str, int]]:
        tags: dict[str, str] = {}
        seen: set[str] = set()
        found: dict[str, int] = {}
        try:
            tag_list = client.list_tags(host, repo)
        except NotFoundError:
            return repo, tags, seen, found
        for tag in tag_list:
            ref = Ref(host, repo, tag)
            try:
                top = client.get_manifest(ref)
            except NotFoundError:
                continue
            tags[tag] = top.digest
            seen.add(top.digest)
            doc = manifests.parse(top.data, str(ref))
            docs = [doc]
            for child in manifests.children(doc, str(ref)):
                if child.digest in seen:
                    continue
                try:
                    m = client.get_manifest(ref, child.digest)
                except NotFoundError:
                    continue
                seen.add(child.digest)
                docs.append(manifests.parse(m.data, f"{ref}@{child.digest}"))
            for d in docs:
                for digest, size in manifests.image_blobs(d, str(ref)):
                    found[digest] = size
        return repo, tags, seen, found

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for repo, tags, seen, found in pool.map(one, names):
            repositories[repo] = {"tags": tags}
            manifest_digests |= seen
            blobs.update(found)
    return {"apiVersion": API_VERSION, "kind": KIND, "registry": str(target),
            "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "repositories": repositories, "manifests": sorted(manifest_digests),
            "blobs": dict(sorted(blobs.items()))}


def load_inventory(path: str | Path) -> tuple[dict[str, int], str]:
    """(blob digest -> size, a description for the bundle's depends_on)."""
    data = load_json(path, "inventory")
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise InputError(f"{path}: not a mirrorkit inventory (kind: {KIND})")
    blobs = data.get("blobs")
    if not isinstance(blobs, dict):
        raise InputError(f"{path}: 'blobs' must be an object of digest -> size")
    out: dict[str, int] = {}
    for digest, size in blobs.items():
        check_digest(digest, f"blob digest in {path}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InputError(f"{path}: blob {digest} has an invalid size")
        out[digest] = size
    return out, f"inventory of {data.get('registry', '?')} taken {data.get('created', '?')}"


def dumps(inventory: dict[str, Any]) -> str:
    return json.dumps(inventory, indent=2) + "\n"
