"""What changed between two plans, locks or bundles: the day-two question before every upgrade.

Pure: it compares what the two inputs recorded and asks no registry. An image is
its source reference as the plan has it; its digest is the lock's (what was
really carried) or else the plan's (what ``--resolve`` saw). ``added`` and
``removed`` are the plain set difference of source references, so a script gets
exactly what the new side needs that the old did not; ``changed`` explains the
moves per component for a person (``driver 550.127.05 -> 570.86.15``) and names
every digest that moved under an unchanged tag.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from mirrorkit.lock import Lock
from mirrorkit.plan import Plan, PlanImage
from mirrorkit.refs import Ref


@dataclass(frozen=True)
class Change:
    component: str
    old: str
    new: str

    def to_dict(self) -> dict[str, str]:
        return {"component": self.component, "from": self.old, "to": self.new}


@dataclass
class Diff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "changed": [c.to_dict() for c in self.changed]}


def _digests(plan: Plan, lock: Lock | None) -> dict[str, str]:
    out = {i.source: i.digest for i in plan.images if i.digest}
    if lock is not None:
        out.update({i.source: i.digest for i in lock.images})
    return out


def _version(img: PlanImage) -> str:
    """What a person calls the version: the chart setting (driver without OS suffix), else the tag."""
    if img.setting:
        return img.setting
    ref = img.source_ref
    return ref.tag or ref.digest or str(ref)


def compare(old: tuple[Plan, Lock | None], new: tuple[Plan, Lock | None]) -> Diff:
    (old_plan, old_lock), (new_plan, new_lock) = old, new
    old_images = {i.source: i for i in old_plan.images}
    new_images = {i.source: i for i in new_plan.images}
    diff = Diff(added=sorted(set(new_images) - set(old_images)), removed=sorted(set(old_images) - set(new_images)))
    gone: dict[str, set[str]] = defaultdict(set)
    came: dict[str, set[str]] = defaultdict(set)
    for source in diff.removed:
        for component in old_images[source].groups:
            gone[component].add(_version(old_images[source]))
    for source in diff.added:
        for component in new_images[source].groups:
            came[component].add(_version(new_images[source]))
    for component in sorted(set(gone) & set(came)):
        old_v, new_v = ", ".join(sorted(gone[component])), ", ".join(sorted(came[component]))
        if old_v != new_v:
            diff.changed.append(Change(component, old_v, new_v))
    old_digests, new_digests = _digests(old_plan, old_lock), _digests(new_plan, new_lock)
    for source in sorted(set(old_images) & set(new_images)):
        before, after = old_digests.get(source), new_digests.get(source)
        if before and after and before != after:
            ref = Ref.parse(source)
            diff.changed.append(Change(",".join(new_images[source].groups), str(ref.with_digest(before)),
                                       str(ref.with_digest(after))))
    return diff


def render(diff: Diff, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(diff.to_dict(), indent=2) + "\n"
    if not diff.differs:
        return "no differences\n"
    lines: list[str] = []
    if diff.changed:
        lines.append("changed:")
        width = max(len(c.component) for c in diff.changed)
        lines += [f"  {c.component:<{width}}  {c.old} \u2192 {c.new}" for c in diff.changed]
    if diff.added:
        lines.append("added:")
        lines += [f"  + {ref}" for ref in diff.added]
    if diff.removed:
        lines.append("removed:")
        lines += [f"  - {ref}" for ref in diff.removed]
    lines.append(f"{len(diff.added)} added, {len(diff.removed)} removed, {len(diff.changed)} changed")
    return "\n".join(lines) + "\n"
