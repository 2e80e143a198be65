"""diff, prune, report: the commands for a mirror that lives for years."""

from __future__ import annotations

import sys
from typing import Any

import click

from mirrorkit.cli.common import (
    bundle_key_option,
    check_bundle_keys,
    credentials_from,
    destination_options,
    endpoints_from,
    retry_from,
    target_from,
)
from mirrorkit.mapping import STRATEGIES


@click.command("diff", epilog="""
\b
Examples:
  mirrorkit diff plan-v23.9.2.yaml plan-v24.9.2.yaml
  mirrorkit diff bundles/gpu-v23.9.2.lock.yaml bundles/gpu-v24.9.2.tar --format json
  mirrorkit diff old.yaml new.yaml --exit-code || echo "the mirror needs another trip"
""")
@click.argument("old", type=click.Path(exists=True))
@click.argument("new", type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True,
              help="json: {\"added\": [...], \"removed\": [...], \"changed\": [{component, from, to}]}.")
@click.option("--exit-code", is_flag=True, help="Exit 1 when they differ (like git diff --exit-code).")
@click.option("-o", "--output", help="Write here (default: stdout).")
@bundle_key_option
def diff_command(old: str, new: str, fmt: str, exit_code: bool, output: str | None,
                 bundle_keys: tuple[str, ...]) -> None:
    """What was added, removed and changed between two plans, locks or bundles."""
    from mirrorkit.bundle.inputs import load_plan_or_lock
    from mirrorkit.cli.main import write_output
    from mirrorkit.diff import compare, render

    for path in (old, new):          # with --bundle-key both must be signed bundles (or signed locks)
        check_bundle_keys(path, bundle_keys)
    result = compare(load_plan_or_lock(old), load_plan_or_lock(new))
    write_output(render(result, fmt), output)
    if exit_code and result.differs:
        sys.exit(1)


@click.command("prune", epilog="""
\b
Examples:
  mirrorkit prune --registry registry.local:5000/kse --keep plan-v24.9.2.yaml --drop plan-v23.9.2.yaml
  mirrorkit prune --registry registry.local:5000/kse --keep bundles/gpu-v24.9.2.tar \\
      --drop bundles/gpu-v23.9.2.lock.yaml --apply
  mirrorkit prune --registry registry.local:5000/kse --keep new.yaml --drop old.yaml --format json
  kubectl get pods,nvidiadrivers.nvidia.com,clusterpolicies.nvidia.com -A -o yaml > in-use.yaml
  mirrorkit prune --registry registry.local:5000/kse --keep new.yaml --drop old.yaml --in-use in-use.yaml
""")
@click.option("--registry", required=True, metavar="HOST[:PORT][/PREFIX]", help="The private registry to prune.")
@click.option("--keep", multiple=True, type=click.Path(exists=True), metavar="PLAN|LOCK|BUNDLE",
              help="Images that stay, with everything they need (repeatable).")
@click.option("--drop", multiple=True, type=click.Path(exists=True), metavar="PLAN|LOCK|BUNDLE", required=True,
              help="Images to take out (repeatable).")
@click.option("--mapping", type=click.Choice(STRATEGIES), help="Mapping the images were pushed with.")
@click.option("--apply", "apply_", is_flag=True, help="Delete (without it: a dry run that deletes nothing).")
@click.option("--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True)
@click.option("--in-use", "in_use", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="What the cluster runs now (kubectl get pods,nvidiadrivers.nvidia.com,clusterpolicies.nvidia.com "
                   "-A -o yaml): every image it names is kept.")
@destination_options
def prune_command(registry: str, keep: tuple[str, ...], drop: tuple[str, ...], mapping: str | None,
                  apply_: bool, fmt: str, in_use: str | None = None, **p: Any) -> None:
    """Delete the dropped images' tags and manifests that no kept image needs (dry run by default)."""
    from mirrorkit.bundle.inputs import load_plan_or_lock
    from mirrorkit.oci.client import RegistryClient
    from mirrorkit.transfer.prune import Source, apply_prune, plan_prune, render

    p["registry"] = registry
    target = target_from(p)
    assert target is not None

    def load(path: str) -> Source:
        plan, lock = load_plan_or_lock(path)
        return Source(path, plan, lock)

    from mirrorkit.transfer.inuse import load_in_use

    kept, dropped = [load(k) for k in keep], [load(d) for d in drop]
    live = load_in_use(in_use) if in_use else None
    if not keep:
        click.echo("warning: no --keep: nothing but the registry's other tags protects content the dropped "
                   "images share with a release you still run", err=True)
    with RegistryClient(endpoints_from(p), credentials_from(p, target), retry=retry_from(p)) as client:
        result = plan_prune(client, target, kept, dropped, mapping, live)
        if apply_:
            result = apply_prune(client, result)
    click.echo(render(result, fmt), nl=False)


@click.command("report", epilog="""
\b
Examples:
  mirrorkit report bundles/gpu-v24.9.2.tar --bundle-key site.pub --verify-key nvidia.pub -o report.html
  mirrorkit report bundles/gpu-v24.9.2.tar --since bundles/gpu-v23.9.2.lock.yaml -o report.html
  mirrorkit report bundles/gpu-v24.9.2.tar --format markdown -o report.md
  mirrorkit report plan.yaml --format json
""")
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--output", help="Write here (default: stdout).")
@click.option("--format", "fmt", type=click.Choice(("html", "markdown", "json")), default="html",
              show_default=True, help="json gives each image a signature field: verified (checked by this run), "
                                      "present, absent or invalid.")
@click.option("--since", type=click.Path(exists=True), metavar="PLAN|LOCK|BUNDLE",
              help="The previous bundle (or its lock): the report says what is new.")
@click.option("--verify-key", "verify_keys", multiple=True, metavar="KEY.pub", type=click.Path(dir_okay=False),
              help="Check the carried cosign signatures offline under this PEM public key (repeatable); "
                   "exit 1 when an image's signature is missing or invalid (the report is still written).")
@bundle_key_option
def report_command(source: str, output: str | None, fmt: str, since: str | None, verify_keys: tuple[str, ...],
                   bundle_keys: tuple[str, ...]) -> None:
    """The record of what crosses the gap, for whoever approves the media: it states only what it checked."""
    from mirrorkit.cli.main import write_output
    from mirrorkit.errors import OperationError
    from mirrorkit.rewrite.report import make_report, render
    from mirrorkit.trust.keys import load_keys

    keys = load_keys(verify_keys)
    report = make_report(source, since, keys, list(bundle_keys))
    write_output(render(report, fmt), output)
    if report.damaged:
        raise OperationError(f"{source}: bundle damaged: {report.integrity_detail} (the report says so)")
    if keys and report.unverified_images:
        bad = report.unverified_images
        raise OperationError(f"{len(bad)} of {len(report.images)} images lack a valid signature: "
                             + "; ".join(f"{i.source}: {i.signature}" for i in bad))
    click.echo(f"{len(report.images)} images; bundle bytes {report.integrity}; lock signature "
               f"{report.lock_signature.state}", err=True)
