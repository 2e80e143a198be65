"""Is every image signed under one of the user's keys? Answered over two small callables.

``fetch_manifest(name, reference)`` returns manifest bytes (or None when there is
nothing at that tag) and ``fetch_blob(name, digest)`` a small blob's bytes; ``name``
is whatever the caller uses to find an image's repository. Online they read a
registry, offline they read a bundle: the same judgement on both sides of the gap.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from mirrorkit.errors import MirrorkitError
from mirrorkit.trust.cosign import MALFORMED, RANK, UNSIGNED, Check, check_signature_manifest, sig_tag
from mirrorkit.trust.keys import PublicKey

FetchManifest = Callable[[str, str], bytes | None]
FetchBlob = Callable[[str, str], bytes]


@dataclass(frozen=True)
class Verdict:
    name: str
    digest: str
    verified: bool
    key_fingerprint: str = ""
    identity: str = ""
    reason: str = ""
    detail: str = ""

    def describe(self) -> str:
        if self.verified:
            return f"{self.name}@{self.digest}: signed by {self.key_fingerprint} as {self.identity}"
        return f"{self.name}@{self.digest}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class VerificationResult:
    verdicts: list[Verdict] = field(default_factory=list)
    verified_at: str = ""

    @property
    def passed(self) -> bool:
        return all(v.verified for v in self.verdicts)

    @property
    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.verified]

    def summary(self) -> str:
        bad = self.failures
        if not bad:
            return f"{len(self.verdicts)} of {len(self.verdicts)} image digests carry a valid signature"
        return (f"{len(bad)} of {len(self.verdicts)} image digests lack a valid signature: "
                + "; ".join(v.describe() for v in bad))


def _best(checks: list[Check]) -> Check:
    good = [c for c in checks if c.ok]
    if good:
        return good[0]
    if not checks:
        return Check(False, UNSIGNED, "its signature manifest holds no simple-signing payload")
    return max(checks, key=lambda c: RANK.get(c.reason, 0))


def verify_signatures(fetch_manifest: FetchManifest, fetch_blob: FetchBlob, subjects: list[tuple[str, str]],
                      keys: list[PublicKey], now: dt.datetime | None = None) -> VerificationResult:
    """One verdict per (name, digest): verified under which key and identity, or why not."""
    when = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    result = VerificationResult(verified_at=when.isoformat().replace("+00:00", "Z"))
    seen: set[tuple[str, str]] = set()
    for name, digest in subjects:
        if (name, digest) in seen:
            continue
        seen.add((name, digest))
        try:
            manifest = fetch_manifest(name, sig_tag(digest))
        except MirrorkitError as exc:
            result.verdicts.append(Verdict(name, digest, False, reason=MALFORMED, detail=str(exc)))
            continue
        if manifest is None:
            result.verdicts.append(Verdict(name, digest, False, reason=UNSIGNED,
                                           detail=f"no {sig_tag(digest)[:19]}….sig beside it"))
            continue
        def blob(d: str, n: str = name) -> bytes:
            return fetch_blob(n, d)

        try:
            checks = check_signature_manifest(manifest, digest, keys, blob)
        except MirrorkitError as exc:
            checks = [Check(False, MALFORMED, str(exc))]
        best = _best(checks)
        result.verdicts.append(Verdict(name, digest, best.ok, best.key_fingerprint, best.identity,
                                       best.reason, best.detail))
    return result
