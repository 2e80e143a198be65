"""The state of each bundled image's cosign signatures, as far as this run has checked them.

``verified`` only when this run checked the carried signature bytes under one of the
user's keys; ``invalid`` when it checked and they failed; ``present`` when signatures are
carried but nobody here checked them; ``absent`` when none are carried. A lock's
``verifications:`` block is a record of a check made at pull time by whoever wrote the
lock: it never makes an image ``verified`` here (an edited lock could claim anything).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mirrorkit.errors import MirrorkitError
from mirrorkit.lock import Lock, LockImage
from mirrorkit.trust.cosign import sig_tag
from mirrorkit.trust.keys import PublicKey
from mirrorkit.trust.verify import verify_signatures

VERIFIED, PRESENT, ABSENT, INVALID = "verified", "present", "absent", "invalid"


@dataclass(frozen=True)
class ImageSignature:
    state: str
    detail: str = ""
    key_fingerprint: str = ""
    identity: str = ""


def signed_digests(image: LockImage) -> tuple[str, ...]:
    """The digests a signature must cover: the image's own, or, for a platform-restricted image whose
    rewritten index nobody signed, its platform manifests (as mirrorkit.transfer.artifacts.Subject)."""
    if image.planned_digest and image.planned_digest != image.digest:
        return tuple(image.manifests)
    return (image.digest,)


def image_signatures(lock: Lock, keys: list[PublicKey] | None = None,
                     read: Callable[[str], bytes] | None = None) -> dict[str, ImageSignature]:
    """source -> state for every image of ``lock``; signatures are checked only with both ``keys`` and
    ``read`` (a blob's bytes from the bundle itself)."""
    by_tag = {(a.source, a.tag): a.digest for a in lock.artifacts if a.tag}
    carried = {(img.source, d) for img in lock.images for d in signed_digests(img)
               if (img.source, sig_tag(d)) in by_tag}
    out: dict[str, ImageSignature] = {}
    if not keys or read is None:
        for img in lock.images:
            digests = signed_digests(img)
            have = sum(1 for d in digests if (img.source, d) in carried)
            out[img.source] = (ImageSignature(PRESENT, "signatures present, not verified")
                               if have and have == len(digests) else
                               ImageSignature(PRESENT, f"signatures present for {have} of {len(digests)} digests, "
                                              "not verified") if have else ImageSignature(ABSENT, "none carried"))
        return out

    def fetch_manifest(name: str, reference: str) -> bytes | None:
        digest = by_tag.get((name, reference))
        return read(digest) if digest else None

    def fetch_blob(_name: str, digest: str) -> bytes:
        return read(digest)

    subjects = [(img.source, d) for img in lock.images for d in signed_digests(img)]
    try:
        result = verify_signatures(fetch_manifest, fetch_blob, subjects, keys)
    except MirrorkitError as exc:        # an unreadable blob: nothing counts as checked
        return {img.source: ImageSignature(INVALID, f"could not be checked: {exc}") for img in lock.images}
    verdicts = {(v.name, v.digest): v for v in result.verdicts}
    for img in lock.images:
        mine = [verdicts[(img.source, d)] for d in signed_digests(img) if (img.source, d) in verdicts]
        bad = [v for v in mine if not v.verified]
        if mine and not bad:
            out[img.source] = ImageSignature(VERIFIED, f"verified by this report for {len(mine)} digest(s)",
                                             mine[0].key_fingerprint, mine[0].identity)
        elif any((img.source, v.digest) in carried for v in mine):
            out[img.source] = ImageSignature(INVALID, "; ".join(v.describe() for v in bad))
        else:
            out[img.source] = ImageSignature(ABSENT, "none carried")
    return out
