"""What changes in the NVIDIADriver resources between two plans, pool by pool.

``helm upgrade`` does not touch NVIDIADriver CRs (the chart has ``deployDefaultCR: false``
when they are used): a pool only moves to a new driver when its CR is applied again. So an
upgrade runbook must name every CR whose spec changed, re-emit and apply them, and say what
that pool's nodes go through; a CR the new plan no longer has must be deleted by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mirrorkit.plan import Plan

# the spec fields that decide which images a pool's driver pods run (and so whether they restart)
IMAGE_FIELDS = ("driverType", "repository", "image", "version", "usePrecompiled", "nodeSelector")
SUB_FIELDS = ("manager", "gds", "gdrcopy")


@dataclass
class CrChange:
    name: str
    kind: str                                   # changed, added, removed
    fields: list[str] = field(default_factory=list)
    node_selector: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind != "changed":
            return f"NVIDIADriver {self.name}: {self.kind}"
        return f"NVIDIADriver {self.name}: " + "; ".join(self.fields)

    @property
    def pool(self) -> str:
        sel = ", ".join(f"{k}={v}" for k, v in sorted(self.node_selector.items()))
        return sel or "every node labelled nvidia.com/gpu.present=true"


def _by_name(plan: Plan) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for cr in plan.nvidiadrivers:
        name = str((cr.get("metadata") or {}).get("name") or "")
        spec = cr.get("spec")
        out[name] = spec if isinstance(spec, dict) else {}
    return out


def _show(value: Any) -> str:
    return "(unset)" if value is None else str(value)


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = [f"{key} {_show(old.get(key))} → {_show(new.get(key))}" for key in IMAGE_FIELDS
           if old.get(key) != new.get(key)]
    for sub in SUB_FIELDS:
        a, b = old.get(sub) or {}, new.get(sub) or {}
        if not isinstance(a, dict) or not isinstance(b, dict):
            continue
        out += [f"{sub}.{key} {_show(a.get(key))} → {_show(b.get(key))}"
                for key in ("enabled", "repository", "image", "version") if a.get(key) != b.get(key)]
    return out


def cr_changes(old: Plan, new: Plan) -> list[CrChange]:
    """Every CR added, removed, or whose image-deciding spec changed, in the new plan's order."""
    before, after = _by_name(old), _by_name(new)
    out: list[CrChange] = []
    for name, spec in after.items():
        selector = spec.get("nodeSelector") if isinstance(spec.get("nodeSelector"), dict) else {}
        if name not in before:
            out.append(CrChange(name, "added", node_selector=selector or {}))
        elif fields := _diff(before[name], spec):
            out.append(CrChange(name, "changed", fields, selector or {}))
    for name, spec in before.items():
        if name not in after:
            selector = spec.get("nodeSelector") if isinstance(spec.get("nodeSelector"), dict) else {}
            out.append(CrChange(name, "removed", node_selector=selector or {}))
    return out
