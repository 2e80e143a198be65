"""What each node whose driver compiles at run time installs, and the plan's ``packages:`` section.

The names follow NVIDIA's gpu-driver-container entrypoints (see ARCHITECTURE.md, "Driver packages"):

- Ubuntu: ``apt-get install linux-headers-$KV`` (with its closure), then ``apt-get download`` of
  ``linux-image-$KV`` and ``linux-modules-$KV`` (the latter allowed to be absent). Downloads take no
  dependencies, so those two are ``download_only``.
- RHEL, Rocky, CentOS, Oracle Linux 8: ``elfutils-libelf``, ``elfutils-libelf-devel``,
  ``kernel-headers-$KV``, ``kernel-devel-$KV``, ``kernel-core-$KV``; 9 and 10 install ``kernel-$KV``
  in place of ``kernel-core``. (The rpm family owns these rules in ``packages.rpm.needs``; the table
  here is the same until both are merged.)

The family and names come from the OS of the driver *image* the node runs (an ``--os-alias``
serves a Rocky node the CentOS image: the CentOS entrypoint runs), the kernel and architecture from
the node itself. Nodes with a precompiled driver install nothing and need nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mirrorkit.errors import InputError
from mirrorkit.packages.model import Family, Need

APT_OS = ("ubuntu",)
RPM_OS = ("rhel", "rocky", "centos", "ol", "almalinux")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_~:-]{0,199}$")
_KERNEL = re.compile(r"^[0-9][A-Za-z0-9._+~-]{0,127}$")
_OS = re.compile(r"^[a-z][a-z_-]*[0-9][0-9.]*$")
_ARCH = ("amd64", "arm64", "ppc64le", "s390x")


def family_of(os_id: str) -> Family | None:
    """The package family of a driver image's OS, or None when its entrypoint installs no packages."""
    if os_id in APT_OS:
        return "apt"
    if os_id in RPM_OS:
        return "rpm"
    return None


def apt_names(kernel: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(installed with closure, optional, fetched alone) for an Ubuntu kernel."""
    return (f"linux-headers-{kernel}", f"linux-image-{kernel}"), (f"linux-modules-{kernel}",), \
        (f"linux-image-{kernel}", f"linux-modules-{kernel}")


def _rpm_major(os_version: str) -> int:
    head = os_version.split(".")[0]
    return int(head) if head.isdigit() else 0


def rpm_names_fallback(os_version: str, kernel: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The rpm rules as issue 15 states them (until ``packages.rpm.needs.rpm_names`` is merged)."""
    core = "kernel-core" if _rpm_major(os_version) <= 8 else "kernel"
    return ("elfutils-libelf", "elfutils-libelf-devel", f"kernel-headers-{kernel}",
            f"kernel-devel-{kernel}", f"{core}-{kernel}"), ()


def rpm_names(os_id: str, os_version: str, kernel: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The rpm family's own rules when present (pkgrpm's ``rpm_names(os_tag, kernel)``), else the fallback."""
    try:
        from mirrorkit.packages.rpm.needs import rpm_names as family_rules  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return rpm_names_fallback(os_version, kernel)
    names, optional = family_rules(f"{os_id}{os_version}", kernel)
    return tuple(names), tuple(optional)


@dataclass
class NodeNeed:
    """One runtime-compiled node as the resolver sees it (the plan's input to ``plan_needs``)."""

    node_os: str            # the node's own OS (``rocky8.6``): --package-source keys match it
    image_os_id: str        # the driver image's OS ID (the alias target's, with --os-alias)
    image_os_version: str
    kernel: str | None
    arch: str
    node_name: str = ""
    driver_image: str = ""


@dataclass
class PlannedNeeds:
    needs: list[Need] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def plan_needs(nodes: Iterable[NodeNeed]) -> PlannedNeeds:
    """The Needs of runtime-compiled nodes, one per (OS, kernel, arch, driver image), nodes merged."""
    out = PlannedNeeds()
    merged: dict[tuple[str, str, str, str], Need] = {}
    for n in nodes:
        family = family_of(n.image_os_id)
        shown = n.node_name or n.node_os
        if family is None:
            continue
        if not n.kernel:
            out.warnings.append(f"node {shown} ({n.node_os}) compiles its driver at run time but has no "
                                "kernel version: its driver packages are not planned (give --node OS/KERNEL)")
            continue
        if family == "apt":
            names, optional, download_only = apt_names(n.kernel)
        else:
            names, optional = rpm_names(n.image_os_id, n.image_os_version, n.kernel)
            download_only = ()
        key = (n.node_os, n.kernel, n.arch, n.driver_image)
        prev = merged.get(key)
        node_names = (prev.nodes if prev else ()) + ((n.node_name,) if n.node_name else ())
        merged[key] = Need(os_tag=n.node_os, family=family, kernel=n.kernel, arch=n.arch, names=names,
                           optional=optional, nodes=tuple(dict.fromkeys(node_names)),
                           driver_image=n.driver_image, download_only=download_only)
    out.needs = list(merged.values())
    return out


def need_to_dict(need: Need) -> dict[str, Any]:
    out: dict[str, Any] = {"os": need.os_tag, "family": need.family, "kernel": need.kernel,
                           "arch": need.arch, "names": list(need.names)}
    if need.optional:
        out["optional"] = list(need.optional)
    if need.download_only:
        out["download_only"] = list(need.download_only)
    if need.nodes:
        out["nodes"] = list(need.nodes)
    if need.driver_image:
        out["driver_image"] = need.driver_image
    return out


def _names(data: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and _NAME.match(v) for v in value):
        raise InputError(f"{where}: '{key}' must be a list of package names")
    return tuple(value)


def need_from_dict(data: Any, where: str) -> Need:
    """One entry of a plan's ``packages:``, checked (plans come from untrusted hands)."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: each package need must be a mapping")
    os_tag, family, kernel, arch = (data.get(k) for k in ("os", "family", "kernel", "arch"))
    if not isinstance(os_tag, str) or not _OS.match(os_tag):
        raise InputError(f"{where}: 'os' must be an OS such as ubuntu22.04 or rocky8.6")
    if family not in ("apt", "rpm"):
        raise InputError(f"{where}: 'family' must be apt or rpm")
    if not isinstance(kernel, str) or not _KERNEL.match(kernel):
        raise InputError(f"{where}: 'kernel' {kernel!r} is not a kernel version")
    if arch not in _ARCH:
        raise InputError(f"{where}: 'arch' must be one of {', '.join(_ARCH)}")
    names = _names(data, "names", where)
    if not names:
        raise InputError(f"{where}: 'names' is empty")
    nodes = data.get("nodes") or []
    if not isinstance(nodes, list) or not all(isinstance(v, str) and v.isprintable() and len(v) < 256
                                              for v in nodes):
        raise InputError(f"{where}: 'nodes' must be a list of node names")
    image = data.get("driver_image") or ""
    if not isinstance(image, str) or not image.isprintable() or len(image) > 1024:
        raise InputError(f"{where}: 'driver_image' must be an image reference")
    return Need(os_tag=os_tag, family=family, kernel=kernel, arch=arch, names=names,
                optional=_names(data, "optional", where), nodes=tuple(nodes), driver_image=image,
                download_only=_names(data, "download_only", where))


def needs_from_plan(packages: Sequence[Any], where: str) -> list[Need]:
    return [need_from_dict(p, f"{where}: packages[{n}]") for n, p in enumerate(packages)]


def describe(need: Need) -> str:
    """One line for ``plan --format txt``: ``packages ubuntu22.04 5.15.0-131-generic amd64: a b (c optional)``."""
    opt = f" ({', '.join(need.optional)} optional)" if need.optional else ""
    return f"packages {need.os_tag} {need.kernel} {need.arch}: {' '.join(need.names)}{opt}"
