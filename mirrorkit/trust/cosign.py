"""cosign's key-based signatures: a ``sha256-<hex>.sig`` manifest whose layers are simple-signing payloads.

Each layer of the signature manifest is one signature: its bytes are the payload
(``{"critical": {"identity": {"docker-reference": …}, "image": {"docker-manifest-digest": …},
"type": "cosign container image signature"}, "optional": …}``) and its annotation
``dev.cosignproject.cosign/signature`` holds the base64 signature over exactly those
bytes. Everything here is pure: bytes in, a verdict out, so the same check runs
against a registry and against a bundle on the far side of an air gap.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mirrorkit.oci.manifests import sha256_digest
from mirrorkit.refs import is_digest
from mirrorkit.trust.keys import PublicKey

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
MAX_PAYLOAD = 256 * 1024

# why a signature did not count, most telling last: the verdict reports the most telling one
UNSIGNED = "unsigned"
MALFORMED = "malformed signature"
TAMPERED = "tampered payload"
OTHER_KEY = "signed by another key"
OTHER_DIGEST = "payload names another digest"
RANK = {UNSIGNED: 0, MALFORMED: 1, OTHER_KEY: 2, TAMPERED: 3, OTHER_DIGEST: 4}


def sig_tag(digest: str, suffix: str = "sig") -> str:
    """``sha256:abc…`` -> ``sha256-abc….sig``: where cosign puts an image's signatures."""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}-{hexpart}.{suffix}" if suffix else f"{algo}-{hexpart}"


@dataclass(frozen=True)
class Check:
    """One signature layer judged: ``ok`` with the key and identity, or why not."""

    ok: bool
    reason: str = ""
    detail: str = ""
    key_fingerprint: str = ""
    identity: str = ""


def payload_digest(payload: bytes) -> str:
    return sha256_digest(payload)


def _layers(manifest: bytes) -> list[dict[str, Any]]:
    try:
        doc = json.loads(manifest)
    except (ValueError, RecursionError):
        return []
    layers = doc.get("layers") if isinstance(doc, dict) else None
    return [entry for entry in layers if isinstance(entry, dict)] if isinstance(layers, list) else []


def check_payload(payload: bytes, subject: str) -> tuple[str, str]:
    """(problem, identity): problem is "" when the payload is a simple-signing claim for ``subject``."""
    try:
        doc = json.loads(payload)
        critical = doc["critical"]
        named = critical["image"]["docker-manifest-digest"]
        identity = critical["identity"]["docker-reference"]
        kind = critical["type"]
    except (ValueError, RecursionError, KeyError, TypeError):
        return "payload is not a simple-signing document", ""
    if not isinstance(identity, str) or not isinstance(named, str):
        return "payload is not a simple-signing document", ""
    if kind != PAYLOAD_TYPE:
        return f"payload type is {str(kind)[:80]!r}", identity
    if named != subject:
        return f"names {named[:80]}", identity
    return "", identity


def check_signature_manifest(manifest: bytes, subject: str, keys: list[PublicKey],
                             fetch_blob: Callable[[str], bytes]) -> list[Check]:
    """Judge every signature layer of one ``.sig`` manifest for ``subject`` under ``keys``.

    The signature is checked before the payload's claims: only a genuinely signed
    payload naming another image reads as "names another digest"; an edited payload
    fails its signature (or, when its bytes no longer match the descriptor, reads as tampered).
    """
    checks: list[Check] = []
    for layer in _layers(manifest):
        if layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        digest = layer.get("digest")
        raw_annotations = layer.get("annotations")
        annotations: dict[str, Any] = raw_annotations if isinstance(raw_annotations, dict) else {}
        sig_b64 = annotations.get(SIGNATURE_ANNOTATION)
        if not isinstance(digest, str) or not is_digest(digest) or not isinstance(sig_b64, str):
            checks.append(Check(False, MALFORMED, "layer without a digest or a signature annotation"))
            continue
        size = layer.get("size")
        if isinstance(size, int) and size > MAX_PAYLOAD:
            checks.append(Check(False, MALFORMED, f"payload of {size} bytes is too large"))
            continue
        payload = fetch_blob(digest)
        if payload_digest(payload) != digest:
            checks.append(Check(False, TAMPERED, f"payload bytes hash to {payload_digest(payload)}, not {digest}"))
            continue
        try:
            signature = base64.b64decode(sig_b64, validate=True)
        except (binascii.Error, ValueError):
            checks.append(Check(False, MALFORMED, "signature annotation is not base64"))
            continue
        key = next((k for k in keys if k.verifies(signature, payload)), None)
        problem, identity = check_payload(payload, subject)
        if key is None:
            # cryptographically a foreign key and an edited payload look the same: say both
            checks.append(Check(False, OTHER_KEY, "not by " + " or ".join(k.fingerprint[:19] + "…" for k in keys)
                                + "; or the payload was altered after signing", identity=identity))
            continue
        if problem:
            reason = OTHER_DIGEST if problem.startswith("names") else MALFORMED
            checks.append(Check(False, reason, problem, key.fingerprint, identity))
            continue
        checks.append(Check(True, key_fingerprint=key.fingerprint, identity=identity))
    return checks
