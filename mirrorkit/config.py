"""``mirrorkit plan -c mirrorkit.yaml``: the same settings as the flags, in a versioned file.

A site keeps its plan settings next to its values file and reruns the same
command for every release; flags on the command line override the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mirrorkit.errors import InputError
from mirrorkit.yamlio import load_mapping

API_VERSION = "mirrorkit.dev/v1alpha1"
KIND = "PlanConfig"

# file key -> (click parameter name, expected type)
PLAN_KEYS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "version": ("version", str),
    "flavor": ("flavor", str),
    "nodes": ("node", list),
    "nodesJson": ("nodes_json", str),
    "driverBranch": ("driver_branch", (str, int)),
    "driverVersion": ("driver_version", str),
    "precompiled": ("precompiled", bool),
    "osAliases": ("os_alias", list),
    "values": ("values", str),
    "components": ("components", str),
    "images": ("image", list),
    "imageLists": ("image_list", list),
    "sample": ("sample", bool),
    "chart": ("chart", str),
    "registry": ("registry", str),
    "mapping": ("mapping", str),
    "maxPathDepth": ("max_path_depth", int),
    "resolve": ("resolve", bool),
    "platforms": ("platform", list),
    "sourceEndpoints": ("source_endpoint", list),
    "insecure": ("insecure", list),
    "format": ("fmt", str),
    "output": ("output", str),
    # NVIDIADriver CRs, rendered manifests, and --force (plan despite a --platform missing a node's arch)
    "nvidiaDrivers": ("nvidiadriver", list),
    "manifests": ("manifests", list),
    "force": ("force", bool),
}


def load_plan_config(path: str | Path) -> dict[str, Any]:
    """Click parameter name -> value, paths made relative to the config file's folder."""
    data = load_mapping(path, "config file")
    if data.get("apiVersion") != API_VERSION or data.get("kind") != KIND:
        raise InputError(f"{path}: expected apiVersion: {API_VERSION} and kind: {KIND}")
    base = Path(path).resolve().parent
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("apiVersion", "kind"):
            continue
        if key not in PLAN_KEYS:
            raise InputError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(PLAN_KEYS))})")
        name, typ = PLAN_KEYS[key]
        if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
            raise InputError(f"{path}: {key} has the wrong type ({type(value).__name__})")
        if isinstance(value, list):
            if not all(isinstance(v, (str, int, float)) for v in value):
                raise InputError(f"{path}: every entry of {key} must be a string")
            value = tuple(str(v) for v in value)
        elif isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if key in ("nodesJson", "values", "chart", "output") and value:
            value = str(base / value)
        if key in ("imageLists", "nvidiaDrivers", "manifests"):
            value = tuple(v if v == "-" else str(base / v) for v in value)
        out[name] = value
    return out
