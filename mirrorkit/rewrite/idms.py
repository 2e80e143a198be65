"""``rewrite-config --format idms``: OpenShift ImageDigestMirrorSet and ImageTagMirrorSet.

OpenShift nodes (CRI-O, configured by the Machine Config Operator) find a mirror through
these cluster objects rather than a hand-placed registries.conf. Pulls by digest follow
an ImageDigestMirrorSet; pulls by tag only an ImageTagMirrorSet. A repository gets a
digest entry when the plan knows its digest (``plan --resolve``, or a bundle's lock),
and a tag entry when the cluster pulls it by tag. Entries are per repository, so every
mapping (``flatten`` too) can be said, and ``NeverContactSource`` keeps the nodes from
trying the internet when the mirror fails. The objects are named after the release (or,
for an image set, after its images), never one fixed name: applying a second set beside
the first must add mirrors, not replace them.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import yaml

from mirrorkit.errors import InputError
from mirrorkit.plan import Plan
from mirrorkit.refs import Ref
from mirrorkit.rewrite.comments import inert

API_VERSION = "config.openshift.io/v1"
POLICY = "NeverContactSource"
DNS1123 = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")


def default_name(plan: Plan) -> str:
    """A name per release (or per image set): applying a second set must not replace the first's mirrors."""
    if plan.release:
        return f"mirrorkit-gpu-operator-{plan.release.lower()}"
    digest = hashlib.sha256("\n".join(plan.sources()).encode()).hexdigest()[:10]
    return f"mirrorkit-images-{digest}"


def check_name(name: str) -> str:
    """A Kubernetes object name (DNS-1123 subdomain)."""
    if len(name) > 253 or not DNS1123.match(name):
        raise InputError(f"--name {name!r}: not a Kubernetes object name (lower case letters, digits, '-' and '.', "
                         "starting and ending with a letter or digit)")
    return name


def _entries(pairs: dict[str, set[str]]) -> list[dict[str, Any]]:
    return [{"source": src, "mirrors": sorted(dst), "mirrorSourcePolicy": POLICY} for src, dst in sorted(pairs.items())]


def mirror_sets(plan: Plan, dest: dict[str, Ref], digests: dict[str, str] | None = None,
                name: str | None = None) -> tuple[str, list[str]]:
    """The two objects as YAML, and notes (no digests known, retags a tag mirror cannot follow)."""
    name = check_name(name) if name else default_name(plan)
    by_digest: dict[str, set[str]] = {}
    by_tag: dict[str, set[str]] = {}
    notes: list[str] = []
    for img in plan.images:
        src, dst = img.source_ref, dest[img.source]
        if (digests or {}).get(img.source) or img.digest or src.digest:
            by_digest.setdefault(src.name, set()).add(dst.name)
        if src.tag:
            by_tag.setdefault(src.name, set()).add(dst.name)
            if dst.tag != src.tag:
                notes.append(f"{src}: mirrored as tag {dst.tag}; an ImageTagMirrorSet keeps the tag, so pulls "
                             f"of {src} find {dst.name}:{src.tag} only if that tag is pushed too")
    if not by_digest:
        notes.append("no digests in this plan: the ImageDigestMirrorSet is empty (plan with --resolve, or use the "
                     "bundle's lock)")
    docs: list[dict[str, Any]] = []
    if by_digest:
        docs.append({"apiVersion": API_VERSION, "kind": "ImageDigestMirrorSet", "metadata": {"name": name},
                     "spec": {"imageDigestMirrors": _entries(by_digest)}})
    if by_tag:
        docs.append({"apiVersion": API_VERSION, "kind": "ImageTagMirrorSet", "metadata": {"name": name},
                     "spec": {"imageTagMirrors": _entries(by_tag)}})
    header = (f"# OpenShift mirror sets for plan release {inert(plan.release or '(none)')}, written by mirrorkit: "
              "oc apply -f this file.\n")
    return header + yaml.safe_dump_all(docs, sort_keys=False, width=120, explicit_start=True), notes
