"""``push-bundle --site-key``: the site signs the indexes ``--platform`` rewrote, once it has checked them.

An index restricted to several platforms is a new digest no publisher signed, and
admission checks the digest a tag resolves to. After push-bundle has verified every
platform manifest under the publisher's key (``--verify-key``, required) and pushed the
bundle, it signs each rewritten index with the site's key, in cosign's format
(``sha256-<hex>.sig`` beside it at the mirror, the same payload and annotation cosign
writes), so ``rewrite-config --format kyverno --verify-key nvidia.pub --verify-key
site.pub --site-signed`` admits them and ``verify --verify-key … site.pub`` proves it.
The site vouches only for what it verified: a rewritten index holds nothing but
platform manifests whose own signatures were checked.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from mirrorkit.lock import Lock
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.manifests import sha256_digest
from mirrorkit.refs import Ref
from mirrorkit.trust.bundlesig import SigningKey

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
def payload(identity: str, digest: str) -> bytes:
    """cosign's simple-signing payload, in its field order and compact form."""
    return json.dumps({"critical": {"identity": {"docker-reference": identity},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"}, "optional": None},
                      separators=(",", ":")).encode()


def signature_manifest(key: SigningKey, identity: str, digest: str) -> tuple[bytes, list[bytes]]:
    """The ``.sig`` manifest and its blobs (config, payload layer)."""
    body = payload(identity, digest)
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [sha256_digest(body)]}},
                        separators=(",", ":")).encode()
    manifest: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": sha256_digest(config)},
        "layers": [{"mediaType": SIMPLE_SIGNING, "size": len(body), "digest": sha256_digest(body),
                    "annotations": {SIGNATURE_ANNOTATION: base64.b64encode(key.sign(body)).decode()}}]}
    return json.dumps(manifest, separators=(",", ":")).encode(), [config, body]


def sign_rewritten(client: RegistryClient, lock: Lock, dest: dict[tuple[str, str | None], Ref],
                   key: SigningKey) -> list[str]:
    """Sign every rewritten index at the mirror; the references signed."""
    import io

    signed: list[str] = []
    for img in lock.images:
        if not img.rewritten_index:
            continue
        ref = dest[(img.source, img.destination)]
        # the publisher's repository as identity, as its own signatures name it: CRI-O's exactRepository
        # requirement (containers-policy) then accepts the site's signature like the publisher's
        data, blobs = signature_manifest(key, Ref.parse(img.source).name, img.digest)
        for blob in blobs:
            if not client.blob_exists(ref, sha256_digest(blob)):
                client.upload_blob(ref.registry, ref.repository, sha256_digest(blob), len(blob),
                                   lambda b=blob: io.BytesIO(b))   # type: ignore[misc]
        algo, _, hexpart = img.digest.partition(":")
        client.put_manifest(ref.registry, ref.repository, f"{algo}-{hexpart}.sig", data, OCI_MANIFEST)
        signed.append(f"{ref.name}@{img.digest}")
    return signed
