"""rewrite-config and runbook: the configuration and steps that make the cluster pull from the mirror."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mirrorkit.destinations import UPSTREAM_CHART as DEFAULT_CHART
from mirrorkit.errors import InputError
from mirrorkit.mapping import STRATEGIES

FORMATS = ("helm", "kubesphere", "set-flags", "containerd", "registries-conf", "nvidiadriver", "idms",
           "kyverno", "containers-policy", "pull-secret")


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
def rewrite_config_command(source: str, fmt: str, output: str | None, registry: str | None, mapping: str | None,
                           values_file: str | None, pin_digests: bool, service_monitor: bool, chart_ref: str,
                           namespace: str, insecure: tuple[str, ...], ca_file: str | None, skip_verify: bool,
                           fallback: str, verify_keys: tuple[str, ...], kyverno_version: str = "1.11",
                           pull_secret: str | None = None, node_certs_dir: str = "/etc/containerd/certs.d",
                           object_name: str | None = None, site_signed: bool = False) -> None:
    """Emit configuration pointing the cluster at the mirrored images."""
    from mirrorkit.cli.main import write_output
    from mirrorkit.rewrite import helm

    plan, lock, dest = _inputs(source, registry, mapping)
    if fmt in ("kyverno", "containers-policy"):  # policies that make the cluster check signatures
        _signature_policy(fmt, plan, lock, dest, verify_keys, output, kyverno_version, object_name, site_signed)
        return
    if fmt == "pull-secret":
        from mirrorkit.files import write_atomic
        from mirrorkit.oci.credentials import CredentialStore
        from mirrorkit.rewrite.pullsecret import pull_secret as secret_text

        if not pull_secret:
            raise InputError("--format pull-secret needs --pull-secret NAME (the Secret's name)")
        text = secret_text(pull_secret, namespace, sorted({d.registry for d in dest.values()}), CredentialStore())
        if output is None or output == "-":
            click.echo(text, nl=False)
        else:
            write_atomic(Path(output), text, "pull secret", mode=0o600)
        return
    if fmt == "containerd":
        from mirrorkit.rewrite.containerd import containerd_hosts, node_ca, write_containerd_dir

        hosts = {d.registry for d in dest.values()}
        scheme = "http" if hosts & set(insecure) and not skip_verify else "https"
        if not Path(node_certs_dir).is_absolute():
            raise InputError(f"--node-certs-dir {node_certs_dir}: must be an absolute path on the nodes")
        ca_path, ca_files = node_ca(ca_file, sorted(hosts), node_certs_dir) if ca_file else (None, {})
        files = containerd_hosts(plan, dest, scheme=scheme, ca=ca_path, skip_verify=skip_verify, fallback=fallback)
        written = write_containerd_dir(Path(output or "certs.d"), {**files, **ca_files})
        click.echo("wrote " + ", ".join(str(p) for p in written), err=True)
        redirected = sorted(f.split("/")[0] for f in files)
        click.echo(f"note: every pull from {', '.join(redirected)} goes to the mirror, not only the planned "
                   f"images; copy these folders into {node_certs_dir}/ without overwriting a site's own hosts.toml",
                   err=True)
        return
    if fmt == "registries-conf":
        from mirrorkit.rewrite.registries_conf import ca_note, registries_conf

        ca_lines = ca_note(ca_file, sorted({d.registry for d in dest.values()})) if ca_file else []
        write_output(registries_conf(plan, dest, insecure=set(insecure), notes=ca_lines), output)
        for line in ca_lines:
            click.echo(f"note: {line}", err=True)
        return
    if fmt == "nvidiadriver":
        from mirrorkit.rewrite.nvidiadriver import nvidiadriver_crs

        text, notes = nvidiadriver_crs(plan, dest, pull_secret)
        write_output(text, output)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        return
    if fmt == "idms":
        from mirrorkit.rewrite.idms import mirror_sets

        text, notes = mirror_sets(plan, dest, {i.source: i.digest for i in lock.images} if lock else None,
                                  object_name)
        write_output(text, output)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        return
    if plan.release is None and fmt in ("helm", "kubesphere", "set-flags"):
        raise InputError(f"{source}: this plan has no GPU Operator release; --format {fmt} needs one "
                         "(containerd and registries-conf work for any image set)")
    digests = {i.source: i.digest for i in lock.images} if lock else None
    overlay = helm.image_overlay(plan, dest, digests, pin_digests, service_monitor)
    if pull_secret:
        from mirrorkit.rewrite.pullsecret import secret_values

        secret_values(overlay.values, pull_secret)
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


def _signature_policy(fmt: str, plan: Any, lock: Any, dest: dict, verify_keys: tuple[str, ...],
                      output: str | None, kyverno_version: str = "1.11", name: str | None = None,
                      site_signed: bool = False) -> None:
    from mirrorkit.cli.main import write_output
    from mirrorkit.refs import Ref
    from mirrorkit.trust.keys import load_keys

    if not verify_keys:
        raise InputError(f"--format {fmt} needs --verify-key KEY.pub: the key the cluster checks signatures with")
    keys = load_keys(verify_keys)
    from mirrorkit.rewrite.admission import refusal, unsignable

    blocked = unsignable(plan, lock)
    if blocked and not site_signed:
        raise InputError(refusal(fmt, blocked))
    if blocked and len(keys) < 2:
        raise InputError(f"--site-signed: give the site's public key as one more --verify-key (it signed "
                         f"{len(blocked)} rewritten index(es); the publisher's key cannot admit them)")
    if fmt == "kyverno":
        from mirrorkit.rewrite.idms import check_name
        from mirrorkit.rewrite.kyverno import kyverno_policy, repositories

        write_output(kyverno_policy(plan, dest, keys, kyverno_version, check_name(name) if name else None), output)
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
                       volumes=volumes_of(bundle_volumes(source)), charts=lock_charts(lock) if lock else [])
    if upgrade_from:
        from mirrorkit.rewrite.runbook import upgrade_markdown, upgrade_shell
        from mirrorkit.rewrite.upgrade import upgrade_input

        up = upgrade_input(inp, lock, upgrade_from)
        write_output(upgrade_markdown(up) if fmt == "markdown" else upgrade_shell(up), output)
        return
    write_output(markdown(inp) if fmt == "markdown" else shell(inp), output)
