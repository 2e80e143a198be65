"""rewrite-config and runbook: the configuration and steps that make the cluster pull from the mirror."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from mirrorkit.destinations import UPSTREAM_CHART as DEFAULT_CHART
from mirrorkit.errors import InputError
from mirrorkit.mapping import STRATEGIES


def _inputs(source: str, registry: str | None, mapping: str | None,
            images: bool = True) -> tuple[Any, Any, dict]:
    """The plan, lock and destinations; ``images=False`` (driver-repo) needs destinations only where there are some."""
    from mirrorkit.bundle.inputs import load_plan_or_lock
    from mirrorkit.destinations import destination_map
    from mirrorkit.refs import RegistryTarget

    plan, lock = load_plan_or_lock(source)
    if not images and not (registry or plan.registry):
        return plan, lock, {}
    target = RegistryTarget.parse(registry) if registry else None
    # every plan image and every lock image: destination_map then names each source the writers look up,
    # or refuses one it cannot place ("has no destination"), so they need not check again
    pairs = [(i.source, i.destination) for i in plan.images]
    pairs = list(dict.fromkeys(pairs + [(i.source, i.destination) for i in (lock.images if lock else [])]))
    return plan, lock, destination_map(plan, pairs, target, mapping)


@dataclass
class Request:
    """What every writer may use: the command's options and the plan, lock and destinations they name."""

    source: str
    fmt: str
    output: str | None
    registry: str | None
    plan: Any
    lock: Any
    dest: dict
    values_file: str | None
    pin_digests: bool
    service_monitor: bool
    chart_ref: str
    namespace: str
    insecure: tuple[str, ...]
    ca_file: str | None
    skip_verify: bool
    fallback: str
    verify_keys: tuple[str, ...]
    kyverno_version: str = "1.11"
    pull_secret: str | None = None
    node_certs_dir: str = "/etc/containerd/certs.d"
    object_name: str | None = None
    package_url: str | None = None
    package_ca: str | None = None
    site_signed: bool = False

    @property
    def digests(self) -> dict[str, str] | None:
        return {i.source: i.digest for i in self.lock.images} if self.lock else None


def _notes(notes: list[str]) -> None:
    for note in notes:
        click.echo(f"note: {note}", err=True)


def _containerd(req: Request) -> None:
    from mirrorkit.rewrite.containerd import containerd_hosts, node_ca, write_containerd_dir

    hosts = {d.registry for d in req.dest.values()}
    scheme = "http" if hosts & set(req.insecure) and not req.skip_verify else "https"
    if not Path(req.node_certs_dir).is_absolute():
        raise InputError(f"--node-certs-dir {req.node_certs_dir}: must be an absolute path on the nodes")
    ca_path, ca_files = node_ca(req.ca_file, sorted(hosts), req.node_certs_dir) if req.ca_file else (None, {})
    files = containerd_hosts(req.plan, req.dest, scheme=scheme, ca=ca_path, skip_verify=req.skip_verify,
                             fallback=req.fallback)
    written = write_containerd_dir(Path(req.output or "certs.d"), {**files, **ca_files})
    click.echo("wrote " + ", ".join(str(p) for p in written), err=True)
    redirected = sorted(f.split("/")[0] for f in files)
    click.echo(f"note: every pull from {', '.join(redirected)} goes to the mirror, not only the planned "
               f"images; copy these folders into {req.node_certs_dir}/ without overwriting a site's own hosts.toml",
               err=True)


def _pull_secret(req: Request) -> None:
    """An authenticated mirror: the imagePullSecret, from the stored credentials (never from argv)."""
    from mirrorkit.files import write_atomic
    from mirrorkit.oci.credentials import CredentialStore
    from mirrorkit.rewrite.pullsecret import pull_secret as secret_text

    if not req.pull_secret:
        raise InputError("--format pull-secret needs --pull-secret NAME (the Secret's name)")
    text = secret_text(req.pull_secret, req.namespace, sorted({d.registry for d in req.dest.values()}),
                       CredentialStore())
    if req.output is None or req.output == "-":
        click.echo(text, nl=False)
    else:
        write_atomic(Path(req.output), text, "pull secret", mode=0o600)


def _registries_conf(req: Request) -> None:
    from mirrorkit.cli.main import write_output
    from mirrorkit.rewrite.registries_conf import ca_note, registries_conf

    ca_lines = ca_note(req.ca_file, sorted({d.registry for d in req.dest.values()})) if req.ca_file else []
    write_output(registries_conf(req.plan, req.dest, insecure=set(req.insecure), notes=ca_lines), req.output)
    _notes(ca_lines)


def _nvidiadriver(req: Request) -> None:
    from mirrorkit.cli.main import write_output
    from mirrorkit.rewrite.nvidiadriver import nvidiadriver_crs

    text, notes = nvidiadriver_crs(req.plan, req.dest, req.pull_secret)
    write_output(text, req.output)
    _notes(notes)


def _idms(req: Request) -> None:
    from mirrorkit.cli.main import write_output
    from mirrorkit.rewrite.idms import mirror_sets

    text, notes = mirror_sets(req.plan, req.dest, req.digests, req.object_name)
    write_output(text, req.output)
    _notes(notes)


def _overlay(req: Request) -> Any:
    """The chart's image values for the mirror: what helm, kubesphere and set-flags are written from."""
    from mirrorkit.rewrite import helm

    if req.plan.release is None:
        raise InputError(f"{req.source}: this plan has no GPU Operator release; --format {req.fmt} needs one "
                         "(containerd and registries-conf work for any image set)")
    overlay = helm.image_overlay(req.plan, req.dest, req.digests, req.pin_digests, req.service_monitor)
    if req.pull_secret:
        from mirrorkit.rewrite.pullsecret import secret_values

        secret_values(overlay.values, req.pull_secret)
    if req.package_url:     # runtime-compiled drivers: the repoConfig/certConfig that --format driver-repo writes
        from mirrorkit.rewrite.driverrepo import check_url, values_overlay

        check_url(req.package_url)
        for key, value in values_overlay(req.package_ca is not None)["driver"].items():
            overlay.values.setdefault("driver", {})[key] = value
    return overlay


def _set_flags(req: Request) -> None:
    from mirrorkit.cli.main import write_output
    from mirrorkit.rewrite import helm

    overlay = _overlay(req)
    chart, version = req.chart_ref, req.plan.release
    if req.chart_ref == DEFAULT_CHART and req.lock is not None:
        from mirrorkit.destinations import operator_chart
        from mirrorkit.lock import lock_charts

        chart, version = operator_chart(lock_charts(req.lock), req.registry, req.plan.release)
    write_output(helm.set_flags(overlay, chart=chart, version=version, namespace=req.namespace), req.output)
    _notes(overlay.notes)


def _values(req: Request) -> None:
    """helm and kubesphere: the values (or extension config) merged into --values, comments kept."""
    from mirrorkit.cli.main import write_output
    from mirrorkit.rewrite.valuesfile import rewrite_values

    overlay = _overlay(req)
    result = rewrite_values(overlay, req.plan.release, req.fmt, req.values_file)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if req.values_file and not result.kept_layout:
        click.echo(f"note: {req.values_file} could not be edited in place (flow style, anchors or several "
                   "documents): the merged values are written afresh, without its comments", err=True)
    write_output(result.text, req.output)
    click.echo(f"{len(result.changed)} keys set" + (f" in {req.values_file}" if req.values_file else ""), err=True)
    for key in result.changed if req.values_file else []:
        click.echo(f"  changed {key}", err=True)
    _notes(overlay.notes)


def _signature_policy(req: Request) -> None:
    """kyverno and containers-policy: policies that make the cluster check signatures."""
    from mirrorkit.cli.main import write_output
    from mirrorkit.refs import Ref
    from mirrorkit.trust.keys import load_keys

    if not req.verify_keys:
        raise InputError(f"--format {req.fmt} needs --verify-key KEY.pub: the key the cluster checks signatures with")
    keys = load_keys(req.verify_keys)
    from mirrorkit.rewrite.admission import refusal, unsignable

    blocked = unsignable(req.plan, req.lock)
    if blocked and not req.site_signed:
        raise InputError(refusal(req.fmt, blocked))
    if blocked and len(keys) < 2:
        raise InputError(f"--site-signed: give the site's public key as one more --verify-key (it signed "
                         f"{len(blocked)} rewritten index(es); the publisher's key cannot admit them)")
    if req.fmt == "kyverno":
        from mirrorkit.rewrite.idms import check_name
        from mirrorkit.rewrite.kyverno import kyverno_policy, repositories

        name = check_name(req.object_name) if req.object_name else None
        write_output(kyverno_policy(req.plan, req.dest, keys, req.kyverno_version, name), req.output)
        click.echo(f"ClusterPolicy verifies {len(repositories(req.dest))} mirrored repositories under "
                   f"{len(keys)} key(s)", err=True)
        return
    from mirrorkit.rewrite.containerd import write_containerd_dir
    from mirrorkit.rewrite.containers_policy import containers_policy_files

    sources = {s: Ref.parse(s) for s in req.dest}
    written = write_containerd_dir(Path(req.output or "containers-policy"),
                                   containers_policy_files(sources, req.dest, keys))
    click.echo("wrote " + ", ".join(str(p) for p in written), err=True)


def _driver_repo(req: Request) -> None:
    """--format driver-repo: repoConfig/certConfig ConfigMaps, NVIDIADriver CRs, and the Helm values beside."""
    import yaml

    from mirrorkit.cli.main import write_output
    from mirrorkit.rewrite.driverrepo import driver_repo

    source, output, registry, namespace = req.source, req.output, req.registry, req.namespace
    package_url, package_ca = req.package_url, req.package_ca
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
    plan, lock = req.plan, req.lock
    if lock is None:
        raise InputError(f"{source}: --format driver-repo needs the bundle (or its lock), not a plan")
    image_files, notes = _image_repo_files(source, lock)
    crs = None
    if plan.nvidiadrivers:
        crs = list(plan.nvidiadrivers)
        if plan.registry or registry:
            from mirrorkit.rewrite.nvidiadriver import nvidiadriver_crs

            crs = [d for d in yaml.safe_load_all(nvidiadriver_crs(plan, req.dest, req.pull_secret)[0])
                   if isinstance(d, dict)]
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


# --format -> its writer; the order is the one --help lists
WRITERS: dict[str, Callable[[Request], None]] = {
    "helm": _values, "kubesphere": _values, "set-flags": _set_flags, "containerd": _containerd,
    "registries-conf": _registries_conf, "nvidiadriver": _nvidiadriver, "idms": _idms,
    "kyverno": _signature_policy, "containers-policy": _signature_policy, "pull-secret": _pull_secret,
    "driver-repo": _driver_repo,
}
FORMATS = tuple(WRITERS)


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
  mirrorkit rewrite-config bundles/gpu.tar --format pull-secret --pull-secret mirror-pull -o pull-secret.yaml
  mirrorkit rewrite-config bundles/gpu.tar --format kyverno --verify-key nvidia.pub --verify-key site.pub --site-signed
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
@click.option("--ca-file", help="containerd: the mirror's CA; a file here is copied into the output (nodes get "
              "it at /etc/containerd/certs.d/HOST/ca.crt), else an absolute path on the nodes. registries-conf: "
              "says where CRI-O/podman nodes need it.")
@click.option("--skip-verify", is_flag=True, help="containerd: skip TLS verification of the mirror.")
@click.option("--fallback", type=click.Choice(("mirror", "upstream")), default="mirror", show_default=True,
              help="containerd: what 'server' names; 'mirror' keeps nodes from ever trying the internet.")
@click.option("--verify-key", "verify_keys", multiple=True, metavar="KEY.pub", type=click.Path(dir_okay=False),
              help="kyverno, containers-policy: public key the cluster checks signatures with (repeatable).")
@click.option("--site-signed", is_flag=True,
              help="kyverno, containers-policy: push-bundle --site-key signed the indexes --platform rewrote; "
                   "give that key's public half as one more --verify-key.")
@click.option("--kyverno-version", type=click.Choice(("1.11", "1.10")), default="1.11", show_default=True,
              help="kyverno: 1.11 covers 1.11 and later; 1.10 turns the transparency log off the only way it can.")
@click.option("--node-certs-dir", default="/etc/containerd/certs.d", show_default=True, metavar="DIR",
              help="containerd: where these folders go on the nodes (containerd's config_path); the CA path "
                   "hosts.toml names is under it.")
@click.option("--name", "object_name", metavar="NAME",
              help="idms, kyverno: the objects' name (default: after the release, so sets of two releases coexist).")
@click.option("--pull-secret", "pull_secret", metavar="NAME",
              help="An authenticated mirror: helm/kubesphere/set-flags/nvidiadriver values name this imagePullSecret; "
                   "--format pull-secret writes the Secret from your stored credentials (mirrorkit login).")
@click.option("--package-url", metavar="URL",
              help="driver-repo (and helm): base URL the far side serves push-bundle --packages-dir at.")
@click.option("--package-ca", type=click.Path(dir_okay=False), metavar="CA.pem",
              help="driver-repo: CA of the package mirror's TLS certificate (certConfig ConfigMap).")
def rewrite_config_command(source: str, fmt: str, output: str | None, registry: str | None, mapping: str | None,
                           values_file: str | None, pin_digests: bool, service_monitor: bool, chart_ref: str,
                           namespace: str, insecure: tuple[str, ...], ca_file: str | None, skip_verify: bool,
                           fallback: str, verify_keys: tuple[str, ...], kyverno_version: str = "1.11",
                           node_certs_dir: str = "/etc/containerd/certs.d", object_name: str | None = None,
                           pull_secret: str | None = None, package_url: str | None = None,
                           package_ca: str | None = None, site_signed: bool = False) -> None:
    """Emit configuration pointing the cluster at the mirrored images."""
    plan, lock, dest = _inputs(source, registry, mapping, images=fmt != "driver-repo")
    WRITERS[fmt](Request(source, fmt, output, registry, plan, lock, dest, values_file, pin_digests, service_monitor,
                         chart_ref, namespace, insecure, ca_file, skip_verify, fallback, verify_keys,
                         kyverno_version, pull_secret, node_certs_dir, object_name, package_url, package_ca,
                         site_signed))


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
@click.option("--verify-key", "verify_key", default="nvidia.pub", show_default=True, metavar="KEY.pub",
              help="The publisher's cosign public key the printed signature steps use.")
@click.option("--pull-secret", metavar="NAME",
              help="The mirror needs a login: the steps create this imagePullSecret and the values use it.")
def runbook_command(source: str, fmt: str, output: str | None, registry: str | None, mapping: str | None,
                    namespace: str, insecure: tuple[str, ...], ca_cert: str | None,
                    upgrade_from: str | None = None, verify_key: str = "nvidia.pub",
                    pull_secret: str | None = None) -> None:
    """The offline install runbook, filled in with this plan's real values."""
    from mirrorkit.bundle.volumes import bundle_volumes
    from mirrorkit.cli.main import write_output
    from mirrorkit.lock import lock_charts
    from mirrorkit.rewrite.admission import unsignable
    from mirrorkit.rewrite.runbook import RunbookInput, markdown, shell, volumes_of

    plan, lock, dest = _inputs(source, registry, mapping)
    if registry:
        plan.registry = registry
    # --platform rewrote indexes no publisher signed: the printed steps have the site sign them
    site_signed = bool(unsignable(plan, lock))
    inp = RunbookInput(plan=plan, dest=dest, source_name=source, namespace=namespace, insecure=insecure,
                       ca_cert=ca_cert, verify_key=verify_key, pull_secret=pull_secret, site_signed=site_signed,
                       volumes=volumes_of(bundle_volumes(source)), charts=lock_charts(lock) if lock else [],
                       installer=lock.installer if lock else None,
                       package_repos=[f"{r.os}/{r.name}" for r in lock.package_repos] if lock else [])
    if upgrade_from:
        from mirrorkit.rewrite.runbook_upgrade import upgrade_markdown, upgrade_shell
        from mirrorkit.rewrite.upgrade import upgrade_input

        up = upgrade_input(inp, lock, upgrade_from)
        write_output(upgrade_markdown(up) if fmt == "markdown" else upgrade_shell(up), output)
        return
    write_output(markdown(inp) if fmt == "markdown" else shell(inp), output)
