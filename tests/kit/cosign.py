"""Sign test images the way ``cosign sign --key`` does, with keys made by ``cryptography``.

For an image digest D in repository R cosign pushes, beside the image, an OCI
manifest tagged ``sha256-<hex of D>.sig``: an empty-ish image config and one layer
per signature, of type ``application/vnd.dev.cosign.simplesigning.v1+json``, whose
bytes are the simple-signing payload and whose annotation
``dev.cosignproject.cosign/signature`` holds the base64 signature over those bytes.
``sign_recursive`` signs an index and every platform manifest (``--recursive``).
Also here: ``.att``/``.sbom`` tag-schema artifacts and an OCI 1.1 referrer (an SBOM
with ``subject``) plus the ``sha256-<hex>`` fallback tag index registries without
the referrers API need. Independent of mirrorkit's own code, on purpose.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from kit.images import OCI_INDEX, OCI_MANIFEST, Blob, Image, Index, canonical_json, sha256_digest
from kit.push import TIMEOUT, push_blob, push_manifest

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
SPDX = "application/spdx+json"
DSSE = "application/vnd.dsse.envelope.v1+json"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def make_key(kind: str = "p256") -> PrivateKey:
    """``p256``, ``p384``, ``rsa`` (2048) or ``ed25519``."""
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def write_public_key(key: PrivateKey, path: Path) -> Path:
    path.write_bytes(public_pem(key))
    return path


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    """What cosign does with a key: ECDSA and RSA (PKCS#1 v1.5) over SHA-256, Ed25519 plain."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)


def payload(identity: str, digest: str) -> bytes:
    """The simple-signing payload, in cosign's field order and compact form."""
    return (b'{"critical":{"identity":{"docker-reference":"' + identity.encode()
            + b'"},"image":{"docker-manifest-digest":"' + digest.encode()
            + b'"},"type":"cosign container image signature"},"optional":null}')


def tag_for(digest: str, suffix: str = "sig") -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}-{hexpart}.{suffix}" if suffix else f"{algo}-{hexpart}"


@dataclass(frozen=True)
class Pushed:
    """A manifest pushed beside an image: its bytes, digest, tag (None when pushed by digest)."""

    data: bytes
    digest: str
    media_type: str
    tag: str | None
    blobs: tuple[Blob, ...]


def _config_for(layers: list[Blob]) -> Blob:
    config = {"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z",
              "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
              "rootfs": {"diff_ids": [b.digest for b in layers], "type": "layers"}}
    return Blob.of(canonical_json(config), OCI_CONFIG)


def _push(base_url: str, repo: str, reference: str, manifest: dict[str, Any], blobs: list[Blob],
          media_type: str = OCI_MANIFEST) -> Pushed:
    data = canonical_json(manifest)
    with httpx.Client(timeout=TIMEOUT) as http:
        for blob in blobs:
            push_blob(base_url, repo, blob, client=http)
        push_manifest(base_url, repo, reference, data, media_type, client=http)
    tag = None if reference.startswith("sha256:") else reference
    return Pushed(data, sha256_digest(data), media_type, tag, tuple(blobs))


def sign(base_url: str, repo: str, identity: str, digest: str, key: PrivateKey, *,
         claims: str | None = None, tamper: bool = False) -> Pushed:
    """Push ``sha256-<hex>.sig`` for ``digest``; ``claims`` makes the payload name another digest,
    ``tamper`` edits the payload after signing (the signature then no longer holds)."""
    body = payload(identity, claims or digest)
    signature = base64.b64encode(sign_bytes(key, body)).decode()
    if tamper:
        body = body.replace(b'"optional":null', b'"optional":{"tampered":"yes"}')
    layer = Blob.of(body, SIMPLE_SIGNING)
    config = _config_for([layer])
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
                "layers": [{**layer.descriptor(), "annotations": {SIGNATURE_ANNOTATION: signature}}]}
    return _push(base_url, repo, tag_for(digest), manifest, [config, layer])


def sign_recursive(base_url: str, repo: str, identity: str, content: Index | Image,
                   key: PrivateKey) -> list[Pushed]:
    """Sign the index and each platform manifest, as ``cosign sign --recursive`` does."""
    out = [sign(base_url, repo, identity, content.digest, key)]
    for image in content.images if isinstance(content, Index) else ():
        out.append(sign(base_url, repo, identity, image.digest, key))
    return out


def attest(base_url: str, repo: str, digest: str, statement: dict[str, Any]) -> Pushed:
    """A ``.att`` tag-schema attestation: one DSSE envelope layer (unsigned here; carried, not judged)."""
    envelope = {"payloadType": "application/vnd.in-toto+json",
                "payload": base64.b64encode(canonical_json(statement)).decode(), "signatures": []}
    layer = Blob.of(canonical_json(envelope), DSSE)
    config = _config_for([layer])
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
                "layers": [{**layer.descriptor(), "annotations": {"predicateType": "https://spdx.dev/Document"}}]}
    return _push(base_url, repo, tag_for(digest, "att"), manifest, [config, layer])


def sbom_referrer(base_url: str, repo: str, subject: Index | Image, document: dict[str, Any],
                  *, fallback_index: bool = True) -> tuple[Pushed, Pushed | None]:
    """An OCI 1.1 referrer: an SPDX SBOM with ``artifactType`` and ``subject``, pushed by digest.

    Registries without the referrers API (distribution 2.8) need the client-maintained
    ``sha256-<hex>`` tag index listing it, which is pushed too unless ``fallback_index=False``.
    """
    sbom = Blob.of(canonical_json(document), SPDX)
    empty = Blob.of(b"{}", OCI_EMPTY)
    subject_desc = {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SPDX,
                "config": empty.descriptor(), "layers": [sbom.descriptor()], "subject": subject_desc,
                "annotations": {"org.opencontainers.image.created": "1970-01-01T00:00:00Z"}}
    data = canonical_json(manifest)
    referrer = _push(base_url, repo, sha256_digest(data), manifest, [empty, sbom])
    if not fallback_index:
        return referrer, None
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [{"mediaType": OCI_MANIFEST, "digest": referrer.digest, "size": len(referrer.data),
                            "artifactType": SPDX}]}
    return referrer, _push(base_url, repo, tag_for(subject.digest, ""), index, [], OCI_INDEX)
