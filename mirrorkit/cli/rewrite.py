"""rewrite-config and runbook: the configuration and steps that make the cluster pull from the mirror."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mirrorkit.destinations import UPSTREAM_CHART as DEFAULT_CHART
from mirrorkit.errors import InputError
from mirrorkit.mapping import STRATEGIES

FORMATS = ("helm", "kubesphere", "set-flags", "containerd", "registries-conf", "nvidiadriver", "idms",
           "kyverno", "containers-policy", "driver-repo")


def _inputs(source: str, registry: str | None, mapping: str | None) -> tuple[Any, Any, dict]:
    from mirrorkit.bundle.inputs import load_plan_or_lock
    from mirrorkit.destinations import destination_map
    from mirrorkit.refs import RegistryTarget

    plan, lock = load_plan_or_lock(source)
    target = RegistryTarget.parse(registry) if registry else None
    # every plan image and every lock image: destination_map then names each source the writers look up,
    # or refuses one it cannot place ("has no destination"), so they need not check again
    pairs = [(i.source, i.destination) for i in plan.images]
    pairs = list(dict.fromkeys(pairs + [(i.source, i.destination) for i in (lock.images if lock else [])]))
    return plan, lock, destination_map(plan, pairs, target, mapping)


@click.command("rewrite-config", epilog="""
\b
Examples:
  mirrorkit rewrite-config plan.yaml --format helm -o values-airgap.yaml
  mirrorkit rewrite-config bundles/gpu.tar --format kubesphere --values extension.yaml -o extension.yaml
  mirrorkit rewrite-config plan.yaml --format set-flags
  mirrorkit rewrite-config plan.yaml --format containerd -o certs.d --ca-file /etc/pki/mirror-ca.crt
  mirrorkit rewrite-config plan.yaml --format registries-conf -o /etc/containers/registries.conf.d/mirror.conf
  mirrorkit rewrite-config bundles/gpu.tar --format kyverno --verify-key nvidia.pub -o verify-images.yaml
  mirrorkit rewrite-config bundles/gpu.tar --format containers-policy --verify-key nvidia.pub -o containers-policy
  mirrorkit rewrite-config plan.yaml --format nvidiadriver -o nvidiadrivers.yaml
  mirrorkit rewrite-config bundles/gpu.tar --format idms -o mirror-sets.yaml   # OpenShift
  mirrorkit rewrite-config bundles/gpu.tar --format driver-repo --package-url http://pkgs.local/gpu -o driver-repo.yaml
""")
@click.argument("source", type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("-o", "--output", help="File (a folder for containerd; default certs.d). Default: stdout.")
@click.option("--registry", metavar="HOST[:PORT][/PREFIX]", help="Mirror registry (default: the plan's).")
@click.option("--mapping", type=click.Choice(STRATEGIES), help="Mapping when --registry is given.")
@click.option("--values", "values_file", type=click.Path(dir_okay=False),
              help="Merge into these values (or extension config); every other setting is kept.")
@click.option("--pin-digests", is_flag=True, help="Pin digests where the operator accepts them.")
@click.option("--service-monitor", is_flag=True, help="dcgm-exporter ServiceMonitor (interval 15s, honorLabels).")
@click.option("--chart-ref", default=DEFAULT_CHART, show_default=True,
              help="Chart for set-flags (default: the chart the bundle carried, if any).")
@click.option("--namespace", default="gpu-operator", show_default=True)
@click.option("--insecure", multiple=True, metavar="HOST[:PORT]", help="Mirror reached over plain HTTP.")
@click.option("--ca-file", help="containerd: CA file path on the nodes for the mirror.")
@click.option("--skip-verify", is_flag=True, help="containerd: skip TLS verification of the mirror.")
@click.option("--fallback", type=click.Choice(("mirror", "upstream")), default="mirror", show_default=True,
              help="containerd: what 'server' names; 'mirror' keeps nodes from ever trying the internet.")
@click.option("--verify-key", "verify_keys", multiple=True, metavar="KEY.pub", type=click.Path(dir_okay=False),
              help="kyverno, containers-policy: public key the cluster checks signatures with (repeatable).")
@click.option("--package-url", metavar="URL",
              help="driver-repo (and helm): base URL the far side serves push-bundle --packages-dir at.")
@click.option("--package-ca", type=click.Path(dir_okay=False), metavar="CA.pem",
              help="driver-repo: CA of the package mirror's TLS certificate (certConfig ConfigMap).")
def rewrite_config_command(source: str, fmt: str, output: str | None, registry: str | None, mapping: str | None,
                           values_file: str | None, pin_digests: bool, service_monitor: bool, chart_ref: str,
                           namespace: str, insecure: tuple[str, ...], ca_file: str | None, skip_verify: bool,
                           fallback: str, verify_keys: tuple[str, ...], package_url: str | None = None,
                           package_ca: str | None = None) -> None:
    """Emit configuration pointing the cluster at the mirrored images."""
    from mirrorkit.cli.main import write_output
    from mirrorkit.rewrite import helm

    if fmt == "driver-repo":
        _driver_repo(source, output, registry, mapping, namespace, package_url, package_ca)
        return
    plan, lock, dest = _inputs(source, registry, mapping)
    if fmt in ("kyverno", "containers-policy"):  # policies that make the cluster check signatures
        _signature_policy(fmt, plan, lock, dest, verify_keys, output)
        return
    if fmt == "containerd":
        from mirrorkit.rewrite.containerd import containerd_hosts, write_containerd_dir

        hosts = {d.registry for d in dest.values()}
        scheme = "http" if hosts & set(insecure) and not skip_verify else "https"
        files = containerd_hosts(plan, dest, scheme=scheme, ca=ca_file, skip_verify=skip_verify, fallback=fallback)
        written = write_containerd_dir(Path(output or "certs.d"), files)
        click.echo("wrote " + ", ".join(str(p) for p in written), err=True)
        return
    if fmt == "registries-conf":
        from mirrorkit.rewrite.registries_conf import registries_conf

        write_output(registries_conf(plan, dest, insecure=set(insecure)), output)
        return
    if fmt == "nvidiadriver":
        from mirrorkit.rewrite.nvidiadriver import nvidiadriver_crs

        text, notes = nvidiadriver_crs(plan, dest)
        write_output(text, output)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        return
    if fmt == "idms":
        from mirrorkit.rewrite.idms import mirror_sets

        text, notes = mirror_sets(plan, dest, {i.source: i.digest for i in lock.images} if lock else None)
        write_output(text, output)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        return
    if plan.release is None and fmt in ("helm", "kubesphere", "set-flags"):
        raise InputError(f"{source}: this plan has no GPU Operator release; --format {fmt} needs one "
                         "(containerd and registries-conf work for any image set)")
    digests = {i.source: i.digest for i in lock.images} if lock else None
    overlay = helm.image_overlay(plan, dest, digests, pin_digests, service_monitor)
    if package_url and fmt in ("helm", "kubesphere", "set-flags"):
        from mirrorkit.rewrite.driverrepo import check_url, values_overlay

        check_url(package_url)
        for key, value in values_overlay(package_ca is not None)["driver"].items():
            overlay.values.setdefault("driver", {})[key] = value
    if fmt == "set-flags":
        chart, version = chart_ref, plan.release
        if chart_ref == DEFAULT_CHART and lock is not None:
            from mirrorkit.destinations import operator_chart
            from mirrorkit.lock import lock_charts

            chart, version = operator_chart(lock_charts(lock), registry, plan.release)
        write_output(helm.set_flags(overlay, chart=chart, version=version, namespace=namespace), output)
        for note in overlay.notes:
            click.echo(f"note: {note}", err=True)
        return
    from mirrorkit.rewrite.valuesfile import rewrite_values

    result = rewrite_values(overlay, plan.release, fmt, values_file)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if values_file and not result.kept_layout:
        click.echo(f"note: {values_file} could not be edited in place (flow style, anchors or several "
                   "documents): the merged values are written afresh, without its comments", err=True)
    write_output(result.text, output)
    click.echo(f"{len(result.changed)} keys set" + (f" in {values_file}" if values_file else ""), err=True)
    for key in result.changed if values_file else []:
        click.echo(f"  changed {key}", err=True)
    for note in overlay.notes:
        click.echo(f"note: {note}", err=True)


def _driver_repo(source: str, output: str | None, registry: str | None, mapping: str | None, namespace: str,
                 package_url: str | None, package_ca: str | None) -> None:
    """--format driver-repo: repoConfig/certConfig ConfigMaps, NVIDIADriver CRs, and the Helm values beside."""
    import yaml

    from mirrorkit.bundle.inputs import load_plan_or_lock
    from mirrorkit.cli.main import write_output
    from mirrorkit.rewrite.driverrepo import driver_repo

    if not package_url:
        raise InputError("--format driver-repo needs --package-url URL (where push-bundle --packages-dir is served)")
    ca_pem = None
    if package_ca:
        try:
            ca_pem = Path(package_ca).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--package-ca {package_ca}: cannot read: {exc}") from None
        if "-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise InputError(f"--package-ca {package_ca}: not a PEM certificate")
    plan, lock = load_plan_or_lock(source)
    if lock is None:
        raise InputError(f"{source}: --format driver-repo needs the bundle (or its lock), not a plan")
    image_files, notes = _image_repo_files(source, lock)
    crs = None
    if plan.nvidiadrivers:
        crs = list(plan.nvidiadrivers)
        if plan.registry or registry:
            from mirrorkit.rewrite.nvidiadriver import nvidiadriver_crs

            _, _, dest = _inputs(source, registry, mapping)
            crs = [d for d in yaml.safe_load_all(nvidiadriver_crs(plan, dest)[0]) if isinstance(d, dict)]
    result = driver_repo(lock, package_url, ca_pem, namespace, image_files, crs)
    write_output(result.manifests, output)
    values = yaml.safe_dump(result.values, sort_keys=False)
    if output:
        values_path = Path(output).with_name(Path(output).stem + ".values.yaml")
        write_output(values, str(values_path))
        click.echo(f"wrote {output} ({len(result.keys)} repo files) and the Helm values {values_path}", err=True)
    else:
        click.echo("Helm values:\n" + values, err=True)
    for note in notes + result.notes:
        click.echo(f"note: {note}", err=True)


def _image_repo_files(source: str, lock: Any) -> tuple[dict[str, dict[str, bytes]], list[str]]:
    """Each driver image's default repo files, read from its layers in the bundle."""
    from mirrorkit.packages.imagefs import read_paths
    from mirrorkit.rewrite.driverrepo import DEFAULT_PATTERNS

    images = sorted({str(p.get("driver_image")) for p in lock.plan.packages if p.get("driver_image")})
    if not images:
        return {}, []
    path = Path(source)
    if path.is_file() and path.name.endswith((".yaml", ".yml", ".json")):
        return {}, ["the default repo files of the driver images are read from the bundle: give the bundle, "
                    "not its lock, to replace them"]
    from mirrorkit.bundle.reader import BundleReader

    digests = {i.source: i.digest for i in lock.images}
    arch = {str(p.get("driver_image")): str(p.get("arch") or "amd64") for p in lock.plan.packages}
    out: dict[str, dict[str, bytes]] = {}
    notes: list[str] = []
    with BundleReader([path]) as reader:
        if not reader.random_access:
            return {}, ["compressed bundle: the driver images' default repo files were not read"]
        for image in images:
            if image not in digests:
                notes.append(f"{image}: not in the bundle; its default repo files were not read")
                continue
            manifest = reader.read_small(digests[image])
            out[image] = read_paths(manifest, reader.open_blob, DEFAULT_PATTERNS, arch.get(image, "amd64"),
                                    what=image)
    return out, notes


def _signature_policy(fmt: str, plan: Any, lock: Any, dest: dict, verify_keys: tuple[str, ...],
                      output: str | None) -> None:
    from mirrorkit.cli.main import write_output
    from mirrorkit.refs import Ref
    from mirrorkit.trust.keys import load_keys

    if not verify_keys:
        raise InputError(f"--format {fmt} needs --verify-key KEY.pub: the key the cluster checks signatures with")
    keys = load_keys(verify_keys)
    if fmt == "kyverno":
        from mirrorkit.rewrite.kyverno import kyverno_policy, repositories

        write_output(kyverno_policy(plan, dest, keys), output)
        click.echo(f"ClusterPolicy verifies {len(repositories(dest))} mirrored repositories under "
                   f"{len(keys)} key(s)", err=True)
        return
    from mirrorkit.rewrite.containerd import write_containerd_dir
    from mirrorkit.rewrite.containers_policy import containers_policy_files

    sources = {s: Ref.parse(s) for s in dest}
    written = write_containerd_dir(Path(output or "containers-policy"), containers_policy_files(sources, dest, keys))
    click.echo("wrote " + ", ".join(str(p) for p in written), err=True)


@click.command("runbook", epilog="""
\b
Examples:
  mirrorkit runbook bundles/gpu.tar -o RUNBOOK.md
  mirrorkit runbook bundles/gpu.lock.yaml --format shell -o install.sh
  mirrorkit runbook plan-v24.9.2.yaml --upgrade-from bundles/gpu-v23.9.2.lock.yaml -o UPGRADE.md
""")
@click.argument("source", type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(("markdown", "shell")), default="markdown", show_default=True)
@click.option("-o", "--output", help="Write here (default: stdout).")
@click.option("--registry", metavar="HOST[:PORT][/PREFIX]", help="Mirror registry (default: the plan's).")
@click.option("--mapping", type=click.Choice(STRATEGIES))
@click.option("--namespace", default="gpu-operator", show_default=True)
@click.option("--insecure", multiple=True, metavar="HOST[:PORT]", help="The mirror is plain HTTP: say so in every step.")
@click.option("--ca-cert", help="CA file the steps should trust for the mirror.")
@click.option("--upgrade-from", type=click.Path(exists=True), metavar="PLAN|LOCK|BUNDLE",
              help="Write the upgrade procedure from this installed release instead of a fresh install.")
def runbook_command(source: str, fmt: str, output: str | None, registry: str | None, mapping: str | None,
                    namespace: str, insecure: tuple[str, ...], ca_cert: str | None,
                    upgrade_from: str | None = None) -> None:
    """The offline install runbook, filled in with this plan's real values."""
    from mirrorkit.bundle.volumes import bundle_volumes
    from mirrorkit.cli.main import write_output
    from mirrorkit.lock import lock_charts
    from mirrorkit.rewrite.runbook import RunbookInput, markdown, shell, volumes_of

    plan, lock, dest = _inputs(source, registry, mapping)
    if registry:
        plan.registry = registry
    inp = RunbookInput(plan=plan, dest=dest, source_name=source, namespace=namespace, insecure=insecure,
                       ca_cert=ca_cert,
                       volumes=volumes_of(bundle_volumes(source)), charts=lock_charts(lock) if lock else [])
    if upgrade_from:
        from mirrorkit.rewrite.runbook import upgrade_markdown, upgrade_shell
        from mirrorkit.rewrite.upgrade import upgrade_input

        up = upgrade_input(inp, lock, upgrade_from)
        write_output(upgrade_markdown(up) if fmt == "markdown" else upgrade_shell(up), output)
        return
    write_output(markdown(inp) if fmt == "markdown" else shell(inp), output)
