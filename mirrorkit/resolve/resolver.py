"""(release, nodes, values, extras) -> Plan: exactly what the cluster will pull.

The resolver reproduces the operator's own image arithmetic: the chart's
``repository``/``image``/``version`` joined the way ``ImagePath`` joins them,
the per-node OS tag on driver-type images, one precompiled driver per distinct
kernel, and the values switches that decide which operands are deployed. It is
pure: no network, no files; digests are filled in later by ``lookup``.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from mirrorkit import __version__
from mirrorkit.errors import InputError
from mirrorkit.mapping import STRATEGIES, check_collisions, check_depth_collisions, map_ref
from mirrorkit.packages.needs import NodeNeed, need_to_dict, plan_needs
from mirrorkit.plan import Plan, PlanImage
from mirrorkit.refs import Ref, RegistryTarget
from mirrorkit.resolve.catalog import Component, ImageList
from mirrorkit.resolve.nodes import Node, split_os
from mirrorkit.resolve.nvidiadriver import PARTS, NVIDIADriver, OsTaggedSpec
from mirrorkit.resolve.ostag import PRECOMPILED_SINCE, os_tag, supports_precompiled
from mirrorkit.yamlio import dig

COMPONENT_MODES = ("enabled", "all")
KUBESPHERE_ROOT = "gpu-operator"


@dataclass
class PlanRequest:
    image_list: ImageList | None = None
    nodes: list[Node] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    values_source: str = "values"
    components: str = "enabled"
    driver_branch: str | None = None
    driver_version: str | None = None
    precompiled: bool | None = None
    os_aliases: dict[str, str] = field(default_factory=dict)
    extras: list[tuple[str, str]] = field(default_factory=list)
    include_sample: bool = True
    registry: RegistryTarget | None = None
    mapping: str = "prefix"
    platforms: list[str] = field(default_factory=list)
    max_path_depth: int | None = None  # registries such as Quay cap path depth: see mirrorkit.mapping.limit_depth
    force: bool = False
    nvidiadrivers: list[NVIDIADriver] = field(default_factory=list)
    # (reference, component, reason) read from Kubernetes manifests (plan --manifests)
    manifest_images: list[tuple[str, str, str]] = field(default_factory=list)
    manifest_os_tagged: list[OsTaggedSpec] = field(default_factory=list)
    # list the packages each runtime-compiled node's driver installs (plan --no-driver-packages: False)
    driver_packages: bool = True


@dataclass
class _Entry:
    source: Ref
    dest_tag: str | None
    components: list[str]
    reason: str
    setting: str | None = None
    os_tag: str | None = None
    kernel: str | None = None


def chart_values(values: dict[str, Any]) -> dict[str, Any]:
    """A KubeSphere extension config wraps the chart's values under ``gpu-operator:``."""
    inner = values.get(KUBESPHERE_ROOT)
    if isinstance(inner, dict):
        return inner
    return values


def image_ref(repository: str, image: str | None, version: str, where: str) -> Ref:
    """The operator's ImagePath: ``repo/image:version``, or ``@version`` for a digest."""
    name = f"{repository.rstrip('/')}/{image}" if image else repository
    sep = "@" if version.startswith("sha256:") else ":"
    try:
        return Ref.parse(f"{name}{sep}{version}")
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def parse_os_alias(text: str) -> tuple[str, str]:
    """``rocky8.5=centos8``: nodes on the left are served the image built for the right."""
    left, sep, right = text.partition("=")
    if not sep or not left.strip() or not right.strip():
        raise InputError(f"--os-alias {text!r}: expected NODE_OS=IMAGE_OS, e.g. rocky8.5=centos8")
    for part in (left, right):
        split_os(part, f"--os-alias {text!r}")
    return left.strip().lower(), right.strip().lower()


def _str_setting(values: dict[str, Any], path: str, source: str = "values") -> str | None:
    value = dig(values, path)
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list, bool)):
        raise InputError(f"{source}: {path} must be a string, got {type(value).__name__}")
    return str(value)


def _enabled(comp: Component, values: dict[str, Any]) -> tuple[bool, str]:
    off = [c for c in comp.when if not c.holds(dig(values, c.path, c.default))]
    if not off:
        return True, ""
    c = off[0]
    shown = dig(values, c.path, c.default)
    want = f"== {c.equals}" if c.equals else "true"
    return False, f"{c.path}={shown!s} (needs {want})"


class _Resolver:
    def __init__(self, req: PlanRequest) -> None:
        self.req = req
        self.il = req.image_list
        self.values = chart_values(req.values or {})
        self.entries: OrderedDict[tuple[str, str | None], _Entry] = OrderedDict()
        self.node_needs: list[NodeNeed] = []
        self.warnings: list[str] = []
        self.release = self.il.release if self.il else None
        self.precompiled = bool(req.precompiled) if req.precompiled is not None else \
            bool(dig(self.values, "driver.usePrecompiled", False))

    def setting(self, path: str) -> str | None:
        return _str_setting(self.values, path, self.req.values_source)

    def add(self, source: Ref, component: str, reason: str, dest_tag: str | None = None,
            **extra: Any) -> None:
        key = (str(source), dest_tag)
        if key in self.entries:
            entry = self.entries[key]
            if component not in entry.components:
                entry.components.append(component)
            return
        self.entries[key] = _Entry(source, dest_tag, [component], reason, **extra)

    # -- release components -------------------------------------------------
    def components(self) -> None:
        assert self.il is not None
        for comp in self.il.components:
            enabled, why_off = _enabled(comp, self.values)
            if enabled:
                reason = "enabled"
            elif comp.prefetch:
                reason = f"listed by the {self.il.flavor} offline guide, off by default ({why_off})"
            elif self.req.components == "all":
                reason = f"--components all; off with these values ({why_off})"
            else:
                continue
            if self.req.nvidiadrivers and comp.os_tag:
                # ClusterPolicy and NVIDIADriver management are exclusive: the CRs name the drivers
                continue
            self.component(comp, reason)

    def component(self, comp: Component, reason: str) -> None:
        where = f"values {comp.path}"
        node = dig(self.values, comp.path)
        if node is not None and not isinstance(node, dict):
            raise InputError(f"{self.req.values_source}: {comp.path} must be a mapping, got "
                             f"{type(node).__name__}")
        repo = self.setting(f"{comp.path}.repository") or comp.repository
        image = comp.image
        if image is not None:
            image = self.setting(f"{comp.path}.image") or image
        version = self.setting(f"{comp.path}.{comp.version_key}") or comp.version
        if comp.path == "driver":
            version = self.req.driver_version or version
        if not repo or not version:
            msg = (f"{comp.path}: repository and version must be set in values before it can be "
                   f"mirrored{'; ' + comp.note if comp.note else ''}")
            if reason == "enabled":
                raise InputError(msg)
            self.warnings.append(f"skipped {msg}")
            return
        if comp.os_tag:
            self.os_tagged(comp, repo, image, version, reason, where)
            return
        self.add(image_ref(repo, image, version, where), comp.path,
                 f"{comp.path} ({reason})", setting=version)

    def node_groups(self, comp: Component | str, by_kernel: bool,
                    nodes: list[Node] | None = None) -> list[tuple[str, str, str | None]]:
        """Distinct (operator's osTag, source osTag, kernel) among the GPU nodes (or ``nodes``)."""
        what = comp if isinstance(comp, str) else comp.path
        if not self.req.nodes:
            raise InputError(f"{what} gets the node's OS tag appended: give the GPU nodes with "
                             "--node OS/KERNEL[/ARCH] or --nodes-json FILE")
        groups: OrderedDict[tuple[str, str, str | None], None] = OrderedDict()
        for node in self.req.nodes if nodes is None else nodes:
            tag = os_tag(self.release, node.os_id, node.os_version)
            alias = self.req.os_aliases.get(node.os) or self.req.os_aliases.get(tag)
            src = tag
            if alias:
                a_id, a_version = split_os(alias, "--os-alias")
                src = os_tag(self.release, a_id, a_version)
            if by_kernel and not node.kernel:
                raise InputError(f"precompiled drivers are per kernel: node {node.describe()} has "
                                 "no kernel version (give --node OS/KERNEL)")
            groups[(tag, src, node.kernel if by_kernel else None)] = None
        return list(groups)

    def warn_mixed_os(self, comp: Component, groups: list[tuple[str, str, str | None]]) -> None:
        tags = sorted({g[0] for g in groups})
        crd = bool(dig(self.values, "driver.nvidiaDriverCRD.enabled", False))
        if len(tags) > 1 and not crd and comp.path == "driver":
            self.warnings.append(
                f"GPU nodes run {len(tags)} OS versions ({', '.join(tags)}): the operator's "
                "ClusterPolicy uses the first GPU node's OS tag for every node; all are planned, "
                "but mixed OS clusters need driver.nvidiaDriverCRD.enabled=true with one "
                "NVIDIADriver per node pool")

    def os_tagged(self, comp: Component, repo: str, image: str | None, version: str,
                  reason: str, where: str) -> None:
        if version.startswith("sha256:"):
            # a digest names one image for every node: nothing to append
            self.add(image_ref(repo, image, version, where), comp.path,
                     f"{comp.path} pinned by digest ({reason})", setting=version)
            return
        precompiled = comp.path == "driver" and self.precompiled
        if precompiled and not supports_precompiled(self.release):
            raise InputError(f"GPU Operator {self.release} has no precompiled drivers (they arrived "
                             f"in {PRECOMPILED_SINCE}); drop --precompiled / driver.usePrecompiled")
        if precompiled:
            # precompiled images are per branch: an explicit version is used as the user wrote it
            explicit = self.req.driver_version or self.setting("driver.version")
            version = self.req.driver_branch or explicit or version.split(".")[0]
        groups = self.node_groups(comp, by_kernel=precompiled)
        self.warn_mixed_os(comp, groups)
        if comp.path == "driver" and not precompiled:
            self.compiled_nodes(self.req.nodes, repo, image, version, where)
        for tag, src_tag, kernel in groups:
            base = f"{version}-{kernel}" if precompiled else version
            src = image_ref(repo, image, f"{base}-{src_tag}", where)
            dest_tag = f"{base}-{tag}" if src_tag != tag else None
            what = "precompiled driver" if precompiled else comp.path
            why = f"{what} for kernel {kernel} on {tag}" if precompiled else f"{what} for {tag}"
            if dest_tag:
                why += f", served from the {src_tag} image (--os-alias)"
            if reason != "enabled":
                why += f" ({reason})"
            self.add(src, comp.path, why, dest_tag=dest_tag, setting=version, os_tag=tag,
                     kernel=kernel)

    def compiled_nodes(self, nodes: list[Node], repo: str, image: str | None, version: str, where: str) -> None:
        """Record nodes whose driver compiles at run time: their packages go into the plan."""
        for node in nodes:
            tag = os_tag(self.release, node.os_id, node.os_version)
            alias = self.req.os_aliases.get(node.os) or self.req.os_aliases.get(tag)
            img_id, img_version = split_os(alias, "--os-alias") if alias else (node.os_id, node.os_version)
            src_version = version if version.startswith("sha256:") else \
                f"{version}-{os_tag(self.release, img_id, img_version)}"
            ref = image_ref(repo, image, src_version, where)
            self.node_needs.append(NodeNeed(node.os, img_id, img_version, node.kernel, node.arch, node.name,
                                            str(ref)))

    def check_platforms(self) -> None:
        """A --platform list without a GPU node's architecture gives a bundle that node cannot run."""
        if not self.req.platforms:
            return
        archs = {p.split("/")[1] for p in self.req.platforms}
        missing = [n for n in self.req.nodes if n.arch not in archs]
        if not missing:
            return
        shown = ", ".join(f"{n.describe()}" for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
        msg = (f"--platform {', '.join(self.req.platforms)} leaves out the architecture of GPU node(s) "
               f"{shown}: add --platform linux/{missing[0].arch}")
        if not self.req.force:
            raise InputError(msg + " (or --force to plan anyway)")
        self.warnings.append(msg + " (--force: planned anyway; those nodes will not find their images)")

    # -- NVIDIADriver custom resources ------------------------------------------
    def nvidiadrivers(self) -> None:
        crs = self.req.nvidiadrivers
        chosen: dict[Node, list[str]] = {n: [] for n in self.req.nodes}
        for cr in crs:
            nodes = [n for n in self.req.nodes if n.selected_by(cr.node_selector)]
            for n in nodes:
                chosen[n].append(cr.name)
            if not nodes and self.req.nodes:
                self.warnings.append(f"{cr.where}: its nodeSelector selects no GPU node; nothing planned for it")
                continue
            self.nvidiadriver(cr, nodes)
        for node, names in chosen.items():
            if node.labels is None:
                continue             # --node: no labels to select by, every CR is planned for it
            if not names:
                self.warnings.append(f"GPU node {node.describe()} is selected by no NVIDIADriver: it gets no driver")
            elif len(names) > 1:
                self.warnings.append(f"GPU node {node.describe()} is selected by {len(names)} NVIDIADrivers "
                                     f"({', '.join(names)}): the operator refuses overlapping node selectors")

    def nvidiadriver(self, cr: NVIDIADriver, nodes: list[Node]) -> None:
        from mirrorkit.resolve.nvidiadriver import ImageSpec

        base = f"nvidiadriver/{cr.name}"
        images: list[tuple[str, ImageSpec, bool]] = [(base, cr.driver, True)]
        images += [(f"{base}/{part}", cr.parts[part], tagged) for part, tagged in PARTS if part in cr.parts]
        for component, spec, tagged in images:
            where = f"{cr.where}: {component}"
            repo, image = (spec.repository, spec.image) if spec.repository else (spec.image, None)
            if not tagged or spec.version.startswith("sha256:"):
                self.add(image_ref(repo, image, spec.version, where), component,
                         f"{component} ({cr.driver_type})", setting=spec.version)
                continue
            self.per_node(component, repo, image, spec.version, cr.use_precompiled and component == base,
                          nodes, where, f"NVIDIADriver {cr.name}")

    def per_node(self, component: str, repo: str, image: str | None, version: str, precompiled: bool,
                 nodes: list[Node], where: str, owner: str) -> None:
        """A driver-type image of a CR or ClusterPolicy: one tag per OS (and kernel) among ``nodes``."""
        if precompiled and not supports_precompiled(self.release):
            raise InputError(f"{where}: GPU Operator {self.release} has no precompiled drivers")
        if not precompiled and component.rsplit("/", 1)[-1] not in ("gds", "gdrcopy"):
            self.compiled_nodes(nodes, repo, image, version, where)
        for tag, src_tag, kernel in self.node_groups(component, precompiled, nodes):
            head = f"{version}-{kernel}" if precompiled else version
            what = "precompiled driver" if precompiled else component.rsplit("/", 1)[-1]
            why = f"{owner}: {what} for {f'kernel {kernel} on ' if precompiled else ''}{tag}"
            dest_tag = f"{head}-{tag}" if src_tag != tag else None
            if dest_tag:
                why += f", served from the {src_tag} image (--os-alias)"
            self.add(image_ref(repo, image, f"{head}-{src_tag}", where), component, why,
                     dest_tag=dest_tag, setting=version, os_tag=tag, kernel=kernel)

    def manifest_drivers(self) -> None:
        """ClusterPolicy driver-type specs read from --manifests: per GPU node, like the operator."""
        for item in self.req.manifest_os_tagged:
            if not self.req.nodes:
                self.warnings.append(f"{item.where}: {item.component} gets each GPU node's OS tag appended: "
                                     "give --node or --nodes-json to plan it")
                continue
            repo, image = (item.repository, item.image) if item.repository else (item.image, None)
            self.per_node(item.component, repo, image, item.version, item.precompiled, self.req.nodes,
                          item.where, item.component.rsplit("/", 1)[0])

    # -- extras ---------------------------------------------------------------
    def extras(self) -> None:
        if self.il and self.req.include_sample:
            for extra in self.il.extras:
                self.add(Ref.parse(extra.ref), extra.name, extra.reason)
        for ref, component, reason in self.req.manifest_images:
            self.add(Ref.parse(ref), component, reason)
        for ref, reason in self.req.extras:
            self.add(Ref.parse(ref) if isinstance(ref, str) else ref, "extra", reason)

    # -- plan -----------------------------------------------------------------
    def plan(self) -> Plan:
        if self.req.components not in COMPONENT_MODES:
            raise InputError(f"--components {self.req.components!r}: choose enabled or all")
        if self.req.mapping not in STRATEGIES:
            raise InputError(f"--mapping {self.req.mapping!r}: choose one of {', '.join(STRATEGIES)}")
        self.check_platforms()
        if self.il:
            self.components()
        if self.req.nvidiadrivers:
            self.nvidiadrivers()
        self.manifest_drivers()
        self.extras()
        if not self.entries:
            raise InputError("nothing to plan: give --version (or --chart), --image, --image-list or --manifests")
        images = []
        pairs = []
        for e in self.entries.values():
            dest = None
            if self.req.registry:
                dest_ref = map_ref(e.source, self.req.registry, self.req.mapping, e.dest_tag,
                                   self.req.max_path_depth)
                pairs.append((e.source, dest_ref))
                dest = str(dest_ref)
            images.append(PlanImage(
                source=str(e.source), destination=dest, component=",".join(e.components),
                reason=e.reason, setting=e.setting, os_tag=e.os_tag, kernel=e.kernel,
                target_tag=e.dest_tag,
            ))
        check_collisions(pairs)
        check_depth_collisions(pairs, self.req.max_path_depth)
        packages: list[dict[str, Any]] = []
        if self.req.driver_packages and self.node_needs:
            planned = plan_needs(self.node_needs)
            packages = [need_to_dict(n) for n in planned.needs]
            self.warnings.extend(planned.warnings)
        driver: dict[str, Any] = {}
        if self.il and any(i.component.split(",")[0] == "driver" for i in images):
            driver = {"precompiled": self.precompiled,
                      "version": next(i.setting for i in images if i.component.startswith("driver"))}
        return Plan(
            images=images,
            release=self.release,
            flavor=self.il.flavor if self.il else None,
            registry=str(self.req.registry) if self.req.registry else None,
            mapping=self.req.mapping,
            max_path_depth=self.req.max_path_depth,
            platforms=list(self.req.platforms),
            nodes=[{"name": n.name, "os": n.os, "kernel": n.kernel, "arch": n.arch}
                   for n in self.req.nodes],
            driver=driver,
            components=self.req.components,
            created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            generator=f"mirrorkit {__version__}",
            warnings=self.warnings,
            nvidiadrivers=[cr.doc for cr in self.req.nvidiadrivers],
            packages=packages,
        )


def resolve(req: PlanRequest) -> Plan:
    return _Resolver(req).plan()
