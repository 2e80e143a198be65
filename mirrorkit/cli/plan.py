"""``mirrorkit plan``: what exactly must cross the air gap for this release on these nodes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import click

from mirrorkit.cli.common import endpoint_options
from mirrorkit.errors import InputError
from mirrorkit.mapping import STRATEGIES
from mirrorkit.plan import FLAVORS, FORMATS, Plan, attach_local, render, split_image_arg

EPILOG = """
\b
Examples:
  # seed 000's cluster: Ubuntu 22.04, kernel 5.15.0-131-generic, precompiled 550
  mirrorkit plan --version v23.9.2 --node ubuntu22.04/5.15.0-131-generic \\
      --driver-branch 550 --precompiled --registry harbor.example.com/gpu -o plan.yaml
\b
  # the GPU nodes as the cluster reports them, the KubeSphere extension, a plain list
  kubectl get nodes -o json > nodes.json
  mirrorkit plan --version v23.9.2 --flavor kubesphere --nodes-json nodes.json --format txt
\b
  # Rocky Linux nodes served the CentOS 8 driver image (seed 003)
  mirrorkit plan --version v1.9.0 --node rocky8.5/4.18.0-348.el8.x86_64 --os-alias rocky8.5=centos8
\b
  # one driver per node pool (NVIDIADriver CRs), nodes with their labels
  mirrorkit plan --version v24.9.2 --nodes-json nodes.json --nvidiadriver pools.yaml --registry harbor.example.com/gpu
\b
  # any chart, through its rendered manifests
  helm template my-app ./chart | mirrorkit plan --manifests - --registry harbor.example.com/apps
\b
  # any image set, no GPU Operator at all, digests looked up
  mirrorkit plan --image-list images.txt --registry registry.local:5000 --resolve
"""


def _nodes(specs: tuple[str, ...], nodes_json: str | None) -> tuple[list[Any], list[str]]:
    from mirrorkit.resolve.nodes import load_nodes_json, parse_node_spec

    nodes = [parse_node_spec(s) for s in specs]
    warnings: list[str] = []
    if nodes_json:
        more, warnings = load_nodes_json(nodes_json)
        nodes.extend(more)
    return nodes, warnings


def _summary(plan: Plan) -> str:
    """Images per component, drivers per node group, total size: what a human checks first."""
    head = f"planned {len(plan.images)} images"
    if plan.release:
        head += f" for GPU Operator {plan.release} ({plan.flavor})"
    if plan.nodes:
        head += f" on {len(plan.nodes)} GPU node{'s' if len(plan.nodes) != 1 else ''}"
    lines = [head]
    per = Counter(i.groups[0] for i in plan.images)
    width = max(len(k) for k in per)
    for name, count in sorted(per.items()):
        tags = [i.source.rsplit(":", 1)[-1] for i in plan.images if i.groups[0] == name]
        shown = ", ".join(tags[:3]) + (f", ... ({count})" if count > 3 else "")
        lines.append(f"  {name.ljust(width)}  {shown}")
    for img in plan.images:
        if img.os_tag and img.component.split(",")[0] in ("driver", "gds", "gdrcopy", "vgpuManager"):
            lines.append(f"  node group {img.os_tag}{'/' + img.kernel if img.kernel else ''}: {img.reason}")
    if plan.resolved:
        total = sum(i.size or 0 for i in plan.images)
        lines.append(f"  total size: {total / 1e6:.1f} MB (sum per image, before blob sharing)")
    lines.extend(f"warning: {w}" for w in plan.warnings)
    return "\n".join(lines)


@click.command("plan", epilog=EPILOG)
@click.option("-c", "--config", type=click.Path(dir_okay=False), help="Settings file (kind: PlanConfig); flags override it.")
@click.option("--version", "version", help="GPU Operator release, e.g. v23.9.2 (see 'mirrorkit releases').")
@click.option("--flavor", type=click.Choice(FLAVORS), default="helm", show_default=True,
              help="helm: the nvidia/gpu-operator chart; kubesphere: the KubeSphere Marketplace extension.")
@click.option("--chart", type=click.Path(),
              help="Take the release's images from this chart: .tgz, directory, oci://REG/REPO/CHART:VERSION or "
                   "HELM_REPO_URL/CHART:VERSION.")
@click.option("--node", multiple=True, metavar="OS/KERNEL[/ARCH]", help="A GPU node, e.g. ubuntu22.04/5.15.0-131-generic (repeatable).")
@click.option("--nodes-json", type=click.Path(dir_okay=False), help="Output of 'kubectl get nodes -o json'; only GPU nodes count.")
@click.option("--nvidiadriver", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="NVIDIADriver custom resources, one driver per node pool (repeatable; several documents per file).")
@click.option("--driver-branch", help="Driver branch for precompiled drivers, e.g. 550.")
@click.option("--driver-version", help="Override the driver version (without OS suffix).")
@click.option("--precompiled/--no-precompiled", default=None, help="Precompiled drivers, one per kernel (default: driver.usePrecompiled from values).")
@click.option("--driver-packages/--no-driver-packages", default=True, show_default=True,
              help="List the kernel packages each runtime-compiled node's driver installs (plan's packages:).")
@click.option("--os-alias", multiple=True, metavar="NODE_OS=IMAGE_OS", help="Serve nodes of NODE_OS the driver built for IMAGE_OS, e.g. rocky8.5=centos8.")
@click.option("--values", type=click.Path(dir_okay=False), help="Your Helm values, or a KubeSphere extension config.")
@click.option("--components", type=click.Choice(("enabled", "all")), default="enabled", show_default=True,
              help="enabled: what these values deploy; all: every image of the release.")
@click.option("--image", multiple=True, metavar="REF", help="An extra image (repeatable).")
@click.option("--image-list", multiple=True, type=click.Path(dir_okay=False), help="Extra images, one per line or YAML (repeatable).")
@click.option("--manifests", multiple=True, metavar="FILE|-",
              help="Kubernetes YAML ('helm template' output); every image it names is planned (repeatable).")
@click.option("--sample/--no-sample", default=True, help="Include the release's validation workload image.")
@click.option("--registry", metavar="HOST[:PORT][/PREFIX]", help="Private registry the images will be mirrored to.")
@click.option("--mapping", type=click.Choice(STRATEGIES), default="prefix", show_default=True, help="How source paths map under the registry.")
@click.option("--max-path-depth", type=int, metavar="N",
              help="Cap destination paths at N segments, prefix included; the excess is joined with '-' "
                   "(Quay: 2). Recorded in the plan.")
@click.option("--resolve", is_flag=True, help="Look up each image's digest, platforms and size.")
@click.option("--platform", multiple=True, metavar="OS/ARCH", help="Restrict copies to these platforms (repeatable).")
@click.option("--force", is_flag=True, help="Plan even when --platform leaves out a GPU node's architecture.")
@endpoint_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="yaml", show_default=True)
@click.option("-o", "--output", help="Write the plan here (default: stdout).")
@click.pass_context
def command(ctx: click.Context, **params: Any) -> None:
    """Resolve the images a GPU Operator release needs on these nodes into a plan."""
    from mirrorkit.cli.common import apply_config, endpoints_from
    from mirrorkit.cli.main import write_output
    from mirrorkit.config import load_plan_config

    p = apply_config(ctx, load_plan_config, params)
    endpoints = endpoints_from(p)
    if p.get("chart"):
        p["chart_archive"] = _remote_chart(str(p["chart"]), endpoints)
    plan = build_plan(p)
    if p["resolve"]:
        from mirrorkit.cli.common import retry_from, warn_unused_endpoints
        from mirrorkit.oci.client import RegistryClient
        from mirrorkit.resolve.lookup import resolve_plan

        warn_unused_endpoints(endpoints, {i.source_ref.registry.lower() for i in plan.images})
        with RegistryClient(endpoints, retry=retry_from(p)) as client:
            resolve_plan(plan, endpoints, client=client)
    write_output(render(plan, p["fmt"]), p["output"])
    click.echo(_summary(plan), err=True)


def _remote_chart(text: str, endpoints: Any) -> bytes | None:
    """``--chart oci://…`` or ``--chart URL/CHART:VERSION``: the archive, digest checked; None for a local chart."""
    from mirrorkit.chartref import parse_chart_ref

    spec = parse_chart_ref(text)
    if not spec.remote:
        return None
    import tempfile
    from pathlib import Path

    from mirrorkit.oci.client import RegistryClient
    from mirrorkit.oci.httpfile import HttpFiles
    from mirrorkit.transfer.remotecharts import fetch_chart_archive

    with RegistryClient(endpoints) as client, HttpFiles(endpoints, client.credentials, client.retry) as files, \
            tempfile.TemporaryDirectory(prefix="mirrorkit-chart-") as work:
        return fetch_chart_archive(spec, client, files, Path(work))


def build_plan(p: dict[str, Any]) -> Plan:
    """Options (flags and config merged) -> Plan, without the network."""
    from mirrorkit.refs import Ref, RegistryTarget
    from mirrorkit.resolve import catalog
    from mirrorkit.resolve.chart import image_list_from_chart
    from mirrorkit.resolve.imagelist import load_image_list
    from mirrorkit.resolve.manifests import load_manifests
    from mirrorkit.resolve.nvidiadriver import load_nvidiadrivers
    from mirrorkit.resolve.resolver import PlanRequest, parse_os_alias, resolve
    from mirrorkit.yamlio import load_mapping

    image_list = None
    warnings: list[str] = []
    if p.get("chart"):
        image_list, warnings = image_list_from_chart(p["chart"], p["flavor"], p.get("version"),
                                                     archive=p.get("chart_archive"))
    elif p.get("version"):
        image_list = catalog.load_release(p["version"], p["flavor"])
    elif p["flavor"] != "helm":
        raise InputError("--flavor needs --version (or --chart)")
    nodes, node_warnings = _nodes(tuple(p.get("node") or ()), p.get("nodes_json"))
    extras: list[tuple[str, str]] = []
    local: dict[str, str] = {}          # image name -> local source (docker-archive:FILE=NAME and the like)
    given = [(ref, "--image", "--image") for ref in p.get("image") or ()]
    given += [(ref, reason, str(path)) for path in p.get("image_list") or () for ref, reason in load_image_list(path)]
    for text, reason, where in given:
        name, source = split_image_arg(text, where)
        extras.append((name, reason if source is None else f"{reason} (from {source})"))
        if source is not None:
            local[str(Ref.parse(name))] = source
    crs = [cr for path in p.get("nvidiadriver") or () for cr in load_nvidiadrivers(path)]
    manifest_images: list[tuple[str, str, str]] = []
    os_tagged: list[Any] = []
    for path in p.get("manifests") or ():
        found = load_manifests(path)
        manifest_images += found.images
        os_tagged += found.os_tagged
        crs += found.nvidiadrivers
        warnings += found.warnings
    duplicates: list[str] = []
    values = load_mapping(p["values"], "values file", duplicates) if p.get("values") else {}
    req = PlanRequest(
        image_list=image_list,
        nodes=nodes,
        values=values,
        values_source=p.get("values") or "values",
        components=p.get("components") or "enabled",
        driver_branch=_branch(p.get("driver_branch")),
        driver_version=_driver_version(p.get("driver_version")),
        precompiled=p.get("precompiled"),
        os_aliases=_aliases(p.get("os_alias") or (), parse_os_alias),
        extras=extras,
        include_sample=p.get("sample", True),
        registry=RegistryTarget.parse(p["registry"]) if p.get("registry") is not None else None,
        mapping=p.get("mapping") or "prefix",
        platforms=[_platform(x) for x in p.get("platform") or ()],
        max_path_depth=_depth(p.get("max_path_depth")),
        force=bool(p.get("force")),
        nvidiadrivers=crs,
        manifest_images=manifest_images,
        manifest_os_tagged=os_tagged,
        driver_packages=p.get("driver_packages", True) is not False,
    )
    plan = resolve(req)
    attach_local(plan, local)
    plan.warnings[:0] = warnings + node_warnings + duplicates
    return plan


def _depth(value: object) -> int | None:
    """--max-path-depth (or maxPathDepth in -c FILE): a whole number of path segments, at least 1."""
    if value is None:
        return None
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"--max-path-depth {value!r}: expected a number of path segments, at least 1")
    return int(text)


def _branch(value: str | None) -> str | None:
    """A driver branch is a number (550) or a version (550.54); anything else makes a tag that never exists."""
    import re

    if value is not None and not re.fullmatch(r"\d+(\.\d+)*", str(value).strip()):
        raise InputError(f"--driver-branch {value!r}: expected a driver branch such as 550")
    return str(value).strip() if value is not None else None


def _driver_version(value: str | None) -> str | None:
    """The driver tag without its OS suffix (550.54.14): a tag's characters, and never the suffix itself."""
    import re

    if value is None:
        return None
    text = str(value).strip()
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", text):
        raise InputError(f"--driver-version {value!r}: expected a driver version such as 550.54.14 "
                         "(letters, digits, '.', '_' and '-' only)")
    if re.search(r"-(ubuntu|rhel|rocky|ol|sles|centos|amzn|debian)\d", text):
        raise InputError(f"--driver-version {value!r}: give the version without the OS suffix "
                         "(the operator appends it per node)")
    return text


def _aliases(items: Any, parse: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        node_os, image_os = parse(item)
        if out.get(node_os, image_os) != image_os:
            raise InputError(f"--os-alias {node_os}: given twice ({out[node_os]} and {image_os})")
        out[node_os] = image_os
    return out


def _platform(text: str) -> str:
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InputError(f"--platform {text!r}: expected OS/ARCH[/VARIANT], e.g. linux/amd64")
    return "/".join(parts)


@click.command("releases", epilog="""
\b
Examples:
  mirrorkit releases
  mirrorkit releases --flavor kubesphere
""")
@click.option("--flavor", type=click.Choice(FLAVORS), default="helm", show_default=True)
def releases_command(flavor: str) -> None:
    """List the GPU Operator releases mirrorkit ships image lists for."""
    from mirrorkit.resolve import catalog

    for name in catalog.known_releases(flavor):
        click.echo(name)
