"""Can admission (Kyverno, CRI-O/podman signature policy) accept the mirrored images at all?

Admission checks the signature of the digest a reference resolves to at the mirror.
A tag restricted by ``--platform`` to several platforms resolves to an index mirrorkit
rewrote: no publisher signed that digest, so no key in any policy can admit it, and
writing an Enforce policy for it would deny the operator's pods. Restricted to one
platform, the tag names that platform's manifest, signed as published: that works.
"""

from __future__ import annotations

from mirrorkit.lock import Lock
from mirrorkit.oci.manifests import Child, wanted
from mirrorkit.plan import Plan


def unsignable(plan: Plan, lock: Lock | None) -> list[str]:
    """One line per image no signature can admit (empty when the policy can work)."""
    if lock is not None:
        return [f"{i.source}: the tag resolves to {i.digest}, an index rewritten to {', '.join(i.platforms)}"
                + (" (a bundle from an earlier mirrorkit: pull it again)" if len(i.platforms) == 1 else "")
                for i in lock.images if i.rewritten_index]
    if len(plan.platforms) < 2:
        return []
    out = []
    for img in plan.images:
        if not img.platforms:
            out.append(f"{img.source}: the plan does not say which platforms it has (run plan --resolve, or give "
                       f"the bundle), so its index may be rewritten to {', '.join(plan.platforms)}")
        elif any(not wanted(Child("", "", 0, p), plan.platforms) for p in img.platforms if p != "unknown/unknown"):
            out.append(f"{img.source}: its index will be rewritten to {', '.join(plan.platforms)}")
    return out


def refusal(fmt: str, lines: list[str]) -> str:
    return (f"--format {fmt}: {len(lines)} image(s) cannot pass signature admission: {'; '.join(lines)}. "
            "A rewritten index is a digest no publisher signed, and admission checks the digest a tag "
            "resolves to. Plan with one --platform (the tag then names that platform's signed manifest) "
            "or without --platform, or sign them at the mirror (push-bundle --site-key) and give --site-signed "
            "with the site's public key as another --verify-key")
