"""The Plan: the contract between resolver, copier and rewriter.

Everything downstream reads the Plan (or the lock inside a bundle, which embeds
it) and never re-derives what the resolver decided. It is versioned
(``apiVersion``/``kind``) so an old plan read by a newer mirrorkit fails loudly
rather than being half understood.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mirrorkit.errors import InputError
from mirrorkit.knownkeys import UnknownKeyError, check_keys, located
from mirrorkit.refs import Ref, RegistryTarget, check_digest
from mirrorkit.yamlio import SafeLoader, parse_mapping, read_text

API_VERSION = "mirrorkit.dev/v1alpha1"
KIND = "Plan"
FORMATS = ("yaml", "json", "txt")
# image sources outside registries, read through skopeo (mirrorkit.transfer.local)
LOCAL_TRANSPORTS = ("docker-daemon", "docker-archive", "oci-archive", "oci")
FLAVORS = ("helm", "kubesphere")
# a GPU Operator release as the catalog and charts name it: v24.9.2, v25.3.0-rc.1, 23.9
RELEASE_RE = re.compile(r"^v?[0-9]+(?:\.[0-9]+){0,2}(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
                        r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$")
MAX_LINE = 1024


def one_line(value: Any, where: str, key: str, optional: bool = False) -> str | None:
    """A string field from an untrusted plan or lock: one line of printable text, or refused.

    Plan and lock values end up in shell scripts, TOML and YAML headers; a newline
    or a control character there would let a hostile file write lines of its own.
    """
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > MAX_LINE or not value.isprintable():
        raise InputError(f"{where}: '{key}' must be a one-line string without control characters")
    return value


@dataclass
class PlanImage:
    """One image to carry: where it comes from, where it goes, and why."""

    source: str
    destination: str | None
    component: str
    reason: str
    digest: str | None = None
    platforms: list[str] = field(default_factory=list)
    size: int | None = None
    setting: str | None = None
    os_tag: str | None = None
    kernel: str | None = None
    target_tag: str | None = None
    # a local image (``docker-archive:/abs/driver.tar``) carried under the name ``source``; None: from a registry
    local: str | None = None

    @property
    def source_ref(self) -> Ref:
        return Ref.parse(self.source)

    @property
    def groups(self) -> list[str]:
        """What a person calls this image in a summary or a diff: its components, except that an
        ``--image``/``--image-list`` entry (component ``extra``) is named by its repository."""
        return [self.source_ref.name if c == "extra" else c for c in self.component.split(",")]

    @property
    def destination_ref(self) -> Ref | None:
        return Ref.parse(self.destination) if self.destination else None


@dataclass
class Plan:
    images: list[PlanImage]
    release: str | None = None
    flavor: str | None = None
    registry: str | None = None
    mapping: str = "prefix"
    max_path_depth: int | None = None
    platforms: list[str] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    driver: dict[str, Any] = field(default_factory=dict)
    components: str = "enabled"
    resolved: bool = False
    created: str = ""
    generator: str = ""
    warnings: list[str] = field(default_factory=list)
    # NVIDIADriver custom resources as the user wrote them, for rewrite-config --format nvidiadriver
    nvidiadrivers: list[dict[str, Any]] = field(default_factory=list)
    # driver packages of runtime-compiled nodes (mirrorkit.packages.needs): os, family, kernel, arch, names...
    packages: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        images = data.pop("images")
        out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND}
        out.update(data)
        if out.get("max_path_depth") is None:
            out.pop("max_path_depth", None)  # most plans have no limit: keep their form as it was
        if not out["nvidiadrivers"]:
            del out["nvidiadrivers"]
        if not out["packages"]:
            del out["packages"]     # plans without driver packages keep their form
        out["images"] = [{k: v for k, v in img.items() if v not in (None, [])
                          or k in ("digest", "destination")} for img in images]
        return out

    def sources(self) -> list[str]:
        return sorted({img.source for img in self.images})


# the keys a plan may hold, per level (extend here when a plan gains a field; knownkeys refuses the rest)
PLAN_KEYS = frozenset({"apiVersion", "kind", "images", "release", "flavor", "registry", "mapping", "max_path_depth",
                       "platforms", "nodes", "driver", "components", "resolved", "created", "generator", "warnings",
                       "nvidiadrivers", "packages"})
PLAN_PACKAGE_KEYS = frozenset({"os", "family", "kernel", "arch", "names", "optional", "download_only", "nodes",
                               "driver_image"})
PLAN_IMAGE_KEYS = frozenset({"source", "destination", "component", "reason", "digest", "platforms", "size",
                             "setting", "os_tag", "kernel", "target_tag", "local"})


def render(plan: Plan, fmt: str) -> str:
    if fmt == "yaml":
        return yaml.safe_dump(plan.to_dict(), sort_keys=False, width=120)
    if fmt == "json":
        return json.dumps(plan.to_dict(), indent=2) + "\n"
    if fmt == "txt":
        # driver packages as comment lines: the output stays a valid image list
        return "".join(f"{s}\n" for s in plan.sources()) + "".join(
            f"# packages {p.get('os')} {p.get('kernel')} {p.get('arch')}: {' '.join(p.get('names') or [])}"
            + (f" ({', '.join(p['optional'])} optional)" if p.get("optional") else "") + "\n"
            for p in plan.packages)
    raise InputError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")


def image_refs(data: Any, where: str) -> tuple[str, str | None, list[str]]:
    """The fields a plan image and a lock image share: source, destination, platforms — all checked.

    Plans and locks come from untrusted hands (a USB disk, a colleague), so both
    are read through this one function.
    """
    if not isinstance(data, dict):
        raise InputError(f"{where}: each image must be a mapping")
    source = data.get("source")
    if not isinstance(source, str):
        raise InputError(f"{where}: 'source' must be a string")
    Ref.parse(source)
    dest = data.get("destination")
    if dest is not None:
        if not isinstance(dest, str):
            raise InputError(f"{where}: 'destination' must be a string")
        Ref.parse(dest)
    platforms = data.get("platforms") or []
    if not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms):
        raise InputError(f"{where}: 'platforms' must be a list of strings")
    return source, dest, platforms


def _image_from_dict(data: Any, where: str) -> PlanImage:
    try:
        source, dest, platforms = image_refs(data, where)
    except InputError as exc:
        raise InputError(exc.args[0] if str(exc).startswith(where) else f"{where}: {exc}") from None
    for key in ("component", "reason", "setting", "os_tag", "kernel", "target_tag"):
        one_line(data.get(key), where, key, optional=key != "component")
    digest = data.get("digest")
    if digest is not None:
        try:
            check_digest(digest, f"digest of {source}")
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
    size = data.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise InputError(f"{where}: 'size' must be a non-negative integer")
    return PlanImage(
        source=source, destination=dest, component=data["component"],
        reason=data.get("reason") or "", digest=digest, platforms=platforms, size=size,
        setting=data.get("setting"), os_tag=data.get("os_tag"), kernel=data.get("kernel"),
        target_tag=data.get("target_tag"), local=_local_field(data.get("local"), where),
    )


def _local_field(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not is_local_source(value):
        raise InputError(f"{where}: 'local' must be {' or '.join(t + ':...' for t in LOCAL_TRANSPORTS)}")
    return value


def is_local_source(text: str) -> bool:
    """Does ``text`` name an image outside any registry (``docker-archive:FILE`` and the like)?"""
    transport, sep, rest = text.partition(":")
    return bool(sep and rest) and transport in LOCAL_TRANSPORTS


def split_image_arg(text: str, where: str, base: Path | None = None) -> tuple[str, str | None]:
    """``--image`` / image-list entry -> (the image's name, its local source or None).

    A local source says what the image will be called after ``=``, since an
    archive or a daemon's image carries no registry name the cluster would pull:
    ``docker-archive:driver.tar=nvcr.io/nvidia/driver:550.127.05-5.15.0-131-generic-ubuntu22.04``.
    ``docker-daemon:NAME`` may leave it out (the daemon's name is used). Paths are
    made absolute (relative to ``base``, else the current folder) so the plan
    still finds them from elsewhere. The name is split at the last ``=``, which no
    image reference contains.
    """
    text = text.strip()
    if not is_local_source(text):
        Ref.parse(text)
        return text, None
    transport, _, rest = text.partition(":")
    source, sep, name = rest.rpartition("=")
    if not sep:
        if transport != "docker-daemon":
            raise InputError(f"{where}: {text!r}: name the image after '=', e.g. "
                             f"{transport}:driver.tar=nvcr.io/nvidia/driver:TAG")
        source, name = rest, rest
    if not source or not name:
        raise InputError(f"{where}: {text!r}: expected {transport}:SOURCE=IMAGE-NAME")
    try:
        name = str(Ref.parse(name))
    except InputError as exc:
        raise InputError(f"{where}: {text!r}: {exc}") from None
    if transport != "docker-daemon":
        path, colon, ref = source, "", ""
        if transport == "oci" and ":" in source:
            path, colon, ref = source.partition(":")
        path = str(((base or Path.cwd()) / path).resolve()) if not Path(path).is_absolute() else path
        source = path + colon + ref
    return name, f"{transport}:{source}"


def attach_local(plan: Plan, local: dict[str, str]) -> None:
    """Mark the plan's images that come from local sources (name -> ``transport:path``)."""
    for img in plan.images:
        if img.source in local:
            img.local = local[img.source]


def plan_from_dict(data: dict[str, Any], where: str, image_lines: list[int] | None = None) -> Plan:
    if data.get("kind") != KIND or data.get("apiVersion") != API_VERSION:
        raise InputError(f"{where}: not a mirrorkit plan (expected apiVersion {API_VERSION}, "
                         f"kind {KIND})")
    images = data.get("images")
    if not isinstance(images, list):
        raise InputError(f"{where}: 'images' must be a list")
    crs = data.get("nvidiadrivers", [])
    if not isinstance(crs, list) or not all(isinstance(c, dict) for c in crs):
        raise InputError(f"{where}: 'nvidiadrivers' must be a list of NVIDIADriver objects")
    check_keys(data, PLAN_KEYS, where)
    for n, img in enumerate(images):
        if isinstance(img, dict):
            check_keys(img, PLAN_IMAGE_KEYS, f"{where}: images[{n}]", ("images", n))
    known = set(Plan.__dataclass_fields__) - {"images"}
    extra = {k: v for k, v in data.items() if k in known}
    depth = extra.get("max_path_depth")
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise InputError(f"{where}: 'max_path_depth' must be a positive integer")
    lines = image_lines or []

    def at(n: int) -> str:
        return f"{where}:{lines[n]}: images[{n}]" if n < len(lines) else f"{where}: images[{n}]"

    _check_fields(extra, where)
    plan = Plan(images=[_image_from_dict(i, at(n)) for n, i in enumerate(images)], **extra)
    return plan


def _check_fields(extra: dict[str, Any], where: str) -> None:
    """The plan's own fields, checked before any of them reaches a runbook, a header or a command line."""
    for key in ("release", "flavor", "registry"):
        one_line(extra.get(key), where, key, optional=True)
    for key in ("mapping", "components", "created", "generator"):
        if key in extra:
            one_line(extra[key], where, key)
    release, flavor, registry = extra.get("release"), extra.get("flavor"), extra.get("registry")
    if release is not None and not RELEASE_RE.match(release):
        raise InputError(f"{where}: 'release' {release!r} is not a GPU Operator release (e.g. v24.9.2)")
    if flavor is not None and flavor not in FLAVORS:
        raise InputError(f"{where}: 'flavor' {flavor!r} is not one of {', '.join(FLAVORS)}")
    if registry is not None:
        try:
            RegistryTarget.parse(registry)
        except InputError as exc:
            raise InputError(f"{where}: 'registry': {exc}") from None
    for key in ("platforms", "warnings"):
        values = extra.get(key, [])
        if not isinstance(values, list):
            raise InputError(f"{where}: '{key}' must be a list of strings")
        for n, value in enumerate(values):
            one_line(value, where, f"{key}[{n}]")
    nodes = extra.get("nodes", [])
    if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
        raise InputError(f"{where}: 'nodes' must be a list of mappings")
    for n, node in enumerate(nodes):
        for key in ("name", "os", "kernel", "arch"):
            one_line(node.get(key), where, f"nodes[{n}].{key}", optional=key in ("name", "kernel"))
    driver = extra.get("driver", {})
    if not isinstance(driver, dict):
        raise InputError(f"{where}: 'driver' must be a mapping")
    for key, value in driver.items():
        if isinstance(value, str) or not isinstance(value, bool | int | float | type(None)):
            one_line(value, where, f"driver.{key}")
    packages = extra.get("packages", [])
    if not isinstance(packages, list) or not all(isinstance(p, dict) for p in packages):
        raise InputError(f"{where}: 'packages' must be a list of mappings")
    for n, pkg in enumerate(packages):
        check_keys(pkg, PLAN_PACKAGE_KEYS, f"{where}: packages[{n}]", ("packages", n))
        for key in ("os", "family", "kernel", "arch"):
            one_line(pkg.get(key), where, f"packages[{n}].{key}")
        for key in ("names", "optional", "download_only", "nodes"):
            items = pkg.get(key) or []
            if not isinstance(items, list):
                raise InputError(f"{where}: 'packages[{n}].{key}' must be a list of strings")
            for m, item in enumerate(items):
                one_line(item, where, f"packages[{n}].{key}[{m}]")
        one_line(pkg.get("driver_image"), where, f"packages[{n}].driver_image", optional=True)
    for n, cr in enumerate(extra.get("nvidiadrivers", [])):
        name = (cr.get("metadata") or {}).get("name") if isinstance(cr.get("metadata") or {}, dict) else None
        one_line(name, where, f"nvidiadrivers[{n}].metadata.name", optional=True)


def _image_lines(text: str) -> list[int]:
    """The line each entry of ``images:`` starts on, so an error in a plan names its line."""
    try:
        root = yaml.compose(text, Loader=SafeLoader)  # noqa: S506 - a safe loader, composing only
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "images" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def load_plan(path: str | Path) -> Plan:
    text = read_text(path, "plan")
    data = parse_mapping(text, str(path), "plan")
    try:
        return plan_from_dict(data, str(path))
    except UnknownKeyError as exc:
        raise located(exc, text, str(path)) from None
    except InputError:
        # an error in a plan's image: read it again with line numbers (only on this path: plans can be big)
        return plan_from_dict(data, str(path), _image_lines(text))
