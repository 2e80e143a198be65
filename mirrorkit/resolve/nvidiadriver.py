"""NVIDIADriver custom resources: one driver per node pool, read as the operator reads them.

From v23.9.0 (``driver.nvidiaDriverCRD.enabled``) each NVIDIADriver picks its nodes with a
``nodeSelector`` and names its own driver ``repository``/``image``/``version``; the
operator appends ``-<osTag>`` (or ``-<kernel>-<osTag>`` when ``usePrecompiled``) per
selected node, exactly as for ClusterPolicy. That is how mixed-OS and multi-branch
clusters run, so the resolver plans each CR for the nodes it selects. The documents
are kept as read: ``rewrite-config --format nvidiadriver`` writes them back pointing
at the mirror.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirrorkit.errors import InputError
from mirrorkit.yamlio import documents, read_text

KIND = "NVIDIADriver"
DRIVER_TYPES = ("gpu", "vgpu", "vgpu-host-manager")
DEFAULT_IMAGE = "nvcr.io/nvidia/driver"
# sub-images: manager has no OS tag; gds and gdrcopy do, and are deployed only when enabled
PARTS = (("manager", False), ("gds", True), ("gdrcopy", True))


@dataclass(frozen=True)
class ImageSpec:
    """``repository``/``image``/``version`` as the CRD has them; repository empty: image is a full path."""

    repository: str
    image: str
    version: str


@dataclass(frozen=True)
class OsTaggedSpec:
    """A driver-type image outside a CR (a ClusterPolicy spec in --manifests): tagged per node."""

    component: str
    repository: str
    image: str
    version: str
    precompiled: bool
    where: str


@dataclass
class NVIDIADriver:
    name: str
    where: str
    driver_type: str
    driver: ImageSpec
    use_precompiled: bool
    node_selector: dict[str, str]
    parts: dict[str, ImageSpec]
    doc: dict[str, Any]


def _str(spec: dict[str, Any], key: str, where: str, default: str = "") -> str:
    value = spec.get(key, default)
    if value is None:
        return default
    if isinstance(value, (dict, list, bool)):
        raise InputError(f"{where}: spec.{key} must be a string, got {type(value).__name__}")
    return str(value).strip()


def _image(spec: dict[str, Any], where: str, default_image: str = "") -> ImageSpec:
    return ImageSpec(_str(spec, "repository", where), _str(spec, "image", where, default_image),
                     _str(spec, "version", where))


def parse_nvidiadriver(doc: dict[str, Any], where: str) -> NVIDIADriver:
    """One CR, checked the way the operator's validation would refuse it."""
    name = str((doc.get("metadata") or {}).get("name") or "")
    if not name:
        raise InputError(f"{where}: NVIDIADriver without metadata.name")
    where = f"{where} (NVIDIADriver {name})"
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise InputError(f"{where}: spec must be a mapping")
    driver_type = _str(spec, "driverType", where, "gpu")
    if driver_type not in DRIVER_TYPES:
        raise InputError(f"{where}: spec.driverType {driver_type!r}: expected one of {', '.join(DRIVER_TYPES)}")
    driver = _image(spec, where, DEFAULT_IMAGE)
    if not driver.version:
        raise InputError(f"{where}: spec.version is required (the driver version, or branch with usePrecompiled)")
    precompiled = spec.get("usePrecompiled", False)
    if not isinstance(precompiled, bool):
        raise InputError(f"{where}: spec.usePrecompiled must be true or false")
    if precompiled and driver.version.startswith("sha256:"):
        raise InputError(f"{where}: a digest cannot be used with usePrecompiled (the tag carries the kernel)")
    if precompiled and driver_type != "gpu":
        raise InputError(f"{where}: usePrecompiled is for driverType gpu only")
    selector = spec.get("nodeSelector") or {}
    if not isinstance(selector, dict) or not all(isinstance(v, (str, bool, int)) for v in selector.values()):
        raise InputError(f"{where}: spec.nodeSelector must map label names to values")
    parts: dict[str, ImageSpec] = {}
    for part, _ in PARTS:
        sub = spec.get(part)
        if sub is None:
            continue
        if not isinstance(sub, dict):
            raise InputError(f"{where}: spec.{part} must be a mapping")
        if part != "manager" and not sub.get("enabled", False):
            continue
        image = _image(sub, f"{where}: spec.{part}")
        if image.image and image.version:
            parts[part] = image
        elif part != "manager":
            raise InputError(f"{where}: spec.{part} is enabled but has no image and version")
    return NVIDIADriver(name, where, driver_type, driver, precompiled,
                        {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in selector.items()},
                        parts, doc)


def load_nvidiadrivers(path: str | Path) -> list[NVIDIADriver]:
    """Every NVIDIADriver in the file; any other kind is refused (a wrong file, most likely)."""
    out = []
    for doc, where in documents(read_text(path, "NVIDIADriver file"), str(path)):
        if doc.get("kind") != KIND:
            raise InputError(f"{where}: kind {doc.get('kind')!r} is not an NVIDIADriver")
        out.append(parse_nvidiadriver(doc, where))
    return out
