"""Helm values, KubeSphere extension config and ``--set`` flags that point the chart at the mirror.

The overlay sets, for every component the plan carries, ``repository`` and
``image`` at the mirrored path and ``version`` as the operator expects it: the
driver-type images without their OS suffix (the operator appends it at run
time), precompiled drivers as the branch with ``driver.usePrecompiled: true``,
and NFD under ``node-feature-discovery.image``. It never switches a component
on: what the plan carries "just in case" (``--components all``) stays as the
user's values have it.
"""

from __future__ import annotations

import copy
import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from mirrorkit.errors import InputError
from mirrorkit.plan import Plan
from mirrorkit.refs import Ref

NFD_PATH = "node-feature-discovery.image"
KUBESPHERE_ROOT = "gpu-operator"
EXTRAS = {"extra", "cuda-sample"}
OS_TAGGED = {"driver", "gds", "gdrcopy", "vgpuManager"}
# where the chart joins repository/image:version itself, so a digest would make an invalid reference
NOT_PINNABLE = {
    "operator": "the chart joins operator.repository/image:version with ':' for the operator Deployment",
    "driver.manager": "the chart also joins driver.manager as repository/image:version (operator Deployment env)",
    NFD_PATH: "the NFD subchart joins image.repository:image.tag with ':'",
}
SERVICE_MONITOR = {"enabled": True, "interval": "15s", "honorLabels": True, "additionalLabels": {},
                   "relabelings": []}


@dataclass
class Overlay:
    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    node = tree
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def split_destination(dest: Ref) -> tuple[str, str]:
    """``REG/PREFIX/nvidia/cloud-native/k8s-driver-manager`` -> (``REG/PREFIX/nvidia/cloud-native``, image)."""
    repo_path, _, image = dest.repository.rpartition("/")
    return (f"{dest.registry}/{repo_path}" if repo_path else dest.registry), image


def image_overlay(plan: Plan, dest: dict[str, Ref], digests: dict[str, str] | None = None,
                  pin: bool = False, service_monitor: bool = False) -> Overlay:
    """The chart values that make every planned component pull from its mirrored path."""
    out = Overlay()
    seen: dict[str, str] = {}
    for img in plan.images:
        target = dest[img.source]
        for path in img.component.split(","):
            if path in EXTRAS or path in seen or "/" in path:
                continue             # extras, NVIDIADriver CRs, manifest images: no chart value to set
            seen[path] = img.source
            digest = (digests or {}).get(img.source) or img.digest
            if path == NFD_PATH:
                _set(out.values, f"{path}.repository", target.name)
                _set(out.values, f"{path}.tag", target.tag or img.setting)
                if pin:
                    out.notes.append(f"{path}: not pinned: {NOT_PINNABLE[path]}")
                continue
            repository, image = split_destination(target)
            version = img.setting or target.tag
            if pin and path in OS_TAGGED:
                out.notes.append(f"{path}: not pinned: the operator appends the node's OS tag (and kernel for "
                                 "precompiled drivers) to the version, so one digest cannot name every node's image")
            elif pin and path in NOT_PINNABLE:
                out.notes.append(f"{path}: not pinned: {NOT_PINNABLE[path]}")
            elif pin and digest:
                version = digest
            elif pin:
                out.notes.append(f"{path}: not pinned: the plan has no digest (run plan --resolve)")
            _set(out.values, f"{path}.repository", repository)
            _set(out.values, f"{path}.image", image)
            _set(out.values, f"{path}.version", version)
    if plan.driver.get("precompiled") and "driver" in seen:
        _set(out.values, "driver.usePrecompiled", True)
    if plan.nvidiadrivers:
        # the plan's drivers are NVIDIADriver CRs (rewrite-config --format nvidiadriver): the chart must
        # hand driver management to them and not deploy its default CR beside them
        _set(out.values, "driver.nvidiaDriverCRD.enabled", True)
        _set(out.values, "driver.nvidiaDriverCRD.deployDefaultCR", False)
    if service_monitor:
        _set(out.values, "dcgmExporter.serviceMonitor", dict(SERVICE_MONITOR))
    return out


def merge(base: dict[str, Any], overlay: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """Deep-merge overlay into a copy of base; returns it and the dotted keys whose value changed."""
    result = copy.deepcopy(base)
    changed: list[str] = []

    def walk(dst: dict[str, Any], src: dict[str, Any], path: str) -> None:
        for key, value in src.items():
            here = f"{path}{key}"
            if isinstance(value, dict) and value:
                if dst.get(key) is not None and not isinstance(dst[key], dict):
                    raise InputError(f"values: {here} is {type(dst[key]).__name__}, but the chart expects a "
                                     "mapping there; fix the values file")
                if not isinstance(dst.get(key), dict):
                    dst[key] = {}
                walk(dst[key], value, f"{here}.")
            else:
                if dst.get(key) != value:
                    changed.append(here)
                dst[key] = copy.deepcopy(value)

    walk(result, overlay, prefix)
    return result, changed


def helm_values(overlay: Overlay, user: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    user = user or {}
    if isinstance(user.get(KUBESPHERE_ROOT), dict):
        merged, changed = merge(user[KUBESPHERE_ROOT], overlay.values, f"{KUBESPHERE_ROOT}.")
        return {**user, KUBESPHERE_ROOT: merged}, changed
    return merge(user, overlay.values)


def kubesphere_config(overlay: Overlay, user: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The extension config: the chart's values under ``gpu-operator:`` (global.imageRegistry is ignored)."""
    user = user or {}
    root = user.get(KUBESPHERE_ROOT)
    inner: dict[str, Any] = root if isinstance(root, dict) else user
    outer = {k: v for k, v in user.items() if k != KUBESPHERE_ROOT} if inner is not user else {}
    merged, changed = merge(inner, overlay.values, f"{KUBESPHERE_ROOT}.")
    return {**outer, KUBESPHERE_ROOT: merged}, changed


def flatten(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.extend(flatten(value, f"{path}."))
        else:
            out.append((path, value))
    return out


def _flag(path: str, value: Any) -> str:
    """Booleans as --set, empty maps as --set-json, everything else as --set-string (so 550 stays a string)."""
    if isinstance(value, bool):
        return f"--set {shlex.quote(f'{path}={str(value).lower()}')}"
    if isinstance(value, (dict, list)):
        return f"--set-json {shlex.quote(f'{path}={json.dumps(value)}')}"
    text = str(value).replace("\\", "\\\\").replace(",", "\\,")
    return f"--set-string {shlex.quote(f'{path}={text}')}"


def set_flags(overlay: Overlay, release_name: str = "gpu-operator", chart: str = "nvidia/gpu-operator",
              version: str | None = None, namespace: str = "gpu-operator") -> str:
    """``helm install ... --set a.b=c`` (seed 003's form), one flag per line, shell-quoted."""
    lines = [f"helm install --wait {shlex.quote(release_name)} {shlex.quote(chart)}"]
    if version:
        lines.append(f"--version {shlex.quote(version)}")
    lines.append(f"-n {shlex.quote(namespace)} --create-namespace")
    lines.extend(_flag(path, value) for path, value in flatten(overlay.values))
    return " \\\n  ".join(lines) + "\n"
