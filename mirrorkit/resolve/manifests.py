"""``plan --manifests``: every image a set of Kubernetes objects will pull, for any chart.

``helm template`` output is the one description of a chart's images that is always
right: values, helpers and subcharts have all been applied. So the images are read
where the kubelet reads them (containers, initContainers and ephemeralContainers of
every pod template, whatever the workload kind, CronJobs included) and where
operators take them from (``*IMAGE`` env values, the GPU Operator's ClusterPolicy
and NVIDIADriver specs). Each image says where it came from as ``Kind/name/container``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mirrorkit.errors import InputError
from mirrorkit.refs import Ref
from mirrorkit.resolve.nvidiadriver import KIND as NVIDIADRIVER
from mirrorkit.resolve.nvidiadriver import NVIDIADriver, OsTaggedSpec, parse_nvidiadriver
from mirrorkit.yamlio import documents, line_of, read_text

MAX_MANIFEST_BYTES = 32 * 1024 * 1024
CONTAINER_KEYS = ("initContainers", "containers", "ephemeralContainers")
# ClusterPolicy specs whose tag the operator completes per node: planned per GPU node by the resolver
OS_TAGGED = ("driver", "gds", "gdrcopy", "vgpuManager")
# operands deployed only for sandbox (VM) workloads, and only when sandboxWorkloads.enabled is true
SANDBOX_OPERANDS = ("sandboxDevicePlugin", "vgpuManager", "vgpuDeviceManager", "vfioManager", "kataManager",
                    "ccManager")
# operands the operator leaves off unless their spec says enabled: true
OFF_BY_DEFAULT = ("kataManager", "ccManager")


@dataclass
class ManifestImages:
    images: list[tuple[str, str, str]] = field(default_factory=list)   # (reference, component, reason)
    nvidiadrivers: list[NVIDIADriver] = field(default_factory=list)
    os_tagged: list[OsTaggedSpec] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _at(node: Any, *keys: str) -> Any:
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


# where each kind keeps its pod spec; any other kind with spec.template.spec (Deployment, DaemonSet,
# StatefulSet, ReplicaSet, Job, ReplicationController, Argo Rollouts ...) is a workload too
POD_SPEC_AT = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = _at(obj, *POD_SPEC_AT.get(str(obj.get("kind")), ("spec", "template", "spec")))
    return spec if isinstance(spec, dict) else None


def _ref(text: Any, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: image must be a non-empty string")
    try:
        return str(Ref.parse(text.strip()))
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def _line(where: str, node: Any, key: str) -> str:
    """``FILE:LINE`` of ``key`` in ``node`` (the value's own line), else the document's ``where``."""
    line = line_of(node, key)
    return f"{where.rsplit(':', 1)[0]}:{line}" if line else where


def _containers(out: ManifestImages, obj: dict[str, Any], pod: dict[str, Any], where: str, label: str) -> None:
    for key in CONTAINER_KEYS:
        items = pod.get(key) or []
        if not isinstance(items, list):
            raise InputError(f"{_line(where, pod, key)}: {label}: {key} must be a list")
        for n, c in enumerate(items):
            if not isinstance(c, dict):
                raise InputError(f"{_line(where, pod, key)}: {label}: {key}[{n}] must be a mapping")
            component = f"{label}/{c.get('name') or f'{key}[{n}]'}"
            out.images.append((_ref(c.get("image"), f"{_line(where, c, 'image')}: {component}"), component,
                               f"{key} of {label}"))
            for env in c.get("env") or []:
                _env_image(out, env, where, component, label)


def _env_image(out: ManifestImages, env: Any, where: str, component: str, label: str) -> None:
    """``DRIVER_MANAGER_IMAGE=nvcr.io/...``: operators pass their operands' images this way."""
    if not isinstance(env, dict) or not str(env.get("name", "")).upper().endswith("IMAGE"):
        return
    value = env.get("value")
    if not isinstance(value, str) or not value.strip():
        return
    try:
        out.images.append((str(Ref.parse(value.strip())), component, f"env {env.get('name')} of {label}"))
    except InputError as exc:
        # a name that looks like an image setting may hold something else: say so, plan the rest
        out.warnings.append(f"{_line(where, env, 'value')}: {component} env {env.get('name')}: not an image "
                            f"reference, skipped ({exc})")


def _specs(node: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every ``repository``/``image``/``version`` mapping under a ClusterPolicy spec, with its path."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if isinstance(node.get("image"), str) and node.get("version") is not None:
            found.append((path, node))
        for key, value in node.items():
            found.extend(_specs(value, f"{path}.{key}" if path else str(key)))
    return found


def _deployed(root: dict[str, Any], path: str) -> bool:
    """Does the operator deploy the operand at ``path``? Not when it, or a spec above it, says
    ``enabled: false``; not a sandbox operand unless ``sandboxWorkloads.enabled``; not the
    operands that are off unless switched on (kataManager, ccManager)."""
    keys = path.split(".")
    top = root.get(keys[0])
    if keys[0] in SANDBOX_OPERANDS and _at(root, "sandboxWorkloads", "enabled") is not True:
        return False
    if keys[0] in OFF_BY_DEFAULT and not (isinstance(top, dict) and top.get("enabled") is True):
        return False
    node: Any = root
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get("enabled") is False:
            return False
    return True


def _cluster_policy(out: ManifestImages, obj: dict[str, Any], where: str, label: str) -> None:
    from mirrorkit.resolve.resolver import image_ref

    root = obj.get("spec") or {}
    for path, spec in _specs(root, ""):
        if not _deployed(root, path):
            continue
        version = str(spec["version"])
        where_image = _line(where, spec, "image")
        if path in OS_TAGGED and not version.startswith("sha256:"):
            precompiled = path == "driver" and spec.get("usePrecompiled") is True
            out.os_tagged.append(OsTaggedSpec(f"{label}/{path}", str(spec.get("repository") or ""),
                                              str(spec["image"]), version, precompiled, f"{where_image}: {label}"))
            continue
        repo = str(spec.get("repository") or "")
        ref = image_ref(repo, str(spec["image"]), version, f"{where_image}: {label} spec.{path}") if repo else \
            image_ref(str(spec["image"]), None, version, f"{where_image}: {label} spec.{path}")
        out.images.append((str(ref), f"{label}/{path}", f"spec.{path} of {label}"))


def images_from_manifests(text: str, source: str) -> ManifestImages:
    """The images of every object in ``text`` (multi-document YAML, ``kind: List`` too)."""
    out = ManifestImages()
    for obj, where in documents(text, source, lines=True):
        kind = str(obj.get("kind") or "")
        name = str((obj.get("metadata") or {}).get("name") or "")
        label = f"{kind}/{name}"
        if kind == NVIDIADRIVER:
            out.nvidiadrivers.append(parse_nvidiadriver(obj, where))
        elif kind == "ClusterPolicy":
            _cluster_policy(out, obj, where, label)
        else:
            pod = _pod_spec(obj)
            if pod is not None:
                _containers(out, obj, pod, where, label)
    return out


def load_manifests(path: str) -> ManifestImages:
    """``path`` is a file, or ``-`` for standard input (``helm template ... | mirrorkit plan --manifests -``)."""
    if path == "-":
        import sys

        text = sys.stdin.read(MAX_MANIFEST_BYTES + 1)
        if len(text) > MAX_MANIFEST_BYTES:
            raise InputError(f"standard input: manifests larger than the {MAX_MANIFEST_BYTES} byte limit")
        return images_from_manifests(text, "<stdin>")
    return images_from_manifests(read_text(path, "manifests", MAX_MANIFEST_BYTES), path)
