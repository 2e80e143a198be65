"""The shipped image lists: one YAML file per operator release and flavor.

The files under ``image-lists/`` (the top of the repository; the wheel carries them as the data
package ``mirrorkit.image_lists``) are facts taken from each release's own chart
(``scripts/gen-image-list.py`` writes them), in our own format, so the resolver
never has to guess from release notes. This module only loads and validates
them; deciding what a cluster needs is the resolver's job.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mirrorkit.errors import InputError, UnknownReleaseError
from mirrorkit.plan import FLAVORS
from mirrorkit.yamlio import load_mapping

API_VERSION = "mirrorkit.dev/v1alpha1"
KIND = "ImageList"
T = TypeVar("T")


def default_lists_dir() -> Path:
    """``$MIRRORKIT_IMAGE_LISTS``, else the shipped lists: the installed data package (a wheel, or an
    editable install mapping it onto the repository's image-lists/), else image-lists/ in a source tree."""
    env = os.environ.get("MIRRORKIT_IMAGE_LISTS")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("mirrorkit.image_lists")
    if spec is not None and spec.origin:
        return Path(spec.origin).parent
    return Path(__file__).resolve().parents[2] / "image-lists"


@dataclass(frozen=True)
class Condition:
    """A values switch the component's deployment depends on.

    ``default`` is the chart's own value; ``equals`` turns the switch into a
    string comparison (``sandboxWorkloads.mode == kata``).
    """

    path: str
    default: Any
    equals: str | None = None

    def holds(self, value: Any) -> bool:
        if self.equals is not None:
            return str(value) == self.equals
        if isinstance(value, str):
            return value.strip().lower() in ("true", "yes", "1", "on")
        return bool(value)


@dataclass(frozen=True)
class Component:
    """One image the chart describes as ``repository`` / ``image`` / ``version``."""

    path: str
    repository: str
    image: str | None
    version: str | None
    when: tuple[Condition, ...] = ()
    os_tag: bool = False
    placeholder: bool = False
    prefetch: bool = False
    version_key: str = "version"
    note: str = ""

    @property
    def name(self) -> str:
        return self.path


@dataclass(frozen=True)
class Extra:
    """An image the release needs that no values key names (the validation workload)."""

    name: str
    ref: str
    reason: str


@dataclass(frozen=True)
class ImageList:
    release: str
    flavor: str
    components: tuple[Component, ...]
    extras: tuple[Extra, ...] = ()
    chart_name: str = "gpu-operator"
    chart_version: str = ""
    app_version: str = ""
    values_root: str | None = None
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def component(self, path: str) -> Component | None:
        return next((c for c in self.components if c.path == path), None)


def _req(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise InputError(f"{where}: missing required key {key!r}")
    return data[key]


def _opt_str(value: Any, where: str, key: str) -> str | None:
    if value is None or value == "":
        return None if value is None else ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InputError(f"{where}: {key} must be a string, got {type(value).__name__}")
    return str(value)


def component_from_dict(data: dict[str, Any], where: str) -> Component:
    if not isinstance(data, dict):
        raise InputError(f"{where}: each component must be a mapping")
    conds = []
    for c in data.get("when") or []:
        if not isinstance(c, dict) or "path" not in c:
            raise InputError(f"{where}: each 'when' entry needs a 'path'")
        conds.append(Condition(str(c["path"]), c.get("default"), c.get("equals")))
    path = str(_req(data, "path", where))
    return Component(
        path=path,
        repository=_opt_str(data.get("repository"), where, "repository") or "",
        image=_opt_str(data.get("image"), where, "image"),
        version=_opt_str(data.get("version"), where, "version"),
        when=tuple(conds),
        os_tag=bool(data.get("os_tag", False)),
        placeholder=bool(data.get("placeholder", False)),
        prefetch=bool(data.get("prefetch", False)),
        version_key=str(data.get("version_key", "version")),
        note=str(data.get("note", "")),
    )


def image_list_from_dict(data: dict[str, Any], where: str) -> ImageList:
    if data.get("kind") != KIND:
        raise InputError(f"{where}: kind must be {KIND!r}")
    comps = _req(data, "components", where)
    if not isinstance(comps, list):
        raise InputError(f"{where}: components must be a list")
    extras = []
    for e in data.get("extras") or []:
        if not isinstance(e, dict):
            raise InputError(f"{where}: each extra must be a mapping")
        extras.append(Extra(str(_req(e, "name", where)), str(_req(e, "ref", where)),
                            str(e.get("reason", ""))))
    chart = data.get("chart") or {}
    return ImageList(
        release=str(_req(data, "release", where)),
        flavor=str(data.get("flavor", "helm")),
        components=tuple(component_from_dict(c, f"{where} component {i}") for i, c in enumerate(comps)),
        extras=tuple(extras),
        chart_name=str(chart.get("name", "gpu-operator")),
        chart_version=str(chart.get("version", "")),
        app_version=str(chart.get("appVersion", "")),
        values_root=data.get("valuesRoot"),
        source=str(data.get("source", "")),
        notes=tuple(str(n) for n in data.get("notes") or []),
    )


def image_list_to_dict(il: ImageList) -> dict[str, Any]:
    comps = []
    for c in il.components:
        d: dict[str, Any] = {"path": c.path, "repository": c.repository, "image": c.image,
                             "version": c.version}
        if c.version_key != "version":
            d["version_key"] = c.version_key
        if c.when:
            d["when"] = [
                {"path": w.path, "default": w.default, **({"equals": w.equals} if w.equals else {})}
                for w in c.when
            ]
        for flag in ("os_tag", "placeholder", "prefetch"):
            if getattr(c, flag):
                d[flag] = True
        if c.note:
            d["note"] = c.note
        comps.append(d)
    out: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "release": il.release,
        "flavor": il.flavor,
        "chart": {"name": il.chart_name, "version": il.chart_version, "appVersion": il.app_version},
        "source": il.source,
    }
    if il.values_root:
        out["valuesRoot"] = il.values_root
    if il.notes:
        out["notes"] = list(il.notes)
    out["components"] = comps
    out["extras"] = [{"name": e.name, "ref": e.ref, "reason": e.reason} for e in il.extras]
    return out


def release_key(name: str) -> Any:
    """A release name as a sortable version (semver order: v23.10 comes after v23.9); unparsable is oldest."""
    import semver

    try:
        return semver.Version.parse(name.lstrip("v"), optional_minor_and_patch=True)
    except ValueError:
        return semver.Version(0)


def for_release(table: Iterable[tuple[str, T]], release: str) -> T:
    """From a table of (first release, value) rows, in any order: the value of the newest row at or
    before ``release``. Tables start with a ``v0`` row so every release finds one."""
    key = release_key(release)
    started = [(release_key(first), value) for first, value in table if key >= release_key(first)]
    if not started:
        raise LookupError(f"no row of the table applies to {release}")
    return max(started, key=lambda row: row[0])[1]


def known_releases(flavor: str = "helm", lists_dir: Path | None = None) -> list[str]:
    """Releases with a shipped list for the flavor, oldest first (semver order, not text order)."""
    folder = (lists_dir or default_lists_dir()) / flavor
    if not folder.is_dir():
        return []
    names = [p.stem for p in folder.glob("v*.yaml")]
    return sorted(names, key=release_key)


def normalise_release(version: str) -> str:
    v = version.strip()
    return v if v.startswith("v") else f"v{v}"


def load_release(version: str, flavor: str = "helm", lists_dir: Path | None = None) -> ImageList:
    if flavor not in FLAVORS:
        raise InputError(f"unknown flavor {flavor!r}: choose one of {', '.join(FLAVORS)}")
    release = normalise_release(version)
    folder = (lists_dir or default_lists_dir()) / flavor
    path = folder / f"{release}.yaml"
    if not path.is_file():
        known = known_releases(flavor, lists_dir)
        listed = ", ".join(known) if known else "none"
        raise UnknownReleaseError(
            f"no image list for GPU Operator {release} ({flavor} flavor); known: {listed}; "
            "for another release pass its chart with --chart FILE.tgz|DIR"
        )
    return image_list_from_dict(load_mapping(path, "image list"), str(path))
