"""``rewrite-config --format nvidiadriver``: the plan's NVIDIADriver CRs, pointing at the mirror.

Each CR is written back as the user gave it, with ``spec.repository`` and ``spec.image``
(and those of ``manager``, ``gds``, ``gdrcopy``) set to the mirrored path of the images
planned for it. ``version`` stays: the operator still appends each node's OS tag and
kernel, and the mirror holds those tags.

CRs exported with ``kubectl get -o yaml`` carry what the API server set: ``resourceVersion``
(a create with it set is refused), ``uid``, ``creationTimestamp``, ``generation``,
``managedFields``, ``status`` and the ``last-applied-configuration`` annotation (which still
names the upstream registry). Those are stripped: the output is something to apply.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from mirrorkit.errors import InputError
from mirrorkit.plan import Plan
from mirrorkit.refs import Ref
from mirrorkit.rewrite.comments import inert
from mirrorkit.rewrite.helm import split_destination

SERVER_SET = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink",
              "deletionTimestamp", "deletionGracePeriodSeconds")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def strip_server_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The CR as a user would write it: no status, no metadata the API server set."""
    doc.pop("status", None)
    meta = doc.get("metadata")
    if isinstance(meta, dict):
        for key in SERVER_SET:
            meta.pop(key, None)
        notes = meta.get("annotations")
        if isinstance(notes, dict):
            notes.pop(LAST_APPLIED, None)
            if not notes:
                del meta["annotations"]
    return doc


def nvidiadriver_crs(plan: Plan, dest: dict[str, Ref], pull_secret: str | None = None) -> tuple[str, list[str]]:
    """The CRs as multi-document YAML, and notes about CRs that had no image planned."""
    if not plan.nvidiadrivers:
        raise InputError("this plan has no NVIDIADriver resources: plan with --nvidiadriver FILE")
    where: dict[str, Ref] = {}
    for img in plan.images:
        for component in img.component.split(","):
            if component.startswith("nvidiadriver/") and img.source in dest:
                where.setdefault(component, dest[img.source])
    docs: list[dict[str, Any]] = []
    notes: list[str] = []
    for original in plan.nvidiadrivers:
        doc = strip_server_fields(copy.deepcopy(original))
        name = str((doc.get("metadata") or {}).get("name") or "")
        spec = doc.setdefault("spec", {})
        if pull_secret and pull_secret not in (spec.get("imagePullSecrets") or []):
            spec["imagePullSecrets"] = [*(spec.get("imagePullSecrets") or []), pull_secret]
        base = f"nvidiadriver/{name}"
        if base not in where:
            notes.append(f"NVIDIADriver {name}: no image planned (it selects no GPU node); written unchanged")
        for component, node in [(base, spec), *((f"{base}/{p}", spec.get(p)) for p in ("manager", "gds", "gdrcopy"))]:
            if component in where and isinstance(node, dict):
                node["repository"], node["image"] = split_destination(where[component])
        docs.append(doc)
    header = f"# NVIDIADriver resources of plan release {inert(plan.release or '(none)')}, pointing at the mirror.\n"
    return header + yaml.safe_dump_all(docs, sort_keys=False, width=120, explicit_start=True), notes
