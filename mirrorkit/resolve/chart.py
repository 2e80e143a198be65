"""Read a GPU Operator chart (``.tgz`` or directory) into an ImageList.

Used two ways: by ``scripts/gen-image-list.py`` to write the shipped lists, and
by ``mirrorkit plan --chart`` so a release newer than the shipped lists works on
the day it is published. Charts are read in memory, never unpacked to disk, so a
hostile archive cannot write anywhere.

The chart's values say what each component's image is; they do not say which
switches gate a component or which images get the node's OS tag appended. That
knowledge comes from the operator's code and lives in ``GATES`` and
``OS_TAGGED`` below; a component this table does not know falls back to its own
``enabled`` key and is reported, so a maintainer can teach the table.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from mirrorkit.chartfile import MAX_CHART, chart_members
from mirrorkit.errors import InputError
from mirrorkit.resolve.catalog import API_VERSION, Component, Condition, Extra, ImageList, for_release
from mirrorkit.yamlio import dig, parse_yaml

SANDBOX = "sandboxWorkloads.enabled"

# values path -> switches (besides its own `enabled`) that must hold for the operator to deploy it
GATES: dict[str, tuple[str, ...]] = {
    "operator": (),
    "operator.initContainer": (),
    "validator": (),
    "driver": ("driver.enabled",),
    "driver.manager": ("driver.enabled",),
    "toolkit": ("toolkit.enabled",),
    "devicePlugin": ("devicePlugin.enabled",),
    "dcgm": ("dcgm.enabled",),
    "dcgmExporter": ("dcgmExporter.enabled",),
    "gfd": ("gfd.enabled",),
    "migManager": ("migManager.enabled",),
    "nodeStatusExporter": ("nodeStatusExporter.enabled",),
    "gds": ("gds.enabled", "driver.enabled"),
    "gdrcopy": ("gdrcopy.enabled", "driver.enabled"),
    "vgpuManager": ("vgpuManager.enabled", SANDBOX),
    "vgpuManager.driverManager": ("vgpuManager.enabled", SANDBOX),
    "vgpuDeviceManager": ("vgpuDeviceManager.enabled", SANDBOX),
    "vfioManager": ("vfioManager.enabled", SANDBOX),
    "vfioManager.driverManager": ("vfioManager.enabled", SANDBOX),
    "sandboxDevicePlugin": ("sandboxDevicePlugin.enabled", SANDBOX),
    "kataSandboxDevicePlugin": ("kataSandboxDevicePlugin.enabled", SANDBOX),
    "kataManager": ("kataManager.enabled", SANDBOX),
    "ccManager": ("ccManager.enabled", SANDBOX),
    "draDriver": ("gpuCluster.deployCR",),
    "node-feature-discovery.image": ("nfd.enabled",),
}
# in releases with sandboxWorkloads.mode, the two sandbox device plugins are exclusive
MODE_GATES = {"sandboxDevicePlugin": "kubevirt", "kataSandboxDevicePlugin": "kata"}
# the operator appends "-<osTag>" to these images' tags at run time
OS_TAGGED = frozenset({"driver", "gds", "gdrcopy", "vgpuManager"})
# components whose chart leaves `version` empty on purpose: the user must supply it
PLACEHOLDERS = frozenset({"vgpuManager"})
NFD_PATH = "node-feature-discovery.image"
NFD_DIR = "node-feature-discovery"

# the release's sample workload, as each release's docs and validator name it
SAMPLES = (
    ("v25.10.0", "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04"),
    ("v22.9.0", "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda11.7.1-ubuntu20.04"),
    ("v0", "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda11.2.1-ubi8"),
)


class ChartFiles:
    """The few files of a chart mirrorkit reads, keyed by path relative to the chart root."""

    def __init__(self, files: dict[str, bytes], origin: str) -> None:
        self.files = files
        self.origin = origin
        self.duplicates: list[str] = []      # repeated keys in its values: Helm keeps the last

    def yaml(self, rel: str) -> Any:
        if rel not in self.files:
            return None
        try:
            text = self.files[rel].decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{self.origin}: {rel} is not UTF-8 text") from None
        return parse_yaml(text, f"{self.origin}:{rel}", self.duplicates)


def _wanted(rel: str) -> bool:
    p = PurePosixPath(rel)
    if p.name in ("values.yaml", "Chart.yaml") and len(p.parts) in (1, 3):
        return len(p.parts) == 1 or p.parts[0] == "charts"
    return len(p.parts) == 2 and p.parts[0] == "charts" and p.name.endswith(".tgz")


def _from_tar(data: bytes, origin: str) -> dict[str, bytes]:
    return chart_members(data, origin, _wanted)


def _from_dir(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for rel in ("values.yaml", "Chart.yaml"):
        if (root / rel).is_file():
            files[rel] = (root / rel).read_bytes()
    charts = root / "charts"
    if charts.is_dir():
        for sub in sorted(charts.iterdir()):
            if sub.is_dir() and not sub.is_symlink():
                for rel in ("values.yaml", "Chart.yaml"):
                    if (sub / rel).is_file():
                        files[f"charts/{sub.name}/{rel}"] = (sub / rel).read_bytes()
            elif sub.suffix == ".tgz" and sub.is_file():
                files[f"charts/{sub.name}"] = sub.read_bytes()
    return files


def read_chart(path: str | Path, archive: bytes | None = None) -> ChartFiles:
    """A chart folder or archive on disk; or ``archive``, already fetched (``path`` then only names it)."""
    if archive is not None:
        files = _from_tar(archive, str(path))
        if "values.yaml" not in files or "Chart.yaml" not in files:
            raise InputError(f"{path}: not a Helm chart (no Chart.yaml and values.yaml at its root)")
        return ChartFiles(files, str(path))
    p = Path(path)
    if p.is_dir():
        files = _from_dir(p)
    elif p.is_file():
        if p.stat().st_size > MAX_CHART:
            raise InputError(f"{p}: chart archive larger than {MAX_CHART} bytes")
        files = _from_tar(p.read_bytes(), str(p))
    else:
        raise InputError(f"{p}: chart not found (give a chart .tgz or directory)")
    if "values.yaml" not in files or "Chart.yaml" not in files:
        raise InputError(f"{p}: not a Helm chart (no Chart.yaml and values.yaml at its root)")
    return ChartFiles(files, str(p))


def _image_block(chart: ChartFiles, rel: str) -> Any:
    """The subchart's top-level ``image:`` block alone.

    Some NFD subcharts carry block scalars (``config: |###``) that Go's YAML
    parser accepts and PyYAML rejects; only ``image`` matters here, so parse
    just that block rather than give up on the whole chart.
    """
    if rel not in chart.files:
        return None
    try:
        return chart.yaml(rel)
    except InputError:
        lines = chart.files[rel].decode("utf-8", "replace").splitlines()
        block: list[str] = []
        for line in lines:
            if block and line and not line[0].isspace() and not line.startswith("#"):
                break
            if block or line.startswith("image:"):
                block.append(line)
        return parse_yaml("\n".join(block), f"{chart.origin}:{rel}") if block else None


def _subchart(chart: ChartFiles, name: str) -> tuple[Any, Any]:
    values = _image_block(chart, f"charts/{name}/values.yaml")
    meta = chart.yaml(f"charts/{name}/Chart.yaml")
    if values is not None or meta is not None:
        return values, meta
    for rel, data in chart.files.items():
        if rel.startswith(f"charts/{name}-") and rel.endswith(".tgz"):
            inner = ChartFiles(_from_tar(data, f"{chart.origin}:{rel}"), f"{chart.origin}:{rel}")
            inner.duplicates = chart.duplicates
            return _image_block(inner, "values.yaml"), inner.yaml("Chart.yaml")
    return None, None


def _walk_components(values: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    for key, node in values.items():
        if not isinstance(node, dict) or key == NFD_DIR:
            continue
        path = f"{prefix}{key}"
        if isinstance(node.get("image"), str) and ("repository" in node or "version" in node):
            found.append((path, node))
        found.extend(_walk_components(node, f"{path}."))
    return found


def _conditions(path: str, values: dict[str, Any]) -> tuple[Condition, ...]:
    gates = GATES.get(path)
    if gates is None:
        root = path.split(".")[0]
        gates = (f"{root}.enabled",)
    conds = []
    for gate in gates:
        default = dig(values, gate)
        if default is None:
            # a component's own switch defaults on in the CRD; other switches default off
            own = gate == f"{path.split('.')[0]}.enabled"
            default = own
        conds.append(Condition(gate, default))
    if path in MODE_GATES and dig(values, "sandboxWorkloads.mode") is not None:
        conds.append(Condition("sandboxWorkloads.mode", dig(values, "sandboxWorkloads.mode"),
                               MODE_GATES[path]))
    return tuple(conds)


def sample_for(release: str) -> str:
    return for_release(SAMPLES, release)


def _is_placeholder_version(text: str) -> bool:
    return not text or "devel" in text or "latest" in text


def image_list_from_chart(
    path: str | Path, flavor: str = "helm", release: str | None = None, archive: bytes | None = None
) -> tuple[ImageList, list[str]]:
    """The chart's images as an ImageList, plus warnings about components the tables do not know.

    A packaged chart carries its real version; a source tree at a release tag
    may carry a development placeholder (``v1.0.0-devel``), which ``release``
    replaces, as the release pipeline does when it packages the chart.
    """
    chart = read_chart(path, archive)
    meta = chart.yaml("Chart.yaml") or {}
    values = chart.yaml("values.yaml") or {}
    if not isinstance(meta, dict) or not isinstance(values, dict):
        raise InputError(f"{chart.origin}: Chart.yaml and values.yaml must be mappings")
    app_version = str(meta.get("appVersion") or meta.get("version") or "")
    if release:
        release = release if release.startswith("v") else f"v{release}"
        if _is_placeholder_version(app_version) or app_version != release:
            app_version = release
    else:
        release = str(meta.get("version") or app_version)
        if _is_placeholder_version(release) or _is_placeholder_version(app_version):
            raise InputError(f"{chart.origin}: chart version {release!r} / appVersion "
                             f"{app_version!r} is a development placeholder; give the release")
        release = release if release.startswith("v") else f"v{release}"
    warnings: list[str] = []
    comps: list[Component] = []
    for cpath, node in _walk_components(values):
        if cpath not in GATES:
            warnings.append(f"{chart.origin}: component {cpath!r} is not in mirrorkit's tables; "
                            f"assuming it is gated only by {cpath.split('.')[0]}.enabled")
        repository = str(node.get("repository") or "")
        version = node.get("version")
        version = str(version) if version not in (None, "") else None
        placeholder = cpath in PLACEHOLDERS and (not repository or version is None)
        if version is None and not placeholder:
            version = app_version
        comps.append(Component(
            path=cpath, repository=repository, image=str(node["image"]), version=version,
            when=_conditions(cpath, values), os_tag=cpath in OS_TAGGED, placeholder=placeholder,
            note="repository and version must be supplied by the user (vGPU manager images are "
                 "built by the site from NVIDIA's licensed vGPU driver)" if placeholder else "",
        ))
    nfd_values, nfd_meta = _subchart(chart, NFD_DIR)
    if nfd_values is not None or dig(values, f"{NFD_DIR}.image") is not None:
        repo = dig(values, f"{NFD_DIR}.image.repository") or dig(nfd_values or {}, "image.repository")
        tag = (dig(values, f"{NFD_DIR}.image.tag") or dig(nfd_values or {}, "image.tag")
               or (nfd_meta or {}).get("appVersion"))
        if repo:
            comps.append(Component(path=NFD_PATH, repository=str(repo), image=None,
                                   version=str(tag) if tag else None,
                                   when=_conditions(NFD_PATH, values), version_key="tag"))
    extras = (Extra("cuda-sample", sample_for(release),
                    "the release's sample validation workload (vectoradd)"),)
    il = ImageList(release=release, flavor=flavor, components=tuple(comps), extras=extras,
                   chart_name=str(meta.get("name", "gpu-operator")), chart_version=release,
                   app_version=app_version,
                   source=f"{meta.get('name', 'chart')} {release}: values.yaml and the "
                          "node-feature-discovery subchart")
    return il, warnings + chart.duplicates


__all__ = ["API_VERSION", "image_list_from_chart", "read_chart", "sample_for"]
